"""Delete users' data from every table that holds user rows (right to be forgotten; docs/operations.md).

``--users`` is a file (one id per line) or a comma-separated list; ``--source`` limits the deletion to one
source's ids (ids are per source), otherwise every source's rows of those ids go. One Delta commit (a MERGE
that deletes, so the commit log does not record the ids) per table that has matching rows, so a rerun
deletes 0 rows. Deleted rows stay in older table versions
(time travel) until VACUUM: ``--vacuum-hours H`` vacuums every user table afterwards, keeping H hours of
history (0 removes the old files now; run it when no other job uses the tables). Raw landing files and
MLflow artifacts are outside its reach (docs/operations.md says what to do). The printed line holds counts
only, never the ids: ``FORGET {"users": n, "source": ..., "deleted": {table: rows}, "total": rows, ...}``.
"""

from __future__ import annotations

from shopformer import cli, forget
from shopformer.spark import build_spark


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--users", required=True, help="a file of user ids (one a line) or id1,id2,...")
    p.add_argument("--source", help="only this source's rows (default: every source)")
    p.add_argument("--vacuum-hours", type=float, help="VACUUM the user tables afterwards, retaining H hours")
    args = cli.parse(p, "forget_users")
    users = forget.parse_users(args.ns.users)
    spark = build_spark(args.cfg, "forget_users")
    deleted = forget.forget(
        spark, args.cfg, users, source=args.ns.source, run_id=args.run_id, vacuum_hours=args.ns.vacuum_hours
    )
    cli.emit(
        "FORGET",
        {
            "users": len(users), "source": args.ns.source, "deleted": deleted,
            "total": sum(deleted.values()), "vacuum_hours": args.ns.vacuum_hours,
        },
    )  # fmt: skip


if __name__ == "__main__":
    cli.run_job(main)
