"""`up`: one job spec started on a rented GPU, or on this machine with ``local=True``.

Cloud: requested -> provisioning (offer, rent, key, readiness) -> syncing -> running.
Local: requested -> running, through `LocalTarget`: no rent, no SSH, the same runner script,
log and chart. Every state is in the jobs store before the step it names begins.
"""

from __future__ import annotations

from rigdeck.core.cloud.jobs.context import JobContext
from rigdeck.core.cloud.jobs.lifecycle import Job, new_job_id
from rigdeck.core.cloud.jobs.spec import JobSpec
from rigdeck.core.cloud.jobs.steps import (
    choose_offer,
    move,
    record,
    rent_for,
    start_run,
    sync_up,
    wait_ready,
)
from rigdeck.core.cloud.jobs.targets import local_target
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.errors import RigdeckError


def new_job(ctx: JobContext, spec: JobSpec, *, local: bool) -> Job:
    job = Job(
        id=new_job_id(spec.name, at=ctx.clock()),
        name=spec.name,
        spec_path=str(spec.path),
        state="requested",
        created_at=ctx.clock(),
        target="local" if local else None,
        remote_dir=str(spec.root) if local else spec.run.remote_dir,
    )
    ctx.store.add(job)
    ctx.emit(job.id, "state", "requested", state="requested")
    return job


def up(
    ctx: JobContext,
    spec: JobSpec,
    *,
    offer_id: int | None = None,
    local: bool = False,
    offer: Offer | None = None,
) -> Job:
    """Start ``spec``; the job, running (its command detached on its machine).

    ``offer`` (already chosen, e.g. after a confirmation) wins over ``offer_id`` and the spec's
    [offer]. On a failure the job is stored as failed with the reason, a rented instance that
    cannot start is destroyed, and the error is raised.
    """
    job = new_job(ctx, spec, local=local)
    if local:
        return _up_local(ctx, job, spec)
    return _up_cloud(ctx, job, spec, offer or choose_offer(ctx, spec, offer_id=offer_id))


def _up_local(ctx: JobContext, job: Job, spec: JobSpec) -> Job:
    target = local_target(ctx)
    try:
        job, _ = start_run(ctx, job, spec, target)
    except RigdeckError as exc:
        _fail(ctx, job, exc)
        raise
    return job


def _up_cloud(ctx: JobContext, job: Job, spec: JobSpec, offer: Offer) -> Job:
    try:
        job = move(ctx, job, "provisioning", f"renting offer {offer.id}")
        job = rent_for(ctx, job, spec, offer)
        target = wait_ready(ctx, job, spec)
    except RigdeckError as exc:
        _fail(ctx, job, exc)
        raise
    try:
        job = move(ctx, job, "syncing", "syncing up")
        sync_up(ctx, job, spec, target)
        job, _ = start_run(ctx, job, spec, target)
    except RigdeckError as exc:
        # The instance stays: it holds what was synced, and `rigdeck cloud sync` / `up` again
        # or `finish` decide; the job row says why it stopped.
        _fail(ctx, job, exc)
        record(
            ctx,
            job,
            f"job {job.id} failed: {exc}",
            job.target if isinstance(job.target, int) else None,
        )
        raise
    finally:
        target.close()
    return job


def _fail(ctx: JobContext, job: Job, exc: Exception) -> None:
    current = ctx.store.get(job.id)
    if current is None or current.ended:
        return
    if current.state in ("requested", "provisioning", "syncing", "running"):
        move(ctx, current, "failed", str(exc), error=str(exc))
