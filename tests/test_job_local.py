"""The sample job run on this machine through the generated detached runner (`--local`).

Real processes throughout: the start script detaches the job with setsid, the log is read back
by offset through the same scripts an SSH link runs, torchrun starts two CPU processes (gloo)
and the sample resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from rigdeck.core.cloud.jobs.logs import LogNormaliser, LogStream, MetricParser, MetricSeries
from rigdeck.core.cloud.jobs.remote import (
    JobPaths,
    JobRunnerError,
    JobStatus,
    Launch,
    LocalTarget,
    parse_status,
    plan_launch,
    read_log,
)
from rigdeck.core.cloud.jobs.spec import JobSpec, load_spec, parse_spec
from rigdeck.core.config import data_dir

SAMPLES = Path(__file__).resolve().parents[1] / "sample_configs" / "jobs"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def target() -> Iterator[LocalTarget]:
    # The job finds torchrun and torch in this venv, as a user's activated venv would.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    local = LocalTarget(env={**os.environ, "PATH": path})
    yield local
    # A test that failed half-way leaves no job running behind it.
    for job_dir in local.jobs_root.glob("*"):
        paths = JobPaths(str(job_dir))
        if not local.status(paths).ended:
            local.stop(paths, grace_s=1)


@pytest.fixture
def sample(tmp_path: Path) -> JobSpec:
    folder = tmp_path / "tiny-gpt"
    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("out", "__pycache__"))
    return load_spec(folder / "tiny-gpt.toml")


def with_command(spec: JobSpec, extra: str, **run: object) -> JobSpec:
    return dataclasses.replace(
        spec, run=dataclasses.replace(spec.run, command=spec.run.command + extra, **run)
    )


def wait_status(
    target: LocalTarget, paths: JobPaths, ok: Callable[[JobStatus], bool], what: str
) -> JobStatus:
    def probe() -> JobStatus | None:
        status = target.status(paths)
        return status if ok(status) else None

    return wait_for(probe, what, timeout=90.0)


def finished(target: LocalTarget, paths: JobPaths) -> JobStatus:
    return wait_status(target, paths, lambda s: s.ended, "the job to end")


def whole_log(paths: JobPaths) -> list[str]:
    norm = LogNormaliser()
    data = Path(paths.log).read_bytes()
    return norm.feed(data) + norm.flush()


def steps_of(lines: list[str]) -> dict[int, float]:
    series = MetricSeries()
    series.extend(MetricParser().parse_all(lines))
    return dict(series.points("loss"))


def test_sample_runs_detached_and_its_log_reads_back_once_over_reconnects(target, sample):
    launch = target.plan(sample, "tiny-gpt-local-1")
    assert Path(launch.paths.job_dir) == data_dir() / "jobs" / "tiny-gpt-local-1"
    assert launch.workdir == str(sample.root)
    started = target.start(launch)
    assert started.outcome == "started" and started.pid

    # Detached: its own session, not a child of this process.
    assert os.getsid(started.pid) == started.pid != os.getsid(0)
    ppid = int(Path(f"/proc/{started.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()
    again = target.start(launch)  # a repeated start reports the running job, starts no copy
    assert (again.outcome, again.pid) in (("running", started.pid), ("finished", None))

    rng = random.Random(5)
    shown: list[str] = []
    stream = LogStream()
    sizes_while_running: set[int] = set()
    while True:
        status = target.status(launch.paths)
        if not status.ended:
            sizes_while_running.add(status.log_bytes)
        # Each read is a fresh connection asking from the stream's offset: through the shell
        # script (what the SSH link runs) or the file directly, in small random pieces.
        limit = rng.randint(1, 300)
        if rng.random() < 0.5:
            piece = read_log(target, launch.paths, stream.offset, limit)
        else:
            piece = target.read_log(launch.paths, stream.offset, limit)
        shown += stream.feed(piece)
        if rng.random() < 0.05:
            stream = LogStream(stream.resume_offset)  # rigdeck restarted mid-line
        if status.ended and not piece and stream.offset >= status.log_bytes:
            break
        if not piece:
            time.sleep(0.05)
    shown += stream.finish()

    assert status.phase == "exited" and status.exit_code == 0
    assert Path(launch.paths.exit_code).read_text().strip() == "0"
    assert len({s for s in sizes_while_running if s > 0}) >= 2, "the log did not grow"
    assert shown == whole_log(launch.paths)
    assert shown[0].startswith("[rigdeck] job tiny-gpt-local-1: 0 GPU(s), {nproc}=1")
    assert sorted(steps_of(shown)) == list(range(1, 61))
    assert sum(line.startswith("step ") for line in shown) == 60  # each line exactly once
    done = sorted(p.name for p in (sample.root / "out" / "ckpt").iterdir())
    assert done == ["step-000040", "step-000060"]
    assert all((sample.root / "out" / "ckpt" / d / "COMPLETE").exists() for d in done)


def test_a_failing_command_and_a_failing_setup_report_their_exit_codes(target, sample, tmp_path):
    # Straight python, not torchrun: torchrun turns any failed worker into its own exit code 1.
    failing = dataclasses.replace(
        sample, run=dataclasses.replace(sample.run, command="python train.py --fail-at 3")
    )
    launch = target.plan(failing, "tiny-gpt-fails")
    target.start(launch)
    status = finished(target, launch.paths)
    assert (status.phase, status.exit_code) == ("exited", 3)
    lines = whole_log(launch.paths)
    assert "failing at step 3 as asked" in lines
    assert lines[-1] == "[rigdeck] command ended (exit code 3)"

    spec = parse_spec(
        'name = "s"\n[run]\nsetup = "echo preparing; exit 7"\ncommand = "echo never"\n',
        tmp_path / "s.toml",
    )
    launch = target.plan(spec, "setup-fails")
    target.start(launch)
    status = finished(target, launch.paths)
    assert (status.phase, status.exit_code) == ("exited", 7)
    lines = whole_log(launch.paths)
    assert "preparing" in lines and "never" not in lines
    assert lines[-1] == "[rigdeck] setup failed (exit code 7)"


def test_torchrun_with_two_cpu_processes_resumes_from_the_last_complete_checkpoint(target, sample):
    two = with_command(sample, " --steps 40", nproc=2)
    first = target.plan(two, "tiny-gpt-ddp-1")
    target.start(first)
    status = finished(target, first.paths)
    lines = whole_log(first.paths)
    assert status.exit_code == 0, lines[-20:]
    assert "training 56159 parameters on 2 x cpu" in lines
    assert "{nproc}=2" in lines[0]
    command = Path(first.paths.job_dir, "command.sh").read_text()
    assert "--nproc-per-node=${RIGDECK_NPROC}" in command
    full = steps_of(lines)
    assert sorted(full) == list(range(1, 41))

    # A copy cut off while the step-40 checkpoint was written has no marker: it must be skipped.
    ckpt = sample.root / "out" / "ckpt"
    (ckpt / "step-000040" / "COMPLETE").unlink()
    second = target.plan(two, "tiny-gpt-ddp-2", resume_from=sample.artifacts.checkpoint)
    assert second.resume_from == str(ckpt)
    target.start(second)
    status = finished(target, second.paths)
    lines = whole_log(second.paths)
    assert status.exit_code == 0, lines[-20:]
    assert f"resumed from {ckpt / 'step-000020'} at step 20" in lines
    resumed = steps_of(lines)
    assert sorted(resumed) == list(range(21, 41))
    # Batches depend on (seed, step, rank) only: the resumed run retraces the uninterrupted one.
    assert resumed == {s: v for s, v in full.items() if s > 20}


def test_stop_ends_the_whole_process_group_and_records_the_exit_code(target, tmp_path):
    spec = parse_spec(
        'name = "s"\n[run]\ncommand = """\n'
        "trap 'echo got TERM; exit 5' TERM\n"
        "echo waiting\nwhile :; do sleep 0.1; done\n"
        '"""\n',
        tmp_path / "s.toml",
    )
    launch = target.plan(spec, "stoppable")
    target.start(launch)
    wait_for(lambda: "waiting" in whole_log(launch.paths), "the job to start")
    assert target.stop(launch.paths, grace_s=20) == 5
    status = target.status(launch.paths)
    assert (status.phase, status.exit_code) == ("exited", 5)
    assert "got TERM" in whole_log(launch.paths)

    stubborn = dataclasses.replace(
        spec, run=dataclasses.replace(spec.run, command="trap '' TERM; echo waiting; sleep 60")
    )
    launch = target.plan(stubborn, "stubborn")
    target.start(launch)
    wait_for(lambda: "waiting" in whole_log(launch.paths), "the job to start")
    assert target.stop(launch.paths, grace_s=0.5) == 137
    assert target.status(launch.paths).phase == "exited"


