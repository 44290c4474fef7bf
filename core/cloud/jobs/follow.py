"""`follow`: stream a running job's log by byte offset until the job ends.

The log is read from ``offset`` on (the next byte not yet seen), so after a cut link, a
restarted sshd or a restarted rigdeck the stream continues with nothing lost and nothing
doubled; the stored ``log_offset`` is the byte after the last complete line, where a fresh
reader starts. While it streams it also probes the job's process (its exit code file), reads the
instance at the provider (a preemption is seen within one poll, and recovered from), and pulls
each new complete checkpoint. Its state is "streaming", "reconnecting" or "ended", and every
change is told: a face never shows a silent freeze.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rigdeck.core.cloud.jobs.checkpoints import CheckpointKeeper
from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.logs import LogStream
from rigdeck.core.cloud.jobs.metrics import MetricParser, MetricPoint, MetricSeries
from rigdeck.core.cloud.jobs.remote import JobPaths, JobRunnerError, JobStatus
from rigdeck.core.cloud.jobs.spec import load_spec
from rigdeck.core.cloud.jobs.targets import JobTarget, close_target, job_paths, open_target
from rigdeck.core.cloud.provider import CloudError, Instance
from rigdeck.core.cloud.ssh import SshLinkLost
from rigdeck.core.cloud.ssh_jobs import SshJobTarget

StreamState = Literal["streaming", "reconnecting", "ended"]
READ_CHUNK = 1 << 20
OFFSET_SAVE_S = 2.0


@dataclass(frozen=True)
class FollowOutcome:
    job: Job
    exit_code: int | None
    """The command's exit code; None when it ended without one (killed, machine lost)."""
    ended: bool
    """The command ended (False: stopped early, e.g. cancelled)."""
    recoveries: int = 0
    series: MetricSeries | None = None
    """The metrics parsed from the log (the loss chart's points)."""


def preempted(instance: Instance | None) -> str | None:
    """Why a job's instance can no longer run it, or None while it can."""
    if instance is None:
        return "the instance is gone at the provider"
    if instance.outbid:
        return instance.status_message or f"instance {instance.id} was outbid"
    if instance.state in ("stopped", "exited", "offline") and instance.intended_state != "stopped":
        extra = f": {instance.status_message}" if instance.status_message else ""
        return f"instance {instance.id} is {instance.state}{extra}"
    return None


