"""Land an Excel workbook (all sheets) as one CSV file in a source's landing folder for --run-date.

For spreadsheet deliveries such as the UCI Online Retail samples: the ingest then reads the folder through
the source mapping like any other landing date. Prints one ``LAND_WORKBOOK {json}`` line.
"""

from __future__ import annotations

from shopformer import cli
from shopformer.sources import export_workbook, load_mapping, resolve_path


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--source", required=True, help="source mapping name in conf `sources:`")
    p.add_argument("--input", required=True, help="the .xlsx workbook")
    args = cli.parse(p, "land_workbook")
    mapping = load_mapping(args.cfg, args.ns.source)
    folder = resolve_path(args.cfg, mapping.path, f"sources.{args.ns.source}.path", args.run_date)
    rows = len(export_workbook(args.ns.input, folder))
    cli.emit("LAND_WORKBOOK", {"source": args.ns.source, "folder": folder, "rows": rows})


if __name__ == "__main__":
    cli.run_job(main)
