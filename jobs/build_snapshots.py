"""Build gold.user_snapshots for one as-of date (nightly) or many (training sets) in one pass.

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.features.job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.features.job"))
