"""`rigdeck cloud up/jobs/logs/pull/sync/ssh/finish`: job specs run on a rented GPU or here.

The parsers join the `cloud` group (cli_cloud.py); the actions call the one job path in
core/cloud/jobs/runner.py. Exit codes as for the rest of `cloud`: 0 ok, 1 refused (a "no" at
the prompt, read-only, over budget), 2 error (one red line); ``logs --follow`` and
``up --follow`` exit with the job's own exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

JOB_COMMANDS = ("up", "jobs", "logs", "pull", "sync", "ssh", "finish", "resume")


def add_job_parsers(cs: Any) -> None:
    """Add the job actions to the `cloud` group's subparsers."""
    up = cs.add_parser("up", help="start a job spec on a rented GPU (or here with --local)")
    up.add_argument("spec", metavar="SPEC.toml", help="the job spec")
    up.add_argument("--offer", type=int, metavar="ID", help="rent this offer, not the spec's pick")
    up.add_argument("--local", action="store_true", help="run on this machine: no rent, no SSH")
    up.add_argument("--yes", action="store_true", help="do not ask before renting")
    up.add_argument("--follow", action="store_true", help="stream the log, then finish")
    up.add_argument("--no-guard", action="store_true", help="do not start the budget guard")
    up.add_argument("--json", action="store_true")

    jobs = cs.add_parser("jobs", help="jobs, newest first: state, instance, exit code, $")
    jobs.add_argument("--json", action="store_true")

    logs = cs.add_parser("logs", help="a job's log (--follow: until it ends)")
    logs.add_argument("job", metavar="JOB", help="job id, id prefix or name (newest)")
    logs.add_argument("--follow", action="store_true", help="stream until the job ends")
    logs.add_argument("--from", dest="from_byte", type=int, default=0, metavar="BYTE")

    pull = cs.add_parser("pull", help="bring a job's artifacts here, each verified by sha256")
    pull.add_argument("job", metavar="JOB")
    pull.add_argument("--to", metavar="DIR", help="where (default: the job's folder here)")
    pull.add_argument("--json", action="store_true")

    sync = cs.add_parser("sync", help="push the spec's [sync] paths to the job's instance again")
    sync.add_argument("job", metavar="JOB")

    ssh = cs.add_parser("ssh", help="a shell on the job's instance (pinned host key)")
    ssh.add_argument("job", metavar="JOB")
    ssh.add_argument(
        "remote_command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="a command to run instead of a shell",
    )

    res = cs.add_parser(
        "resume", help="take on a job rigdeck stopped minding (killed mid-up, preempted)"
    )
    res.add_argument("job", metavar="JOB")
    res.add_argument("--follow", action="store_true", help="stream the log, then finish")
    res.add_argument("--json", action="store_true")

    fin = cs.add_parser("finish", help="pull, verify, record, then the spec's on_finish")
    fin.add_argument("job", metavar="JOB")
    fin.add_argument("--destroy", action="store_true", help="destroy, whatever on_finish says")
    fin.add_argument("--yes", action="store_true", help="do not ask before destroying")
    fin.add_argument("--json", action="store_true")


def jobs_store_path(simulate: bool) -> Path | None:
    """The jobs store: the simulated account keeps its own beside its ledger (None: the
    user's, `default_jobs_path`)."""
    if not simulate:
        return None
    from rigdeck.tui.cloud_context import simulated_ledger_path

    return simulated_ledger_path().parent / "jobs.sqlite3"


def run_job_command(args: argparse.Namespace, settings: Any) -> int:
    # Imported on use: `rigdeck --help` must not load paramiko or the SDK.
    from rigdeck.tui import cli_cloud_jobs_actions as actions

    return actions.dispatch(args, settings)


__all__ = ["JOB_COMMANDS", "add_job_parsers", "jobs_store_path", "run_job_command"]
