"""The detached runner: POSIX sh scripts that start, watch, read and stop a job on its machine.

Every step is a small script (a string) fed to ``sh -s`` on the target: the rented instance over
SSH, or this machine (`LocalTarget`) for ``--local``. The job runs as ``setsid nohup sh run.sh``,
so it outlives the connection that started it, and leaves its traces in one folder:

    job.log     setup and command output (stdout and stderr), appended, read by byte offset
    job.pid     pid of the job's session leader (written by the job itself, atomically)
    job.phase   setup | command: what it is doing now
    job.exit    the exit code, written (atomically) when it ends

A rerun of the start script on the same folder never starts a second copy: it reports the one
that is there. Placeholders in the command become shell variables read on the target
(``{num_gpus}`` -> ``${RIGDECK_NUM_GPUS}``), so the GPU count is the target's own.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from rigdeck.core.cloud.jobs.spec import JobSpec, render_command
from rigdeck.core.config import data_dir
from rigdeck.core.errors import RigdeckError

JobPhase = Literal["missing", "starting", "setup", "running", "exited", "lost"]
LaunchOutcome = Literal["started", "running", "finished", "lost"]

SHELL_VALUES: Mapping[str, str] = {
    "num_gpus": "${RIGDECK_NUM_GPUS}",
    "nproc": "${RIGDECK_NPROC}",
    "remote_dir": "${RIGDECK_WORKDIR}",
    "job": "${RIGDECK_JOB}",
    "name": "${RIGDECK_NAME}",
}
"""What each placeholder becomes in the script: a variable set on the target before the command."""

_STATUS_HEADER = "rigdeck-status 1"
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LAUNCH_TAG = "rigdeck-launch"

# `kill -0` alone is not enough: a pid can come back as another process after a restart, and a
# dead job nobody reaped yet still answers it. /proc tells both apart where it exists.
_ALIVE_FN = (
    "rigdeck_alive() {\n"
    '  kill -0 "$1" 2>/dev/null || return 1\n'
    '  if [ -r "/proc/$1/cmdline" ]; then\n'
    "    tr '\\0' '\\n' < \"/proc/$1/cmdline\" | grep -qxF \"$D/run.sh\" || return 1\n"
    "    grep -q '^State:[[:space:]]*Z' \"/proc/$1/status\" 2>/dev/null && return 1\n"
    "  fi\n"
    "  return 0\n"
    "}\n"
)


class JobRunnerError(RigdeckError):
    """A job could not be started, probed, read or stopped on its machine."""


@dataclass(frozen=True)
class JobPaths:
    """Where one job's files live on its machine (POSIX paths)."""

    job_dir: str

    @property
    def log(self) -> str:
        return posixpath.join(self.job_dir, "job.log")

    @property
    def pid(self) -> str:
        return posixpath.join(self.job_dir, "job.pid")

    @property
    def exit_code(self) -> str:
        return posixpath.join(self.job_dir, "job.exit")

    @property
    def phase(self) -> str:
        return posixpath.join(self.job_dir, "job.phase")

    @property
    def run_script(self) -> str:
        return posixpath.join(self.job_dir, "run.sh")


def default_job_dir(remote_dir: str, job_id: str) -> str:
    """Beside the synced folder, never inside it: a sync that deletes extras cannot touch it."""
    parent = posixpath.dirname(remote_dir.rstrip("/")) or "/"
    return posixpath.join(parent, ".rigdeck", "jobs", job_id)


@dataclass(frozen=True)
class Launch:
    """Everything the start script needs, decided on this machine."""

    job_id: str
    name: str
    workdir: str
    """Where setup and command run (run.remote_dir, or the spec's folder for --local)."""
    paths: JobPaths
    command: str
    """The spec's template; placeholders are filled on the target."""
    setup: str = ""
    env: Mapping[str, str] | None = None
    nproc: int | None = None
    """None: the target's GPU count, at least 1."""
    resume_from: str | None = None
    """Absolute path given to the job as RIGDECK_RESUME_FROM."""


