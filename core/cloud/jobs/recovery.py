"""After a preemption: get a machine again and restart the job from its last verified checkpoint.

preempted -> recovering -> either the same instance running again ("wait" policy, within
``resume_wait_s``) or the next qualifying offer rented ("rent", or a wait that ran out) ->
syncing -> running, with ``RIGDECK_RESUME_FROM`` pointing at the checkpoint pushed back up. The
preempted instance is destroyed once the job runs elsewhere (its storage would bill on). Each
step is in the jobs store before it is taken, and in the ledger beside the provider actions.
"""

from __future__ import annotations

import time

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.jobs.checkpoints import artifacts_dir, read_resume_point
from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.spec import load_spec
from rigdeck.core.cloud.jobs.steps import (
    choose_offer,
    move,
    record,
    rent_for,
    start_run,
    sync_up,
    wait_ready,
)
from rigdeck.core.cloud.jobs.targets import remote_path
from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.sync import push


def recover(ctx: JobContext, job: Job) -> Job:
    """Restart a preempted job; the job, running again (on the same or a new instance)."""
    provider, ledger = ctx.cloud_parts()
    if not isinstance(job.target, int):
        raise JobError(f"job {job.id} has no instance to recover from")
    spec = load_spec(job.spec_path)
    old = job.target
    job = move(ctx, job, "recovering", f"recovering (attempt {job.attempt + 1})")
    point = read_resume_point(ctx, job)
    where = f"from {point.checkpoint}" if point else "from the start (no verified checkpoint)"
    record(ctx, job, f"job {job.id}: recovering, attempt {job.attempt}, {where}", old)
    target: SshJobTarget | None = None
    # A machine that runs (again) is used again: it still has the synced files on its disk.
    wait_s = ctx.timings.resume_wait_s if ctx.on_preempt == "wait" else 0.0
    if _back_within(ctx, old, wait_s):
        record(ctx, job, f"job {job.id}: instance {old} runs again", old)
        target = wait_ready(ctx, job, spec)
        job = move(ctx, job, "syncing", f"instance {old} is back; syncing up")
    if target is None:
        row = ledger.instance(old)
        exclude = [row.offer_id] if row is not None and row.offer_id is not None else []
        offer = choose_offer(ctx, spec, exclude=exclude)
        job = move(ctx, job, "provisioning", f"renting offer {offer.id} to resume")
        job = rent_for(ctx, job, spec, offer)
        target = wait_ready(ctx, job, spec)
        job = move(ctx, job, "syncing", "syncing up to the new instance")
    try:
        sync_up(ctx, job, spec, target)
        resume_from = None
        if point is not None:
            local = artifacts_dir(ctx, job) / point.checkpoint
            if not local.is_dir():
                raise JobError(f"the verified checkpoint {local} is missing here")
            push(
                target.ssh,
                local,
                remote_path(job, point.checkpoint),
                excludes=(),
                gitignore=False,
            )
            resume_from = point.checkpoint
        job, _ = start_run(ctx, job, spec, target, resume_from=resume_from)
    finally:
        target.close()
    if job.target != old:
        try:
            actions.destroy(
                provider,
                ledger,
                old,
                clock=ctx.clock,
                reason=f"job {job.id} preempted there and moved to instance {job.target}",
            )
            ctx.emit(job.id, "destroyed", f"destroyed preempted instance {old}", instance=old)
        except CloudError as exc:
            # The ledger keeps it as destroying; reconcile and the guard retry. The job goes on.
            ctx.emit(job.id, "note", f"destroying preempted instance {old} failed: {exc}")
    return job


def _back_within(ctx: JobContext, instance_id: int, timeout_s: float) -> bool:
    provider, _ = ctx.cloud_parts()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            read = provider.instance(instance_id)
            if read is None:
                return False
            if read.state == "running" and not read.outbid:
                return True
        except CloudError:
            pass  # no answer this time: ask again until the deadline
        if time.monotonic() >= deadline or ctx.wait(min(ctx.timings.ready_poll_s, timeout_s)):
            return False
