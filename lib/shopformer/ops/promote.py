"""Set the ``champion`` alias of ``train.registered_model``: roll back or forward (docs/operations.md).

``--version N`` makes version N the champion; ``--rollback`` undoes the last promotion: the champion goes
back to the version the ``previous_champion`` alias names (every promotion, the training gate's included,
moves the displaced champion there), so a second ``--rollback`` returns to where the first started. The
next scoring run (``scoring.model_version: champion``) uses the new champion; no table is touched.
Prints ``PROMOTE {"model": ..., "champion": "2", "was": "3"}``; exit 1 names a missing
model, version or alias and changes nothing.
"""

from __future__ import annotations

import mlflow

from shopformer import cli, registry


def _promote(args: cli.JobArgs) -> None:
    mlflow.set_tracking_uri(str(args.cfg.get("paths.mlflow_tracking_uri")))
    name = args.cfg.settings.train.registered_model
    version = registry.rollback_target(name) if args.ns.rollback else str(args.ns.version)
    old = registry.promote_checked(name, version)
    cli.emit("PROMOTE", {"model": name, "champion": version, "was": old})


def main(argv: list[str] | None = None) -> int:
    """``jobs/promote_model.py``: move the champion alias (roll back or forward)."""
    p = cli.parser(__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version number to make champion")
    which.add_argument("--rollback", action="store_true", help="back to the previous champion")
    return cli.run_main("promote_model", p, argv, _promote, tag="PROMOTE")