def plan_launch(
    spec: JobSpec,
    job_id: str,
    *,
    workdir: str | None = None,
    job_dir: str | None = None,
    resume_from: str | None = None,
) -> Launch:
    """The launch of ``spec`` as job ``job_id``. ``resume_from`` relative to the workdir."""
    if not _JOB_ID.match(job_id):
        raise JobRunnerError(f"job id {job_id!r}: use letters, digits, '.', '_' or '-'")
    work = workdir or spec.run.remote_dir
    if resume_from is not None and not posixpath.isabs(resume_from):
        resume_from = posixpath.join(work, resume_from)
    return Launch(
        job_id=job_id,
        name=spec.name,
        workdir=work,
        paths=JobPaths(job_dir or default_job_dir(spec.run.remote_dir, job_id)),
        command=spec.run.command,
        setup=spec.run.setup,
        env=dict(spec.run.env),
        nproc=spec.run.nproc,
        resume_from=resume_from,
    )


def job_environment(launch: Launch) -> dict[str, str]:
    """The fixed part of the job's environment (the GPU count is added on the target)."""
    env = {"PYTHONUNBUFFERED": "1", **(launch.env or {})}
    env.update(
        RIGDECK_JOB=launch.job_id,
        RIGDECK_NAME=launch.name,
        RIGDECK_WORKDIR=launch.workdir,
        RIGDECK_JOB_DIR=launch.paths.job_dir,
    )
    if launch.resume_from:
        env["RIGDECK_RESUME_FROM"] = launch.resume_from
    return env


def _heredoc(path: str, body: str) -> str:
    text = body if body.endswith("\n") else body + "\n"
    tag = "RIGDECK_EOF_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    while tag in text.splitlines():
        tag += "_"
    fail = shlex.quote(f"{_LAUNCH_TAG} failed cannot write {path}")
    return f"cat > {shlex.quote(path)} <<'{tag}' || {{ echo {fail}; exit 0; }}\n{text}{tag}\n"


def run_script(launch: Launch) -> str:
    """The job body: what runs detached. Writes its pid first and its exit code last."""
    q = shlex.quote
    d = launch.paths.job_dir
    lines = [
        "#!/bin/sh",
        f"# rigdeck job {launch.job_id}",
        f"D={q(d)}",
        'echo "$$" > "$D/job.pid.tmp" && mv -f "$D/job.pid.tmp" "$D/job.pid"',
        "finish() {",
        '  printf \'%s\\n\' "$1" > "$D/job.exit.tmp" && mv -f "$D/job.exit.tmp" "$D/job.exit"',
        '  exit "$1"',
        "}",
        # The command shares our process group and gets the same signal; what we record is
        # its own exit code, so a script that saves a checkpoint on SIGTERM and exits 0 reads 0.
        "trap 'rigdeck_signal=1' TERM INT",
        f"cd {q(launch.workdir)} || {{ echo {q('[rigdeck] cannot enter ' + launch.workdir)}; "
        "finish 126; }",
        "if command -v timeout >/dev/null 2>&1; then",
        "  RIGDECK_NUM_GPUS=$(timeout 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU ')",
        "else",
        "  RIGDECK_NUM_GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')",
        "fi",
        'case "$RIGDECK_NUM_GPUS" in ""|*[!0-9]*) RIGDECK_NUM_GPUS=0 ;; esac',
    ]
    if launch.nproc is not None:
        lines.append(f"RIGDECK_NPROC={int(launch.nproc)}")
    else:
        lines.append(
            'if [ "$RIGDECK_NUM_GPUS" -gt 0 ]; then RIGDECK_NPROC=$RIGDECK_NUM_GPUS; '
            "else RIGDECK_NPROC=1; fi"
        )
    lines.append("export RIGDECK_NUM_GPUS RIGDECK_NPROC")
    lines += [f"export {k}={q(v)}" for k, v in job_environment(launch).items()]
    lines.append(
        f'echo "[rigdeck] job {launch.job_id}: $RIGDECK_NUM_GPUS GPU(s), '
        f'{{nproc}}=$RIGDECK_NPROC, in $RIGDECK_WORKDIR"'
    )
    if launch.setup.strip():
        lines += [
            'echo setup > "$D/job.phase"',
            'sh "$D/setup.sh"',
            "rc=$?",
            'if [ "$rc" -ne 0 ]; then',
            '  echo "[rigdeck] setup failed (exit code $rc)"; finish "$rc"',
            "fi",
        ]
    lines += [
        'echo command > "$D/job.phase"',
        'sh "$D/command.sh"',
        "rc=$?",
        'echo "[rigdeck] command ended (exit code $rc)"',
        'finish "$rc"',
    ]
    return "\n".join(lines) + "\n"


