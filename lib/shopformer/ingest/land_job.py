"""Land an Excel workbook (all sheets) as one CSV file in a source's landing folder for --run-date.

For spreadsheet deliveries such as the UCI Online Retail samples: the ingest then reads the folder through
the source mapping like any other landing date. Prints one ``LAND_WORKBOOK {json}`` line.
"""

from __future__ import annotations

from shopformer import cli
from shopformer.ingest.sources import export_workbook, load_mapping, resolve_path


def _land(args: cli.JobArgs) -> None:
    mapping = load_mapping(args.cfg, args.ns.source)
    folder = resolve_path(args.cfg, mapping.path, f"sources.{args.ns.source}.path", args.run_date)
    rows = len(export_workbook(args.ns.input, folder))
    cli.emit("LAND_WORKBOOK", {"source": args.ns.source, "folder": folder, "rows": rows})


def main(argv: list[str] | None = None) -> int:
    """``jobs/land_workbook.py``: one workbook -> one CSV in the source's landing folder."""
    p = cli.parser(__doc__)
    p.add_argument("--source", required=True, help="source mapping name in conf `sources:`")
    p.add_argument("--input", required=True, help="the .xlsx workbook")
    return cli.run_main("land_workbook", p, argv, _land)
