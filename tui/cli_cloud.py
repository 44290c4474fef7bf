"""`rigdeck cloud`: offers, rent, ls, down, stop, start, reconcile, ledger, guard.

Every provider action goes through core/cloud/actions.py (intent in the ledger before the call,
outcome after). Exit codes: 0 ok, 1 refused (a "no" at the prompt, over budget, read-only),
2 error (one red line on stderr). ``--simulate`` (here or before ``cloud``) uses the project's
simulator on a simulated account, with its own ledger.
"""

from __future__ import annotations

import argparse
from typing import Any

from rigdeck.core.cloud.provider import OFFER_SORTS


def add_parsers(sub: Any) -> None:
    cloud = sub.add_parser(
        "cloud",
        help="rent GPUs (Vast.ai): offers, rent, ls, down, stop, start, reconcile, ledger",
        description="Cloud GPUs with every action in the ledger. Exit 0: done; 1: refused "
        "(declined, over budget, read-only); 2: error.",
    )
    cloud.add_argument(
        "--simulate",
        dest="cloud_simulate",
        action="store_true",
        help="use the simulated account (no key, no money)",
    )
    cs = cloud.add_subparsers(dest="cloud_command", metavar="ACTION", required=True)

    offers = cs.add_parser("offers", help="search offers with the Vast query syntax")
    offers.add_argument("query", nargs="?", default="", help="e.g. 'gpu_ram>=24 num_gpus=1'")
    offers.add_argument("--sort", choices=OFFER_SORTS, default="price")
    offers.add_argument("--interruptible", action="store_true", help="bid prices (min bid)")
    offers.add_argument("--fits", metavar="MODEL", help="fit this GGUF on each offer")
    offers.add_argument("--limit", type=int, default=20, metavar="N")
    offers.add_argument("--json", action="store_true")

    rent = cs.add_parser("rent", help="rent an offer (asks first unless --yes)")
    rent.add_argument("offer_id", type=int, metavar="OFFER_ID")
    rent.add_argument("--image", help="docker image (default: [cloud] image)")
    rent.add_argument("--disk", type=float, metavar="GB", help="disk GB (default: [cloud] disk_gb)")
    rent.add_argument("--label", help="a label no earlier create used (default: generated)")
    rent.add_argument("--bid", type=float, metavar="USD", help="interruptible at this $/h bid")
    rent.add_argument("--max-usd", type=float, metavar="X", help="cap in $ (guard acts at it)")
    rent.add_argument("--max-hours", type=float, metavar="H", help="cap in hours")
    rent.add_argument(
        "--project",
        metavar="TAG",
        default="",
        help="project tag: spend and [cloud.projects.TAG] budgets per project",
    )
    rent.add_argument("--yes", action="store_true", help="do not ask")
    rent.add_argument("--no-guard", action="store_true", help="do not start the budget guard")
    rent.add_argument("--json", action="store_true")

    ls = cs.add_parser("ls", help="instances (reconciles with the provider first)")
    ls.add_argument("--json", action="store_true")

    down = cs.add_parser("down", help="destroy an instance; done once the provider reads it gone")
    down.add_argument("instance", type=int, metavar="INSTANCE")
    down.add_argument("--yes", action="store_true", help="do not ask")
    down.add_argument("--json", action="store_true")

    for name, what in (("stop", "stop"), ("start", "start")):
        p = cs.add_parser(
            name,
            help=f"{what} an instance" + (" (storage keeps billing)" if name == "stop" else ""),
        )
        p.add_argument("instance", type=int, metavar="INSTANCE")
        p.add_argument("--json", action="store_true")

    rec = cs.add_parser("reconcile", help="set the ledger against the provider's instance list")
    rec.add_argument("--json", action="store_true")

    led = cs.add_parser("ledger", help="what every instance cost, and every provider action")
    led.add_argument("--limit", type=int, default=0, metavar="N", help="newest N events (0: all)")
    led.add_argument("--json", action="store_true")

    guard = cs.add_parser("guard", help="run the budget guard in the foreground")
    guard.add_argument("--once", action="store_true", help="one tick, then exit")

    from rigdeck.tui.cli_cloud_jobs import add_job_parsers

    add_job_parsers(cs)  # up, jobs, logs, pull, sync, ssh, finish


def cmd_cloud(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.tui.cli_cloud_jobs import JOB_COMMANDS, run_job_command

    if args.cloud_command in JOB_COMMANDS:
        return run_job_command(args, settings)
    # The commands import the provider, the ledger and the fit: only when `cloud` is asked for.
    from rigdeck.tui.cli_cloud_commands import run_cloud

    return run_cloud(args, settings)


HANDLERS = {"cloud": cmd_cloud}

__all__ = ["HANDLERS", "add_parsers"]
