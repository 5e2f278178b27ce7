"""Evaluate the nightly scores into scores.score_quality (docs/scoring.md "Score quality").

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.scoring.quality_job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.scoring.quality_job"))
