"""Embed item texts from bronze.events into gold.item_embeddings (all-MiniLM-L6-v2, 384-dim, L2-normalized).

Text per item = latest title | category | brand. Only items whose text (or the model) changed since the
last run are encoded and MERGEd in; items are never deleted. Items without any text are counted, not
embedded. Events ingested after --run-date are ignored, so a rerun of a date gives the same table.
"""

from __future__ import annotations

from dataclasses import asdict

from shopformer import cli, embeddings
from shopformer.spark import build_spark


def main() -> None:
    args = cli.parse(cli.parser(__doc__), "embed_items")
    spark = build_spark(args.cfg, "embed_items")
    report = embeddings.run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    cli.emit("EMBED_ITEMS", asdict(report))


if __name__ == "__main__":
    cli.run_job(main)
