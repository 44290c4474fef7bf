"""The machine a stored job runs on, opened again from what the jobs store and the provider say.

A ``--local`` job runs through `LocalTarget`; a cloud job through `SshJobTarget` on its
instance, reached at the endpoint the provider reports now, with the host key pinned at first
contact. Both answer the same calls (plan, start, status, read_log, stop).
"""

from __future__ import annotations

import posixpath

from rigdeck.core.cloud.jobs.context import JobContext, JobError
from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.core.cloud.jobs.remote import JobPaths, Launch, LocalTarget, plan_launch
from rigdeck.core.cloud.jobs.spec import JobSpec
from rigdeck.core.cloud.provider import Instance
from rigdeck.core.cloud.ssh import SshEndpoint, SshTarget
from rigdeck.core.cloud.ssh_jobs import SshJobTarget

JobTarget = LocalTarget | SshJobTarget


def local_target(ctx: JobContext) -> LocalTarget:
    return LocalTarget(ctx.local_jobs_root)


def ssh_target(ctx: JobContext, instance: Instance, remote_dir: str) -> SshJobTarget:
    if not instance.ssh_host or not instance.ssh_port:
        raise JobError(f"instance {instance.id} has no SSH address yet; wait for it to run")
    endpoint = SshEndpoint(instance.id, instance.ssh_host, instance.ssh_port, ctx.ssh_user)
    ssh = SshTarget(endpoint, ctx.key_pair(), ctx.host_key_store())
    return SshJobTarget(ssh, remote_dir)


def instance_of(ctx: JobContext, job: Job) -> Instance:
    if not isinstance(job.target, int):
        raise JobError(f"job {job.id} has no rented instance")
    provider, _ = ctx.cloud_parts()
    found = provider.instance(job.target)
    if found is None:
        raise JobError(
            f"instance {job.target} of job {job.id} is gone at the provider; what was not "
            f"pulled is lost (`rigdeck cloud jobs` shows the job)"
        )
    return found


def open_target(ctx: JobContext, job: Job) -> JobTarget:
    """The job's machine, ready for calls (SSH connects on the first one)."""
    if job.local:
        return local_target(ctx)
    return ssh_target(ctx, instance_of(ctx, job), job.remote_dir)


def run_key(job: Job) -> str:
    """The runner folder's name: the job id, then one folder per restart after a preemption
    (a rerun of the start script on the first folder would report the old run)."""
    return job.id if job.attempt <= 1 else f"{job.id}.r{job.attempt}"


def plan_run(
    target: JobTarget, spec: JobSpec, job: Job, *, resume_from: str | None = None
) -> Launch:
    workdir = str(spec.root) if isinstance(target, LocalTarget) else spec.run.remote_dir
    return plan_launch(
        spec,
        job.id,
        workdir=workdir,
        job_dir=target.paths(run_key(job)).job_dir,
        resume_from=resume_from,
    )


def job_paths(job: Job) -> JobPaths:
    if not job.job_dir:
        raise JobError(f"job {job.id} has not started yet (state {job.state})")
    return JobPaths(job.job_dir)


def remote_path(job: Job, relative: str) -> str:
    return posixpath.join(job.remote_dir, relative)


def close_target(target: JobTarget) -> None:
    """Drop the target's connection (this machine holds none)."""
    if isinstance(target, SshJobTarget):
        target.close()
