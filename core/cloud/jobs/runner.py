"""The one job path, for every face: up, follow, pull, finish, sync, and all of them in a row.

    ctx = JobContext(store=JobStore(), provider=provider, ledger=ledger)
    job = up(ctx, load_spec("tiny-gpt.toml"))            # or up(ctx, spec, local=True)
    outcome = follow(ctx, job, on_lines=print)          # until the command ends
    result = finish(ctx, outcome.job)                    # pull, verify, record, on_finish

The modules behind it: `up` (start), `steps` (offer, rent, readiness, sync, launch), `follow`
(the log stream, preemption, checkpoints), `recovery` (restart after a preemption), `resume`
(carry on from the stored state after rigdeck stopped), `finish` (artifacts, money, on_finish).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rigdeck.core.cloud.jobs.context import JobContext, JobError, JobEvent, Timings
from rigdeck.core.cloud.jobs.finish import FinishResult, finish, pull, save_log
from rigdeck.core.cloud.jobs.follow import FollowOutcome, JobFollower, StreamState, follow
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.recovery import recover
from rigdeck.core.cloud.jobs.resume import continue_job
from rigdeck.core.cloud.jobs.spec import JobSpec, OnFinish, load_spec
from rigdeck.core.cloud.jobs.steps import choose_offer, job_usd, sync_up
from rigdeck.core.cloud.jobs.targets import close_target, open_target
from rigdeck.core.cloud.jobs.up import up
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.sync import SyncSummary

__all__ = [
    "FinishResult",
    "FollowOutcome",
    "JobContext",
    "JobError",
    "JobEvent",
    "JobFollower",
    "RunResult",
    "StreamState",
    "Timings",
    "choose_offer",
    "continue_job",
    "finish",
    "follow",
    "job_usd",
    "pull",
    "recover",
    "run_job",
    "save_log",
    "sync_job",
    "up",
]


@dataclass(frozen=True)
class RunResult:
    job: Job
    follow: FollowOutcome
    finish: FinishResult | None
    """None when following stopped before the job ended (cancelled)."""


def run_job(
    ctx: JobContext,
    spec: JobSpec,
    *,
    offer_id: int | None = None,
    offer: Offer | None = None,
    local: bool = False,
    on_lines: Callable[[list[str]], None] | None = None,
    on_state: Callable[[StreamState, str], None] | None = None,
    on_finish: OnFinish | None = None,
) -> RunResult:
    """Up, follow to the end, finish: what ``rigdeck cloud up --follow`` does."""
    job = up(ctx, spec, offer_id=offer_id, offer=offer, local=local)
    outcome = follow(ctx, job, on_lines=on_lines, on_state=on_state)
    if not outcome.ended:
        return RunResult(outcome.job, outcome, None)
    result = finish(ctx, outcome.job, on_finish=on_finish)
    return RunResult(result.job, outcome, result)


def sync_job(ctx: JobContext, job: Job) -> SyncSummary:
    """Push the spec's [sync] paths to the job's instance again (unchanged files skipped)."""
    if job.local:
        raise JobError(f"job {job.id} runs here (--local): its folder is the spec's, no sync")
    spec = load_spec(job.spec_path)
    target = open_target(ctx, job)
    try:
        assert isinstance(target, SshJobTarget)
        return sync_up(ctx, job, spec, target)
    finally:
        close_target(target)