class JobFollower:
    """One job's live log. `run` blocks until the job ends: call it from a worker thread.

    ``on_lines`` gets each batch of complete, clean lines; ``on_state`` each stream state
    change with its reason; `series` holds the metrics parsed so far (the loss chart).
    """

    def __init__(
        self,
        ctx: JobContext,
        job: Job,
        *,
        start: int | None = None,
        on_lines: Callable[[list[str]], None] | None = None,
        on_state: Callable[[StreamState, str], None] | None = None,
        checkpoints: bool = True,
        recover: bool = True,
        watch_only: bool = False,
    ) -> None:
        """``watch_only``: a second viewer of a job another process runs (the pane beside the
        CLI): it reads and reports, writes down the exit code it sees, and never moves the
        job, saves a read position, pulls or recovers."""
        self.ctx = ctx
        self.watch_only = watch_only
        self.job = job
        self.stream = LogStream(start if start is not None else 0)
        self.parser = MetricParser()
        self.series = MetricSeries()
        self.on_lines = on_lines
        self.on_state = on_state
        self.state: StreamState = "streaming"
        self.checkpoints = checkpoints and not watch_only
        self.recover = recover and not watch_only
        self.lines = 0
        self.recoveries = 0

    # -- reporting --------------------------------------------------------------------------

    def _set_state(self, state: StreamState, why: str) -> None:
        if state == self.state and state != "reconnecting":
            return
        self.state = state
        kind = {"streaming": "reconnected", "reconnecting": "reconnecting", "ended": "stream_ended"}
        self.ctx.emit(self.job.id, kind[state], why)  # type: ignore[arg-type]
        if self.on_state is not None:
            self.on_state(state, why)

    def _deliver(self, lines: list[str]) -> list[MetricPoint]:
        if not lines:
            return []
        points = self.parser.parse_all(lines)
        self.series.extend(points)
        self.lines += len(lines)
        if self.on_lines is not None:
            self.on_lines(lines)
        return points

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> FollowOutcome:
        ctx, t = self.ctx, self.ctx.timings
        spec = load_spec(self.job.spec_path) if self.checkpoints and not self.job.local else None
        target = open_target(ctx, self.job)
        keeper = (
            CheckpointKeeper(ctx, self.job, spec, target)
            if spec is not None and isinstance(target, SshJobTarget)
            else None
        )
        paths = job_paths(self.job)
        now = time.monotonic()
        next_status = next_instance = next_ckpt = now
        next_save = now + OFFSET_SAVE_S
        wait = t.reconnect_first_s
        lost: JobStatus | None = None
        try:
            while not ctx.cancel.is_set():
                try:
                    data = target.read_log(paths, self.stream.offset, READ_CHUNK)
                    if self.state == "reconnecting":
                        self._set_state("streaming", "link back; streaming from the same byte")
                        wait = t.reconnect_first_s
                    self._deliver(self.stream.feed(data))
                    now = time.monotonic()
                    if now >= next_save:
                        self._save_offset()
                        next_save = now + OFFSET_SAVE_S
                    if len(data) >= READ_CHUNK:
                        continue  # catching up: read on before looking at anything else
                    if now >= next_status:
                        next_status = now + t.status_poll_s
                        status = target.status(paths)
                        if status.phase == "lost" and not self.job.local:
                            # Gone without an exit code: the runner itself died with its
                            # machine (preempted, restarted); the instance read below decides.
                            next_instance, lost = now, status
                        elif status.ended:
                            return self._ended(target, status)
                    if keeper is not None and now >= next_ckpt:
                        next_ckpt = now + t.checkpoint_poll_s
                        keeper.tick()
                except (SshLinkLost, JobRunnerError) as exc:
                    self._set_state("reconnecting", str(exc))
                    close_target(target)
                    if ctx.wait(wait):
                        break
                    wait = min(wait * 2, t.reconnect_max_s)
                    # A link that stays down may be a lost machine: ask the provider now.
                    next_instance = min(next_instance, time.monotonic())
                now = time.monotonic()
                if not self.job.local and now >= next_instance:
                    next_instance = now + t.instance_poll_s
                    why = self._preemption()
                    if why is None and lost is not None and not self.watch_only:
                        why = (
                            "the job's process is gone without an exit code (its machine restarted)"
                        )
                    if why is not None and self.watch_only:
                        self._set_state("ended", f"preempted: {why}")
                        return FollowOutcome(self.job, None, False, 0, self.series)
                    if why is not None:
                        close_target(target)
                        target, keeper, paths = self._recover(why)
                        next_status = next_ckpt = time.monotonic()
                        lost = None
                        continue
                    if lost is not None:
                        return self._ended(target, lost)
                if self.state == "streaming" and ctx.wait(t.log_poll_s):
                    break
        finally:
            close_target(target)
            self._save_offset()
        return FollowOutcome(self.job, None, False, self.recoveries, self.series)

    def _save_offset(self) -> None:
        if self.watch_only:
            return
        current = self.ctx.store.get(self.job.id)
        if current is not None and current.attempt == self.job.attempt:
            self.job = self.ctx.store.update(self.job.id, log_offset=self.stream.resume_offset)

    def _ended(self, target: JobTarget, status: JobStatus) -> FollowOutcome:
        paths = job_paths(self.job)
        while data := target.read_log(paths, self.stream.offset, READ_CHUNK):
            self._deliver(self.stream.feed(data))
        self._deliver(self.stream.finish())
        code = status.exit_code
        why = (
            f"the job ended with exit code {code}"
            if code is not None
            else "the job's process is gone without an exit code (killed, or its machine restarted)"
        )
        # The exit code is a fact any viewer may write down (the same value each time); the
        # read position belongs to the process that runs the job.
        changes: dict[str, object] = {"exit_code": code}
        if not self.watch_only:
            changes["log_offset"] = self.stream.resume_offset
        self.job = self.ctx.store.update(self.job.id, **changes)
        self._set_state("ended", why)
        return FollowOutcome(self.job, code, True, self.recoveries, self.series)

    def _preemption(self) -> str | None:
        provider = self.ctx.provider
        if provider is None or not isinstance(self.job.target, int):
            return None
        try:
            return preempted(provider.instance(self.job.target))
        except CloudError:
            return None  # the provider did not answer: ask again at the next poll

    def _recover(self, why: str) -> tuple[JobTarget, CheckpointKeeper | None, JobPaths]:
        from rigdeck.core.cloud.jobs.recovery import recover
        from rigdeck.core.cloud.jobs.steps import move, record

        job = move(self.ctx, self.job, "preempted", why, error=why)
        record(self.ctx, job, f"job {job.id} preempted: {why}", job.target)  # type: ignore[arg-type]
        self.ctx.emit(job.id, "preempted", why)
        if not self.recover or self.recoveries >= self.ctx.max_recoveries:
            raise JobError(
                f"job {job.id} was preempted ({why}); `rigdeck cloud up` it again, or finish it"
            )
        self.job = recover(self.ctx, job)
        self.recoveries += 1
        # The new run writes a new log: its lines follow the old run's in the same view.
        self.stream.restart(0)
        target = open_target(self.ctx, self.job)
        spec = load_spec(self.job.spec_path)
        keeper = (
            CheckpointKeeper(self.ctx, self.job, spec, target)
            if self.checkpoints and isinstance(target, SshJobTarget)
            else None
        )
        self._set_state("streaming", f"resumed on instance {self.job.target}")
        return target, keeper, job_paths(self.job)


def follow(
    ctx: JobContext,
    job: Job,
    *,
    start: int | None = None,
    on_lines: Callable[[list[str]], None] | None = None,
    on_state: Callable[[StreamState, str], None] | None = None,
    checkpoints: bool = True,
    recover: bool = True,
) -> FollowOutcome:
    """Stream ``job``'s log from byte ``start`` (default 0) until it ends; see `JobFollower`."""
    if job.ended and job.state == "destroyed" and not job.local:
        raise JobError(f"job {job.id}'s instance is destroyed; its log copy is in its job home")
    return JobFollower(
        ctx,
        job,
        start=start,
        on_lines=on_lines,
        on_state=on_state,
        checkpoints=checkpoints,
        recover=recover,
    ).run()
