"""Score gold.user_snapshots of --run-date with the registered model into scores.user_scores,

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.scoring.job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.scoring.job"))
