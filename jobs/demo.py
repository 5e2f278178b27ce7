"""The README's demo: every job, in order, on the synthetic shop of the config, in one Python process.

Dates come from ``synthetic.start_date`` and ``synthetic.days``; ``--set`` overrides reach every job.
Progress is one line per step on stderr, every job's result line on stdout, and the logs of the jobs and
Spark in ``{root}/logs/demo.log``. Ends with summarize_tables' readable summary (docs: README "Demo").
"""

from __future__ import annotations

import sys
from pathlib import Path

from shopformer import cli, demo
from shopformer.errors import ShopformerError


def main() -> int:
    p = cli.config_parser(__doc__)
    ns = p.parse_args()
    cfg = cli.load(p, ns)
    try:
        steps = demo.demo_steps(cfg)
    except ShopformerError as exc:
        p.error(str(exc))
    log_path = Path(str(cfg.get("paths.root"))) / "logs" / "demo.log"
    with demo.logs_to_file(log_path) as console:
        cli.configure_logging()
        return demo.run_steps(
            steps, jobs_dir=Path(__file__).parent, conf=ns.conf, sets=ns.set, console=console
        )


if __name__ == "__main__":
    sys.exit(main())