def launch_script(launch: Launch) -> str:
    """Start the job once; prints ``rigdeck-launch <outcome> <value>`` (see `parse_launch`)."""
    d = launch.paths.job_dir
    files = [
        _heredoc(posixpath.join(d, "command.sh"), render_command(launch.command, SHELL_VALUES))
    ]
    if launch.setup.strip():
        files.append(
            _heredoc(posixpath.join(d, "setup.sh"), render_command(launch.setup, SHELL_VALUES))
        )
    files.append(_heredoc(launch.paths.run_script, run_script(launch)))
    t = _LAUNCH_TAG
    return (
        f"D={shlex.quote(d)}\n"
        + _ALIVE_FN
        + f'mkdir -p "$D" || {{ echo "{t} failed cannot create $D"; exit 0; }}\n'
        # mkdir is atomic: of two starts racing on one folder, exactly one goes on.
        'if ! mkdir "$D/started" 2>/dev/null; then\n'
        f'  if [ -s "$D/job.exit" ]; then echo "{t} finished $(cat "$D/job.exit")"; exit 0; fi\n'
        '  pid=$(cat "$D/job.pid" 2>/dev/null)\n'
        f'  if [ -z "$pid" ]; then echo "{t} running 0"; exit 0; fi\n'
        f'  if rigdeck_alive "$pid"; then echo "{t} running $pid"\n'
        f'  else echo "{t} lost $pid"; fi\n'
        "  exit 0\n"
        "fi\n" + "".join(files) + "if command -v setsid >/dev/null 2>&1; then\n"
        '  setsid nohup sh "$D/run.sh" >> "$D/job.log" 2>&1 < /dev/null &\n'
        "else\n"
        '  nohup sh "$D/run.sh" >> "$D/job.log" 2>&1 < /dev/null &\n'
        "fi\n"
        "i=0\n"
        'while [ ! -s "$D/job.pid" ] && [ "$i" -lt 300 ]; do\n'
        "  sleep 0.05 2>/dev/null || sleep 1\n"
        "  i=$((i + 1))\n"
        "done\n"
        f'if [ -s "$D/job.pid" ]; then echo "{t} started $(cat "$D/job.pid")"; '
        f'else echo "{t} failed the job wrote no pid file"; fi\n'
    )


@dataclass(frozen=True)
class LaunchResult:
    outcome: LaunchOutcome
    """started: now; running: it already was (a repeated start); finished / lost: it ran before."""
    pid: int | None
    exit_code: int | None = None


def parse_launch(output: str) -> LaunchResult:
    """Read what `launch_script` printed."""
    for line in output.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) < 3 or parts[0] != _LAUNCH_TAG:
            continue
        outcome, value = parts[1], parts[2].strip()
        if outcome == "failed":
            raise JobRunnerError(f"the job did not start: {value}")
        if outcome in ("started", "running", "lost") and value.isdigit():
            return LaunchResult(outcome, int(value) or None)  # type: ignore[arg-type]
        if outcome == "finished" and value.lstrip("-").isdigit():
            return LaunchResult("finished", None, int(value))
    raise JobRunnerError(f"the start script gave no answer: {output.strip()[-200:] or 'nothing'}")


@dataclass(frozen=True)
class JobStatus:
    phase: JobPhase
    """missing: no such job folder; starting: no pid yet; setup/running: alive; exited: ended
    (exit_code); lost: its process is gone without an exit code (killed, machine restarted)."""
    pid: int | None
    exit_code: int | None
    log_bytes: int

    @property
    def ended(self) -> bool:
        return self.phase in ("exited", "lost")


