"""What the job runner works with: the jobs store, the provider and its ledger, the SSH keys,
the timings, and the callback that hears every step.

One `JobContext` is built by a face (CLI, pane) and passed to `up`, `follow`, `finish` and the
rest, so the runner itself holds no global state and tests build theirs against the simulator
and a real sshd.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rigdeck.core.cloud.host_keys import HostKeyStore
from rigdeck.core.cloud.jobs.lifecycle import JobStore
from rigdeck.core.cloud.ledger import Ledger
from rigdeck.core.cloud.provider import CloudError, Provider
from rigdeck.core.cloud.ssh_keys import SshKeyPair, ensure_key_pair
from rigdeck.core.config import CloudSettings, data_dir
from rigdeck.core.errors import RigdeckError

EventKind = Literal[
    "state",
    "offer",
    "rented",
    "phase",
    "sync_plan",
    "sync_progress",
    "synced",
    "started",
    "reconnecting",
    "reconnected",
    "stream_ended",
    "checkpoint",
    "preempted",
    "artifacts",
    "destroyed",
    "note",
]
PreemptPolicy = Literal["rent", "wait"]


class JobError(RigdeckError):
    """A job step could not be done; the message says what to do next."""


@dataclass(frozen=True)
class JobEvent:
    """One step of a job, as it happens: what a face shows in its status line or log."""

    job_id: str
    kind: EventKind
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Timings:
    """How often the runner looks, and how long it waits (seconds)."""

    log_poll_s: float = 0.1
    """Between log reads once the stream has caught up: the latency of a new line."""
    status_poll_s: float = 1.0
    """Between probes of the job's process (exit code file)."""
    instance_poll_s: float = 10.0
    """Between reads of the instance at the provider (preemption is seen within one)."""
    checkpoint_poll_s: float = 30.0
    """Between looks for a new complete checkpoint to pull."""
    ready_timeout_s: float = 900.0
    ready_poll_s: float = 5.0
    reconnect_first_s: float = 0.2
    reconnect_max_s: float = 5.0
    resume_wait_s: float = 300.0
    """With the "wait" policy: how long a preempted instance may take to run again."""
    sync_attempts: int = 5
    """Tries of one sync (a cut link resumes where it stopped)."""


@dataclass(frozen=True)
class JobContext:
    store: JobStore
    provider: Provider | None = None
    """None: only --local jobs can run."""
    ledger: Ledger | None = None
    cloud: CloudSettings = field(default_factory=CloudSettings)
    keys: SshKeyPair | None = None
    """None: the user's key pair (made on first use)."""
    host_keys: HostKeyStore | None = None
    ssh_user: str = "root"
    local_jobs_root: Path | None = None
    """Where --local jobs keep their runner folders (default data_dir()/jobs)."""
    home_root: Path | None = None
    """Where each job keeps its copy of the log, its artifacts and its resume point here
    (default data_dir()/cloud/jobs)."""
    timings: Timings = field(default_factory=Timings)
    on_preempt: PreemptPolicy = "rent"
    max_recoveries: int = 3
    sync_bwlimit_kbps: int | None = None
    on_event: Callable[[JobEvent], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], datetime] = utc_now

    def emit(self, job_id: str, kind: EventKind, message: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(JobEvent(job_id, kind, message, data))

    def cloud_parts(self) -> tuple[Provider, Ledger]:
        if self.provider is None or self.ledger is None:
            raise CloudError(
                "no cloud provider configured; add a Vast API key (see `rigdeck doctor`), "
                "use --simulate, or run the job here with --local"
            )
        return self.provider, self.ledger

    def key_pair(self) -> SshKeyPair:
        return self.keys if self.keys is not None else ensure_key_pair()

    def host_key_store(self) -> HostKeyStore:
        return self.host_keys if self.host_keys is not None else HostKeyStore()

    def job_home(self, job_id: str) -> Path:
        """This machine's folder for one job: log copy, artifacts, resume point."""
        root = self.home_root if self.home_root is not None else data_dir() / "cloud" / "jobs"
        return root / job_id

    def wait(self, seconds: float) -> bool:
        """Sleep that a cancel cuts short; True when cancelled."""
        return self.cancel.wait(max(0.0, seconds))
