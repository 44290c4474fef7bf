"""Carry on with a job from the state the jobs store kept, after rigdeck itself stopped mid-way
(killed, laptop closed) or after a preemption nobody was watching.

The store says where the job was; the ledger says what was rented for it (its rows carry the job
id in their job column), so an instance rented just before the crash is found and used, never
rented twice. The start script is idempotent: a job already started is reported, not doubled.
"""

from __future__ import annotations

from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.recovery import recover
from rigdeck.core.cloud.jobs.spec import load_spec
from rigdeck.core.cloud.jobs.steps import (
    choose_offer,
    move,
    rent_for,
    start_run,
    sync_up,
    wait_ready,
)
from rigdeck.core.cloud.jobs.targets import close_target, local_target, open_target, plan_run
from rigdeck.core.cloud.ledger import job_of
from rigdeck.core.errors import RigdeckError


def rented_for(ctx: JobContext, job: Job) -> int | None:
    """The open instance the ledger holds for this job, if any (newest)."""
    if ctx.ledger is None:
        return None
    rows = [r for r in ctx.ledger.instances(open_only=True) if job_of(r) == job.id]
    return max(rows, key=lambda r: r.created_at).id if rows else None


def continue_job(ctx: JobContext, job: Job) -> Job:
    """Take the job on from where it stopped; the job, running (or as it was when ended)."""
    if job.ended or job.state == "collecting":
        return job  # nothing to start: `finish` collects it
    spec = load_spec(job.spec_path)
    if job.local:
        if job.state == "requested" or not job.job_dir:
            job, _ = start_run(ctx, job, spec, local_target(ctx))
            return job
        return job  # running: the start script already ran it, detached
    if job.state in ("preempted", "recovering"):
        return recover(ctx, job)
    if job.state == "running":
        # Started, or about to be: the start script reports a run already there.
        if not isinstance(job.target, int):
            raise JobError(f"job {job.id} is running but has no instance in the store")
        running = open_target(ctx, job)
        try:
            running.start(plan_run(running, spec, job))
        finally:
            close_target(running)
        return job
    try:
        if job.state == "requested":
            job = move(ctx, job, "provisioning", "taking the job on")
        if job.target is None:
            found = rented_for(ctx, job)
            if found is not None:
                job = ctx.store.update(job.id, target=found)
                ctx.emit(job.id, "rented", f"instance {found} was rented for it", instance=found)
            else:
                job = rent_for(ctx, job, spec, choose_offer(ctx, spec))
        target = wait_ready(ctx, job, spec)
        try:
            if job.state == "provisioning":
                job = move(ctx, job, "syncing", "syncing up")
            sync_up(ctx, job, spec, target)
            job, _ = start_run(ctx, job, spec, target)
        finally:
            target.close()
    except RigdeckError as exc:
        current = ctx.store.get(job.id)
        if current is not None and not current.ended:
            move(ctx, current, "failed", str(exc), error=str(exc))
        raise
    return job
