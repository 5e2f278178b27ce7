"""Weekly table maintenance: OPTIMIZE (compact small files) and VACUUM (keep a week of time travel).

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.ops.maintain.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.ops.maintain"))
