"""Generate the synthetic shop: raw REES46-format logs (one folder per landing date) + ground truth.

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.synthetic.job.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.synthetic.job"))