def status_script(paths: JobPaths) -> str:
    """Report pid, liveness, exit code, phase and log size as ``key=value`` lines."""
    return (
        f"D={shlex.quote(paths.job_dir)}\n" + _ALIVE_FN + f"echo '{_STATUS_HEADER}'\n"
        'if [ ! -d "$D" ]; then echo dir=0; exit 0; fi\n'
        "echo dir=1\n"
        'pid=$(cat "$D/job.pid" 2>/dev/null)\n'
        'echo "pid=$pid"\n'
        'echo "phase=$(cat "$D/job.phase" 2>/dev/null)"\n'
        "alive=0\n"
        'if [ -n "$pid" ] && rigdeck_alive "$pid"; then alive=1; fi\n'
        'echo "alive=$alive"\n'
        # Read after the liveness check: the job writes its exit code before it exits, so a
        # job found dead here has its code on disk now, or was killed before it could write.
        'echo "exit=$(cat "$D/job.exit" 2>/dev/null)"\n'
        # The log's size last: the exit code is written after the job's last log line, so a
        # probe that reads an exit code also reads the final size, and a follower that stops at
        # that size has every line.
        'echo "log=$(wc -c < "$D/job.log" 2>/dev/null | tr -d \' \')"\n'
    )


def parse_status(output: str) -> JobStatus:
    """Read what `status_script` printed."""
    lines = output.splitlines()
    if _STATUS_HEADER not in (line.strip() for line in lines):
        raise JobRunnerError(
            f"the status probe gave no answer: {output.strip()[-200:] or 'nothing'}"
        )
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    if values.get("dir") != "1":
        return JobStatus("missing", None, None, 0)
    pid = int(values["pid"]) if values.get("pid", "").isdigit() else None
    raw_exit = values.get("exit", "")
    exit_code = int(raw_exit) if raw_exit.lstrip("-").isdigit() else None
    log_bytes = int(values["log"]) if values.get("log", "").isdigit() else 0
    if exit_code is not None:
        phase: JobPhase = "exited"
    elif values.get("alive") == "1":
        phase = "setup" if values.get("phase") == "setup" else "running"
    elif pid is not None:
        phase = "lost"
    else:
        phase = "starting"
    return JobStatus(phase, pid, exit_code, log_bytes)


def log_read_script(paths: JobPaths, offset: int, limit: int) -> str:
    """Print up to ``limit`` bytes of the log from byte ``offset`` (nothing past its end)."""
    if offset < 0 or limit <= 0:
        raise ValueError("offset must be >= 0 and limit > 0")
    return f"tail -c +{offset + 1} {shlex.quote(paths.log)} 2>/dev/null | head -c {int(limit)}\n"


def stop_script(paths: JobPaths, grace_s: float = 10.0) -> str:
    """SIGTERM the job's process group, SIGKILL it after ``grace_s``; prints its exit code.

    A job killed outright cannot write its exit code, so this script writes 137 for it.
    """
    ticks = max(1, int(grace_s * 10))
    return (
        f"D={shlex.quote(paths.job_dir)}\n" + _ALIVE_FN + 'pid=$(cat "$D/job.pid" 2>/dev/null)\n'
        'if [ -z "$pid" ] || [ -s "$D/job.exit" ]; then\n'
        '  echo "stopped $(cat "$D/job.exit" 2>/dev/null)"; exit 0\n'
        "fi\n"
        'kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null\n'
        "i=0\n"
        f'while [ ! -s "$D/job.exit" ] && rigdeck_alive "$pid" && [ "$i" -lt {ticks} ]; do\n'
        "  sleep 0.1 2>/dev/null || sleep 1\n"
        "  i=$((i + 1))\n"
        "done\n"
        'if [ ! -s "$D/job.exit" ]; then\n'
        '  kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null\n'
        '  echo 137 > "$D/job.exit.tmp" && mv -f "$D/job.exit.tmp" "$D/job.exit"\n'
        "fi\n"
        'echo "stopped $(cat "$D/job.exit")"\n'
    )


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class ShellRunner(Protocol):
    """Runs a script with ``sh -s`` on the job's machine (this one, or an instance over SSH)."""

    def run_script(self, script: str, *, timeout_s: float) -> ShellResult: ...


