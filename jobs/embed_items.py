"""Embed item texts from bronze.events into gold.item_embeddings (all-MiniLM-L6-v2, 384-dim, L2-normalized).

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.features.item_text_job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.features.item_text_job"))
