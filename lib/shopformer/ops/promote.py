"""Set the ``champion`` alias of ``train.registered_model``: roll back or forward (docs/operations.md).

``--version N`` makes version N the champion; ``--rollback`` undoes the last promotion: the champion goes
back to the version the ``previous_champion`` alias names (every promotion, the training gate's included,
moves the displaced champion there), so a second ``--rollback`` returns to where the first started. The
next scoring run (``scoring.model_version: champion``) uses the new champion; no table is touched.
Prints ``PROMOTE {"model": ..., "champion": "2", "was": "3"}``; exit 1 names a missing
model, version or alias, a version without its vocabulary tag or whose checkpoint does not load, and changes
nothing.
"""

from __future__ import annotations

import tempfile

import mlflow

from shopformer import cli, registry
from shopformer.model.network import load_checkpoint


def check_promotable(name: str, version: str) -> None:
    """A version may become champion only when it names its vocabulary (nightly snapshots follow the
    champion's) and its checkpoint loads; RegistryError naming what is wrong, before any alias moves."""
    mv = registry.model_version(name, version)
    if not (mv.tags or {}).get(registry.VOCAB_TAG):
        raise registry.RegistryError(
            f"model {name!r} v{version} has no {registry.VOCAB_TAG!r} tag: nightly snapshots could not "
            "follow its vocabulary; not promoted"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _, path = registry.model_checkpoint(name, version, tmp)
            load_checkpoint(path)
        except Exception as exc:
            raise registry.RegistryError(
                f"model {name!r} v{version} does not load ({type(exc).__name__}: {exc}); not promoted"
            ) from exc


def _promote(args: cli.JobArgs) -> None:
    mlflow.set_tracking_uri(str(args.cfg.get("paths.mlflow_tracking_uri")))
    name = args.cfg.settings.train.registered_model
    version = registry.rollback_target(name) if args.ns.rollback else str(args.ns.version)
    check_promotable(name, version)
    old = registry.promote_checked(name, version)
    cli.emit("PROMOTE", {"model": name, "champion": version, "was": old})


def main(argv: list[str] | None = None) -> int:
    """``jobs/promote_model.py``: move the champion alias (roll back or forward)."""
    p = cli.parser(__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version number to make champion")
    which.add_argument("--rollback", action="store_true", help="back to the previous champion")
    return cli.run_main("promote_model", p, argv, _promote, tag="PROMOTE")
