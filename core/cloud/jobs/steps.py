"""The steps every cloud run takes, shared by a first start and a recovery after a preemption:
pick an offer, rent it (ledger first), get SSH working, sync up, start the command detached.

Each step writes the job's new state to the jobs store before it acts, so a crash leaves a row
that says where the job was; provider actions go through `actions`, which writes the ledger's
intent before the call and its outcome after.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job, JobState
from rigdeck.core.cloud.jobs.remote import LaunchResult
from rigdeck.core.cloud.jobs.spec import JobSpec
from rigdeck.core.cloud.jobs.targets import JobTarget, plan_run, ssh_target
from rigdeck.core.cloud.ledger import Caps, job_of
from rigdeck.core.cloud.provider import CloudError, Offer, RentRequest, new_label
from rigdeck.core.cloud.readiness import InstanceFailed, PhaseReached, ReadinessTimeout
from rigdeck.core.cloud.readiness import wait_until_ready as _wait_until_ready
from rigdeck.core.cloud.spend import usd_between
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.sync import SyncInterrupted, SyncProgress, SyncSummary, plan_push, push

_T = TypeVar("_T")


def move(ctx: JobContext, job: Job, to: JobState, message: str = "", **changes: object) -> Job:
    """Write the new state first; then tell the face."""
    moved = ctx.store.move(job.id, to, **changes)
    ctx.emit(job.id, "state", message or to, state=to)
    return moved


def record(ctx: JobContext, job: Job, detail: str, instance_id: int | None = None) -> None:
    """A job step in the ledger's audit trail, beside the provider actions it explains."""
    if ctx.ledger is not None:
        ctx.ledger.observed(
            "job", at=ctx.clock(), instance_id=instance_id, label=job.id, detail=detail
        )


# -- offers ---------------------------------------------------------------------------------


def offer_price(offer: Offer, interruptible: bool) -> float:
    if interruptible and offer.interruptible_min_bid is not None:
        return offer.interruptible_min_bid
    return offer.dph


def choose_offer(
    ctx: JobContext, spec: JobSpec, *, offer_id: int | None = None, exclude: Sequence[int] = ()
) -> Offer:
    """``offer_id`` if it is still for rent, else the best offer the spec's [offer] allows."""
    provider, _ = ctx.cloud_parts()
    want = spec.offer
    if offer_id is not None:
        found = provider.search_offers(f"id={offer_id}", interruptible=want.interruptible, limit=1)
        if not found:
            raise CloudError(
                f"offer {offer_id} is not available (rented, unverified or gone); "
                "search again with `rigdeck cloud offers`"
            )
        return found[0]
    offers = provider.search_offers(
        want.query, sort=want.sort, interruptible=want.interruptible, limit=50
    )
    for offer in offers:
        if offer.id in exclude or not offer.rentable:
            continue
        if want.interruptible and offer.interruptible_min_bid is None:
            continue
        if want.max_dph is not None and offer_price(offer, want.interruptible) > want.max_dph:
            continue
        return offer
    limit = f" at or under ${want.max_dph:g}/h" if want.max_dph is not None else ""
    raise CloudError(
        f"no offer matches [offer] query {want.query!r}{limit} in {spec.path}; loosen the query "
        "or raise max_dph"
    )


def bid_for(offer: Offer, spec: JobSpec) -> float | None:
    """An interruptible rental's bid: a little over the current minimum, within max_dph."""
    if not spec.offer.interruptible or offer.interruptible_min_bid is None:
        return None
    bid = round(offer.interruptible_min_bid * 1.05, 4)
    if spec.offer.max_dph is not None:
        bid = min(bid, spec.offer.max_dph)
    return max(bid, offer.interruptible_min_bid)


def caps_for(ctx: JobContext, spec: JobSpec) -> Caps:
    budget = spec.budget
    return Caps(
        max_usd=budget.max_usd if budget.max_usd is not None else ctx.cloud.max_usd,
        max_hours=budget.max_hours if budget.max_hours is not None else ctx.cloud.max_hours,
        idle_minutes=ctx.cloud.idle_minutes,
    )