def _checked(result: ShellResult, what: str) -> str:
    if result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise JobRunnerError(f"{what} failed (exit {result.returncode}): {err[-1] if err else ''}")
    return result.stdout.decode("utf-8", "replace")


def start_job(runner: ShellRunner, launch: Launch, *, timeout_s: float = 60.0) -> LaunchResult:
    """Start ``launch`` on ``runner``'s machine; a repeated call reports the first start."""
    return parse_launch(
        _checked(runner.run_script(launch_script(launch), timeout_s=timeout_s), "start")
    )


def probe_job(runner: ShellRunner, paths: JobPaths, *, timeout_s: float = 30.0) -> JobStatus:
    return parse_status(
        _checked(runner.run_script(status_script(paths), timeout_s=timeout_s), "probe")
    )


def read_log(
    runner: ShellRunner,
    paths: JobPaths,
    offset: int,
    limit: int = 1 << 20,
    *,
    timeout_s: float = 30.0,
) -> bytes:
    """Up to ``limit`` log bytes from ``offset``; b"" when nothing new has been written."""
    result = runner.run_script(log_read_script(paths, offset, limit), timeout_s=timeout_s)
    _checked(result, "log read")
    return result.stdout


def stop_job(runner: ShellRunner, paths: JobPaths, *, grace_s: float = 10.0) -> int | None:
    """Stop the job (TERM, then KILL after ``grace_s``); its exit code."""
    out = _checked(
        runner.run_script(stop_script(paths, grace_s), timeout_s=grace_s + 30), "stop"
    ).strip()
    value = out.rpartition(" ")[2]
    return int(value) if value.lstrip("-").isdigit() else None


class LocalTarget:
    """This machine as a job target (``--local``): the same scripts, run with ``sh -s``.

    Job folders live in ``jobs_root`` (default ``data_dir()/jobs``); the command runs in the
    spec's own folder, so its outputs land where the user keeps the spec.
    """

    name = "local"

    def __init__(
        self, jobs_root: Path | None = None, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.jobs_root = jobs_root if jobs_root is not None else data_dir() / "jobs"
        self.env = dict(os.environ if env is None else env)

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths(str(self.jobs_root / job_id))

    def plan(self, spec: JobSpec, job_id: str, *, resume_from: str | None = None) -> Launch:
        return plan_launch(
            spec,
            job_id,
            workdir=str(spec.root),
            job_dir=self.paths(job_id).job_dir,
            resume_from=resume_from,
        )

    def run_script(self, script: str, *, timeout_s: float) -> ShellResult:
        try:
            done = subprocess.run(
                ["sh", "-s"],
                input=script.encode("utf-8"),
                capture_output=True,
                timeout=timeout_s,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise JobRunnerError(f"a job script ran past {timeout_s:g} s on this machine") from None
        except OSError as exc:
            raise JobRunnerError(f"cannot run sh on this machine: {exc.strerror or exc}") from None
        return ShellResult(done.returncode, done.stdout, done.stderr)

    def start(self, launch: Launch) -> LaunchResult:
        return start_job(self, launch)

    def status(self, paths: JobPaths) -> JobStatus:
        return probe_job(self, paths)

    def read_log(self, paths: JobPaths, offset: int, limit: int = 1 << 20) -> bytes:
        """Read the log file directly: same bytes as `read_log` over the script, no process."""
        try:
            with open(paths.log, "rb") as fh:
                fh.seek(offset)
                return fh.read(limit)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise JobRunnerError(f"cannot read {paths.log}: {exc.strerror or exc}") from None

    def stop(self, paths: JobPaths, *, grace_s: float = 10.0) -> int | None:
        return stop_job(self, paths, grace_s=grace_s)
