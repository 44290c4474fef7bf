"""A rented instance as a job target: the same methods as the jobs package's `LocalTarget`.

The job runner calls `plan`, `start`, `status`, `read_log` and `stop` on either target, so one
code path runs a job here or there. Scripts go to ``sh -s`` over SSH; the log is read by byte
offset over SFTP (no process started per poll). A cut link surfaces as `SshLinkLost` from any
call; the job keeps running detached, and the next call reconnects.
"""

from __future__ import annotations

import posixpath
import shlex

from rigdeck.core.cloud.jobs.remote import (
    JobPaths,
    JobRunnerError,
    JobStatus,
    Launch,
    LaunchResult,
    ShellResult,
    default_job_dir,
    plan_launch,
    probe_job,
    start_job,
    stop_job,
)
from rigdeck.core.cloud.jobs.spec import JobSpec
from rigdeck.core.cloud.ssh import SshTarget, SshTimeout

SCRIPT_OUTPUT_LIMIT = 64 * 1024 * 1024


class SshJobTarget:
    """Jobs on one instance; their folders sit beside ``remote_dir`` (see `default_job_dir`)."""

    name = "ssh"

    def __init__(self, ssh: SshTarget, remote_dir: str) -> None:
        self.ssh = ssh
        self.remote_dir = remote_dir

    def __repr__(self) -> str:
        return f"SshJobTarget({self.ssh!r}, {self.remote_dir!r})"

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths(default_job_dir(self.remote_dir, job_id))

    def plan(self, spec: JobSpec, job_id: str, *, resume_from: str | None = None) -> Launch:
        return plan_launch(
            spec,
            job_id,
            workdir=spec.run.remote_dir,
            job_dir=self.paths(job_id).job_dir,
            resume_from=resume_from,
        )

    def run_script(self, script: str, *, timeout_s: float) -> ShellResult:
        try:
            result = self.ssh.run(
                "sh -s",
                stdin=script.encode("utf-8"),
                timeout_s=timeout_s,
                max_output_bytes=SCRIPT_OUTPUT_LIMIT,
            )
        except SshTimeout:
            raise JobRunnerError(
                f"a job script ran past {timeout_s:g} s on instance {self.ssh.endpoint.instance_id}"
            ) from None
        return ShellResult(result.exit_code, result.stdout, result.stderr)

    def start(self, launch: Launch) -> LaunchResult:
        parent = posixpath.dirname(launch.paths.job_dir.rstrip("/"))
        self.ssh.run(f"mkdir -p {shlex.quote(parent)}", timeout_s=30)
        return start_job(self, launch)

    def status(self, paths: JobPaths) -> JobStatus:
        return probe_job(self, paths)

    def read_log(self, paths: JobPaths, offset: int, limit: int = 1 << 20) -> bytes:
        return self.ssh.read_from(paths.log, offset, limit)

    def stop(self, paths: JobPaths, *, grace_s: float = 10.0) -> int | None:
        return stop_job(self, paths, grace_s=grace_s)

    def num_gpus(self) -> int:
        return self.ssh.num_gpus()

    def close(self) -> None:
        self.ssh.close()