def project_for(ctx: JobContext, job: Job, spec: JobSpec) -> str:
    """The job's project tag: what its earlier rentals carried, else the spec's."""
    if ctx.ledger is not None:
        earlier = [r for r in ctx.ledger.instances() if job_of(r) == job.id]
        if earlier:
            return min(earlier, key=lambda r: r.created_at).project
    return spec.project


def rent_request(ctx: JobContext, spec: JobSpec, offer: Offer) -> RentRequest:
    return RentRequest(
        offer_id=offer.id,
        image=spec.image or ctx.cloud.image,
        disk_gb=spec.disk_gb if spec.disk_gb is not None else ctx.cloud.disk_gb,
        label=new_label(f"rigdeck-{spec.name}"),
        bid=bid_for(offer, spec),
    )


# -- rent and readiness ---------------------------------------------------------------------


def rent_for(ctx: JobContext, job: Job, spec: JobSpec, offer: Offer) -> Job:
    """Rent ``offer`` for the job (the job must be in provisioning); the job with its target.

    The ledger row carries the job id in its job column, so a crash between the create and the
    jobs store write is resolved by finding the instance rented for the job; its project is the
    spec's tag (kept from the job's first rental, so a recovery bills the same project).
    """
    provider, ledger = ctx.cloud_parts()
    keys = ctx.key_pair()
    try:
        provider.register_ssh_key(keys.public_key)
    except CloudError:
        pass  # already registered (some providers refuse a duplicate); attaching below suffices
    request = rent_request(ctx, spec, offer)
    ctx.emit(job.id, "offer", f"renting offer {offer.id}", offer=offer.id, label=request.label)
    row = actions.rent(
        provider, ledger, request, caps=caps_for(ctx, spec), project=project_for(ctx, job, spec),
        job=job.id, clock=ctx.clock,
    )  # fmt: skip
    job = ctx.store.update(job.id, target=row.id)
    record(ctx, job, f"job {job.id}: rented instance {row.id}", row.id)
    ctx.emit(job.id, "rented", f"rented instance {row.id}", instance=row.id, offer=offer.id)
    try:
        provider.attach_ssh_key(row.id, keys.public_key)
    except CloudError as exc:
        ctx.emit(job.id, "note", f"attaching the SSH key failed ({exc}); trying the account key")
    return job


def wait_ready(ctx: JobContext, job: Job, spec: JobSpec) -> SshJobTarget:
    """Wait through the readiness phases; on a start that cannot succeed, destroy and fail."""
    provider, ledger = ctx.cloud_parts()
    assert isinstance(job.target, int)
    instance_id = job.target

    def phase(reached: PhaseReached) -> None:
        ctx.emit(
            job.id,
            "phase",
            f"{reached.phase} ({reached.elapsed_s:.1f} s)",
            phase=reached.phase,
            elapsed_s=reached.elapsed_s,
            detail=reached.detail,
        )

    t = ctx.timings
    try:
        ssh = _wait_until_ready(
            instance_id,
            provider.instance,
            ctx.key_pair(),
            ctx.host_key_store(),
            user=ctx.ssh_user,
            timeout_s=t.ready_timeout_s,
            poll_s=t.ready_poll_s,
            on_phase=phase,
            cancel=ctx.cancel,
        )
    except (InstanceFailed, ReadinessTimeout) as exc:
        move(ctx, job, "failed", str(exc), error=str(exc))
        actions.destroy(
            provider, ledger, instance_id, clock=ctx.clock, reason=f"job {job.id}: {exc}"
        )
        ctx.emit(job.id, "destroyed", f"destroyed instance {instance_id}", instance=instance_id)
        raise
    ssh.close()  # the job target opens its own connection to the same, now pinned, endpoint
    instance = provider.instance(instance_id)
    if instance is None:
        raise JobError(f"instance {instance_id} disappeared right after it was ready")
    return ssh_target(ctx, instance, spec.run.remote_dir)


# -- sync -----------------------------------------------------------------------------------


