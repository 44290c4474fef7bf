"""Checkpoints pulled while a job runs, and the one a recovery may trust.

Only a complete checkpoint (marker file written last, or sizes that stopped changing: see
`CheckpointWatch`) is pulled, and only once every one of its files matches the instance's
sha256 does it become the job's resume point, written to ``resume.json`` in the job's home
here (atomically: a crash leaves the previous resume point, never half of a new one).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from rigdeck.core.cloud.artifacts import ArtifactError, CheckpointWatch, pull_artifacts
from rigdeck.core.cloud.jobs.context import JobContext
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.spec import JobSpec
from rigdeck.core.cloud.ssh import SshError
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.sync import SyncError

RESUME_FILE = "resume.json"


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: str
    """Relative to the job's folder (run.remote_dir): what RIGDECK_RESUME_FROM points at."""
    files: int
    bytes: int
    attempt: int


def artifacts_dir(ctx: JobContext, job: Job) -> Path:
    return ctx.job_home(job.id) / "artifacts"


def read_resume_point(ctx: JobContext, job: Job) -> ResumePoint | None:
    path = ctx.job_home(job.id) / RESUME_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ResumePoint(
            str(data["checkpoint"]), int(data["files"]), int(data["bytes"]), int(data["attempt"])
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: no resume point rather than a wrong one


def write_resume_point(ctx: JobContext, job: Job, point: ResumePoint) -> None:
    home = ctx.job_home(job.id)
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{RESUME_FILE}.tmp"
    tmp.write_text(json.dumps(point.__dict__), encoding="utf-8")
    os.replace(tmp, home / RESUME_FILE)


class CheckpointKeeper:
    """Pulls each new complete checkpoint of a running job and keeps the newest verified one."""

    def __init__(self, ctx: JobContext, job: Job, spec: JobSpec, target: SshJobTarget) -> None:
        self.ctx = ctx
        self.job = job
        self.folder = spec.artifacts.checkpoint
        self.target = target
        self.watch = (
            CheckpointWatch(target.ssh, posixpath.join(job.remote_dir, self.folder))
            if self.folder
            else None
        )
        current = read_resume_point(ctx, job)
        self.last = current.checkpoint if current else None

    def tick(self) -> ResumePoint | None:
        """Look once; the new resume point when one was pulled and verified."""
        if self.watch is None or self.folder is None:
            return None
        try:
            latest = self.watch.latest()
            if latest is None:
                return None
            rel = posixpath.join(self.folder, latest.path)
            if rel == self.last:
                return None
            files = pull_artifacts(
                self.target.ssh, self.job.remote_dir, [rel + "/"], artifacts_dir(self.ctx, self.job)
            )
        except (SshError, SyncError, ArtifactError):
            # A cut link or a checkpoint the script deleted meanwhile: the next look tries again.
            return None
        if not files or not all(f.verified for f in files):
            return None
        point = ResumePoint(rel, len(files), sum(f.bytes for f in files), self.job.attempt)
        write_resume_point(self.ctx, self.job, point)
        self.last = rel
        self.ctx.emit(
            self.job.id,
            "checkpoint",
            f"checkpoint {rel} pulled and verified ({len(files)} files)",
            checkpoint=rel,
            files=len(files),
            bytes=point.bytes,
        )
        return point