def test_a_job_killed_outright_reads_as_lost_and_an_unknown_one_as_missing(target, tmp_path):
    spec = parse_spec('name = "s"\n[run]\ncommand = "echo up; sleep 60"\n', tmp_path / "s.toml")
    launch: Launch = target.plan(spec, "killed")
    pid = target.start(launch).pid
    assert pid
    wait_for(lambda: "up" in whole_log(launch.paths), "the job to start")
    assert target.status(launch.paths).phase == "running"
    os.killpg(pid, signal.SIGKILL)  # what a preempted machine does to it
    status = wait_status(target, launch.paths, lambda s: s.phase == "lost", "lost")
    assert status.exit_code is None and status.pid == pid
    restart = target.start(launch)
    assert restart.outcome == "lost"  # the same folder never starts a second run
    assert target.status(target.paths("never-started")).phase == "missing"
    with pytest.raises(JobRunnerError):
        parse_status("sh: 1: syntax error")


def test_a_job_folder_that_cannot_be_made_is_one_clear_error(target, tmp_path):
    spec = parse_spec('name = "s"\n[run]\ncommand = "echo hi"\n', tmp_path / "s.toml")
    (tmp_path / "blocker").write_text("a file where the folder should go")
    launch = plan_launch(
        spec, "blocked", workdir=str(tmp_path), job_dir=str(tmp_path / "blocker" / "j")
    )
    with pytest.raises(JobRunnerError, match="did not start: cannot create"):
        target.start(launch)
    with pytest.raises(JobRunnerError, match="job id"):
        plan_launch(spec, "bad id; rm -rf /")