def sync_pairs(spec: JobSpec) -> list[tuple[Path, str]]:
    """(local path, remote folder) for each [sync] up entry, keeping their place under the
    spec's folder (outside it: by name, at the top of remote_dir)."""
    out = []
    for local in spec.sync.up:
        try:
            rel = local.relative_to(spec.root).as_posix()
        except ValueError:
            rel = local.name
        rel = "" if rel == "." else rel
        if local.is_dir():
            dest = posixpath.join(spec.run.remote_dir, rel) if rel else spec.run.remote_dir
        else:
            dest = posixpath.join(spec.run.remote_dir, posixpath.dirname(rel))
        out.append((local, dest.rstrip("/") or "/"))
    return out


def sync_up(ctx: JobContext, job: Job, spec: JobSpec, target: SshJobTarget) -> SyncSummary:
    """Push the spec's [sync] paths; the plan (files, bytes) is told before the first byte."""
    excludes, gitignore = spec.sync.exclude, spec.sync.gitignore
    pairs = sync_pairs(spec)
    files = size = 0
    for local, dest in pairs:
        plan = _retried(
            ctx,
            job,
            partial(plan_push, target.ssh, local, dest, excludes=excludes, gitignore=gitignore),
        )
        files += plan.files
        size += plan.bytes
    ctx.emit(job.id, "sync_plan", f"sending {files} files, {size} bytes", files=files, bytes=size)

    def progress(p: SyncProgress) -> None:
        ctx.emit(
            job.id,
            "sync_progress",
            f"{p.percent}%",
            bytes_done=p.bytes_done,
            percent=p.percent,
            rate_bytes_per_s=p.rate_bytes_per_s,
        )

    for local, dest in pairs:
        _retried(
            ctx,
            job,
            partial(
                push,
                target.ssh,
                local,
                dest,
                excludes=excludes,
                gitignore=gitignore,
                on_progress=progress,
                bwlimit_kbps=ctx.sync_bwlimit_kbps,
            ),
        )
    ctx.emit(job.id, "synced", f"synced {files} files", files=files, bytes=size)
    return SyncSummary(files, size)


def _retried(ctx: JobContext, job: Job, step: Callable[[], _T]) -> _T:
    """Run a sync step again after a cut link (rsync resumes its partial files)."""
    attempts = max(1, ctx.timings.sync_attempts)
    wait = ctx.timings.reconnect_first_s
    for n in range(1, attempts + 1):
        try:
            return step()
        except SyncInterrupted as exc:
            if n == attempts:
                raise
            ctx.emit(job.id, "reconnecting", f"sync cut ({exc}); resuming", attempt=n)
            if ctx.wait(wait):
                raise
            wait = min(wait * 2, ctx.timings.reconnect_max_s)
    raise AssertionError("unreachable")


# -- start ----------------------------------------------------------------------------------


def start_run(
    ctx: JobContext, job: Job, spec: JobSpec, target: JobTarget, *, resume_from: str | None = None
) -> tuple[Job, LaunchResult]:
    """Record running (with the runner folder) first, then start: a rerun after a crash finds
    the folder and reports the run that is there instead of starting a second one."""
    launch = plan_run(target, spec, job, resume_from=resume_from)
    job = move(ctx, job, "running", "starting the command", job_dir=launch.paths.job_dir)
    result = target.start(launch)
    resumed = f", resuming from {resume_from}" if resume_from else ""
    ctx.emit(
        job.id,
        "started",
        f"{result.outcome} (pid {result.pid}){resumed}",
        pid=result.pid,
        outcome=result.outcome,
        resume_from=resume_from,
    )
    record(ctx, job, f"job {job.id}: command {result.outcome}{resumed}", _instance(job))
    return job, result


def _instance(job: Job) -> int | None:
    return job.target if isinstance(job.target, int) else None


# -- money ----------------------------------------------------------------------------------


def job_usd(ctx: JobContext, job: Job) -> float:
    """$ billed for every instance rented for the job (the ledger's timeline)."""
    if ctx.ledger is None or job.local:
        return 0.0
    rows = [r for r in ctx.ledger.instances() if job_of(r) == job.id]
    if not rows:
        return job.usd
    steps = ctx.ledger.state_changes([r.id for r in rows])
    now = ctx.clock()
    return sum(usd_between(r, steps.get(r.id, []), end=now) for r in rows)
