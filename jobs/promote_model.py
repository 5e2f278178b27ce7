"""Set the ``champion`` alias of ``train.registered_model``: roll back or forward (docs/operations.md).

Entry point for spark-submit and Airflow: checks the configuration (a bad value exits 2 before Spark
starts), then runs ``shopformer.ops.promote.main``
(``--help`` lists the options).
"""

import sys

from shopformer import cli

if __name__ == "__main__":
    sys.exit(cli.entry("shopformer.ops.promote"))
