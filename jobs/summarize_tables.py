"""Summarize what the pipeline's tables hold: counts per layer, rejects, sessions, snapshots, latest scores.

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.ops.summary.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.ops.summary"))
