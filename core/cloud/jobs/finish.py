"""`pull` and `finish`: bring a job's artifacts and log home, verified, then do ``on_finish``.

Nothing is destroyed before every artifact here matches the instance's sha256; a job that
failed keeps its log and artifacts here like one that succeeded. The exit code, the duration and
the $ (from the ledger) are written to the jobs store.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.artifacts import ArtifactFile, pull_artifacts, sha256_file
from rigdeck.core.cloud.jobs.checkpoints import artifacts_dir
from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.spec import JobSpec, OnFinish, load_spec
from rigdeck.core.cloud.jobs.steps import job_usd, move, record
from rigdeck.core.cloud.jobs.targets import JobTarget, close_target, job_paths, open_target
from rigdeck.core.cloud.ssh_jobs import SshJobTarget

FinishAction = Literal["destroyed", "stopped", "kept", "kept_unverified", "local"]


@dataclass(frozen=True)
class FinishResult:
    job: Job
    files: tuple[ArtifactFile, ...]
    log_path: Path
    exit_code: int | None
    duration_s: float | None
    usd: float
    action: FinishAction
    """What happened to the rental: destroyed, stopped, kept (asked), kept_unverified (an
    artifact did not verify, so nothing was destroyed), local (nothing rented)."""

    @property
    def verified(self) -> bool:
        return all(f.verified for f in self.files)


def _local_files(spec: JobSpec, to: Path | None) -> list[ArtifactFile]:
    out = []
    for rel in spec.artifacts.pull:
        top = spec.root / rel.rstrip("/")
        found = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in found:
            if not path.is_file():
                continue
            name = path.relative_to(spec.root).as_posix()
            digest = sha256_file(path)
            if to is None:
                out.append(ArtifactFile(name, path.stat().st_size, digest, True, digest))
                continue
            copy = to / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            here = sha256_file(copy)
            out.append(ArtifactFile(name, copy.stat().st_size, here, here == digest, digest))
    return out


def pull(ctx: JobContext, job: Job, *, to: Path | None = None) -> list[ArtifactFile]:
    """The spec's [artifacts] pull paths, here and checked file by file against the machine.

    Cloud jobs land in ``to`` (default: the job's artifacts folder here); --local jobs wrote
    them in the spec's folder already, and ``to`` copies them out.
    """
    spec = load_spec(job.spec_path)
    if job.local:
        return _local_files(spec, to)
    target = open_target(ctx, job)
    try:
        assert isinstance(target, SshJobTarget)
        return _pull_cloud(ctx, job, spec, target, to)
    finally:
        close_target(target)


def _pull_cloud(
    ctx: JobContext, job: Job, spec: JobSpec, target: SshJobTarget, to: Path | None
) -> list[ArtifactFile]:
    dest = to if to is not None else artifacts_dir(ctx, job)
    files = pull_artifacts(target.ssh, job.remote_dir, list(spec.artifacts.pull), dest)
    ok = sum(f.verified for f in files)
    ctx.emit(job.id, "artifacts", f"{ok} of {len(files)} files verified", files=len(files), ok=ok)
    return files


def save_log(ctx: JobContext, job: Job, target: JobTarget) -> Path:
    """The job's log, whole, in its home here (a --local job's log is already here)."""
    paths = job_paths(job)
    if job.local:
        return Path(paths.log)
    home = ctx.job_home(job.id)
    home.mkdir(parents=True, exist_ok=True)
    dest = home / "job.log"
    tmp = home / ".job.log.tmp"
    offset = 0
    with tmp.open("wb") as fh:
        while data := target.read_log(paths, offset, 1 << 20):
            fh.write(data)
            offset += len(data)
    tmp.replace(dest)
    return dest


def finish(ctx: JobContext, job: Job, *, on_finish: OnFinish | None = None) -> FinishResult:
    """Collect an ended job: pull, verify, record, then ``on_finish`` (default: the spec's)."""
    if job.state == "destroyed":
        raise JobError(f"job {job.id} is already finished and its instance destroyed")
    spec = load_spec(job.spec_path)
    target = open_target(ctx, job)
    try:
        status = target.status(job_paths(job))
        if not status.ended:
            raise JobError(
                f"job {job.id} is still running (pid {status.pid}); wait for it "
                f"(`rigdeck cloud logs {job.id} --follow`) or stop it first"
            )
        if job.state != "collecting":
            job = move(ctx, job, "collecting", "pulling artifacts")
        if isinstance(target, SshJobTarget):
            files = _pull_cloud(ctx, job, spec, target, None)
        else:
            files = _local_files(spec, None)
        log_path = save_log(ctx, job, target)
    finally:
        close_target(target)
    code = status.exit_code
    now = ctx.clock()
    duration = (now - job.started_at).total_seconds() if job.started_at else None
    usd = job_usd(ctx, job)
    error = None if code == 0 else f"the command ended with exit code {code}"
    job = move(
        ctx,
        job,
        "done" if code == 0 else "failed",
        error or "done",
        exit_code=code,
        usd=usd,
        error=error,
    )
    action = _on_finish(ctx, job, files, on_finish or spec.budget.on_finish)
    if action in ("destroyed", "stopped"):
        job = ctx.store.update(job.id, usd=job_usd(ctx, job))
    return FinishResult(job, tuple(files), log_path, code, duration, job.usd, action)


def _on_finish(
    ctx: JobContext, job: Job, files: list[ArtifactFile], wanted: OnFinish
) -> FinishAction:
    if job.local or not isinstance(job.target, int):
        return "local"
    provider, ledger = ctx.cloud_parts()
    instance_id = job.target
    bad = [f.path for f in files if not f.verified]
    if wanted == "destroy" and bad:
        note = (
            f"kept instance {instance_id}: {len(bad)} artifact(s) did not verify "
            f"({', '.join(bad[:3])}); pull again, then finish"
        )
        ctx.store.update(job.id, error=note)
        record(ctx, job, f"job {job.id}: {note}", instance_id)
        ctx.emit(job.id, "note", note)
        return "kept_unverified"
    if wanted == "destroy":
        record(ctx, job, f"job {job.id}: {len(files)} artifacts verified; destroying", instance_id)
        actions.destroy(
            provider,
            ledger,
            instance_id,
            clock=ctx.clock,
            reason=f"job {job.id} finished; {len(files)} artifacts verified here",
        )
        move(ctx, job, "destroyed", f"destroyed instance {instance_id}")
        ctx.emit(job.id, "destroyed", f"destroyed instance {instance_id}", instance=instance_id)
        return "destroyed"
    if wanted == "stop":
        actions.stop(provider, ledger, instance_id, clock=ctx.clock)
        record(ctx, job, f"job {job.id}: instance {instance_id} stopped", instance_id)
        return "stopped"
    return "kept"
