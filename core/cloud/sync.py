"""Files between here and an instance: rsync over the pinned SSH, SFTP when rsync is missing.

A push honours excludes and ``.gitignore`` files (rsync's per-directory merge, so nested ones
count), keeps partial files so a cut link resumes where it stopped, and reports progress as rsync
prints it. Unchanged files are skipped (size and mtime), so a repeated sync is quick. Instances
without rsync get the same file list (rsync here still decides it) sent over SFTP.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.cloud.ssh import SshTarget
from rigdeck.core.cloud.sync_sftp import sftp_plan, sftp_pull, sftp_push

DEFAULT_EXCLUDES: tuple[str, ...] = (".git", "__pycache__", ".venv")
RSYNC_TIMEOUT_S = 60
"""rsync gives up on a link silent this long (a cut link must not hang a sync forever)."""

Method = Literal["rsync", "sftp"]


class SyncError(CloudError):
    """A sync failed; the message says how to go on."""


class SyncInterrupted(SyncError):
    """The link dropped mid-sync; running the same sync again resumes it."""


@dataclass(frozen=True)
class SyncSummary:
    """What a sync would move: files and their bytes (before compression or delta)."""

    files: int
    bytes: int


@dataclass(frozen=True)
class SyncProgress:
    bytes_done: int
    percent: int
    rate_bytes_per_s: float
    """The rate rsync shows (SFTP: measured here)."""
    elapsed_s: float


@dataclass(frozen=True)
class SyncResult:
    method: Method
    files: int
    """Files sent (skipped unchanged ones not counted)."""
    bytes: int
    """Size of the files sent."""
    literal_bytes: int
    """File data that actually crossed the link (less than ``bytes`` when a partial resumed)."""
    elapsed_s: float


ProgressCallback = Callable[[SyncProgress], None]

_PROGRESS = re.compile(rb"^\s*([\d,.]+)\s+(\d+)%\s+([\d.]+)([kMGT]?B)/s")
_RATE_UNITS = {b"B": 1, b"kB": 1000, b"MB": 1000**2, b"GB": 1000**3, b"TB": 1000**4}


def rsync_available() -> bool:
    return shutil.which("rsync") is not None


def _require_local_rsync() -> str:
    path = shutil.which("rsync")
    if path is None:
        raise SyncError("rsync is not installed here; install it (apt-get install rsync)")
    return path


def filter_args(excludes: Sequence[str], gitignore: bool) -> list[str]:
    args = [f"--exclude={pattern}" for pattern in excludes]
    if gitignore:
        # ':-' merges each folder's .gitignore as exclude rules for that folder and below.
        args.append("--filter=:- .gitignore")
    return args


def _source_arg(local: Path) -> str:
    # A trailing slash sends a folder's contents into the destination, not the folder itself.
    return f"{local}/" if local.is_dir() else str(local)


def _remote(target: SshTarget, path: str) -> str:
    e = target.endpoint
    return f"{e.user}@{e.host}:{path}"


def _ssh_e(target: SshTarget) -> str:
    return shlex.join(["ssh", *target.ssh_options(batch=True)])


def _rsync_base(target: SshTarget, *, bwlimit_kbps: int | None, compress: bool) -> list[str]:
    args = [
        _require_local_rsync(),
        "-rlpt",  # not owner/group: the instance's users are not ours
        "--partial",
        f"--timeout={RSYNC_TIMEOUT_S}",
        "--stats",
        "-e",
        _ssh_e(target),
    ]
    if compress:
        args.append("-z")
    if bwlimit_kbps:
        args.append(f"--bwlimit={bwlimit_kbps}")
    return args


def remote_has_rsync(target: SshTarget) -> bool:
    return target.has_command("rsync")


def _prepare(target: SshTarget, make_dir: str | None, method: Method | None) -> Method:
    """One round trip: make the destination folder, and find out whether rsync is there."""
    steps = [f"mkdir -p {shlex.quote(make_dir)}"] if make_dir else []
    if method is None:
        steps.append("if command -v rsync >/dev/null 2>&1; then echo rsync; else echo sftp; fi")
    if not steps:
        return method or "rsync"
    result = target.run(" && ".join(steps), timeout_s=30)
    if not result.ok:
        raise SyncError(
            f"cannot make {make_dir} on instance {target.endpoint.instance_id}: "
            f"{result.stderr.decode('utf-8', 'replace').strip() or f'exit {result.exit_code}'}"
        )
    if method is not None:
        return method
    return "sftp" if result.text.strip().endswith("sftp") else "rsync"


def _stat_number(stats: str, label: str) -> int:
    match = re.search(rf"^{re.escape(label)}:\s*([\d,]+)", stats, re.MULTILINE)
    return int(match.group(1).replace(",", "")) if match else 0


def _run_rsync(
    target: SshTarget,
    argv: list[str],
    *,
    doing: str,
    on_progress: ProgressCallback | None,
) -> tuple[str, float]:
    start = time.monotonic()
    # LC_ALL=C: rsync's numbers then use ',' for thousands, which the parsers expect.
    env = {**os.environ, "LC_ALL": "C"}
    # stderr to a file: a chatty stderr must never fill a pipe nobody reads while stdout streams.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errfile, env=env)
        tail, code = _follow(proc, start, on_progress)
        errfile.seek(0)
        err = errfile.read().decode("utf-8", "replace")
    elapsed = time.monotonic() - start
    if code in (0, 24):  # 24: a source file vanished while it was being sent
        return tail, elapsed
    last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
    where = f"instance {target.endpoint.instance_id}"
    if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
        raise SyncError(f"host key for {where} changed: refusing to sync; {doing} stopped")
    if code in (10, 12, 30, 35, 255):
        raise SyncInterrupted(
            f"{doing} {where} was cut (rsync exit {code}: {last}); run it again and it resumes"
        )
    raise SyncError(f"{doing} {where} failed (rsync exit {code}: {last})")


def _follow(
    proc: subprocess.Popen[bytes], start: float, on_progress: ProgressCallback | None
) -> tuple[str, int]:
    """Read rsync's stdout to the end, reporting progress lines; (the output's tail, exit code)."""
    assert proc.stdout is not None
    tail = bytearray()
    pending = b""
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 65536):
        tail.extend(chunk)
        del tail[:-16384]  # --stats is the last thing rsync prints; keep only the end
        if on_progress is None:
            continue
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for line in lines:
            match = _PROGRESS.match(line)
            if match:
                done = int(match.group(1).replace(b",", b"").replace(b".", b""))
                rate = float(match.group(3)) * _RATE_UNITS.get(match.group(4), 1)
                on_progress(SyncProgress(done, int(match.group(2)), rate, time.monotonic() - start))
    return tail.decode("utf-8", "replace"), proc.wait()


def plan_push(
    target: SshTarget,
    local: Path,
    remote_dir: str,
    *,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    gitignore: bool = True,
) -> SyncSummary:
    """What `push` would send now (dry run): the summary to show before the first push."""
    if _prepare(target, None, None) == "sftp":
        files = local_files(local, excludes, gitignore)
        return SyncSummary(*sftp_plan(target, local, remote_dir, files))
    argv = [
        *_rsync_base(target, bwlimit_kbps=None, compress=False),
        "--dry-run",
        *filter_args(excludes, gitignore),
        _source_arg(local),
        _remote(target, remote_dir.rstrip("/") + "/"),
    ]
    stats, _ = _run_rsync(target, argv, doing="planning the sync to", on_progress=None)
    return SyncSummary(
        files=_stat_number(stats, "Number of regular files transferred"),
        bytes=_stat_number(stats, "Total transferred file size"),
    )


def push(
    target: SshTarget,
    local: Path,
    remote_dir: str,
    *,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    gitignore: bool = True,
    on_progress: ProgressCallback | None = None,
    bwlimit_kbps: int | None = None,
    compress: bool = False,
    method: Method | None = None,
) -> SyncResult:
    """Send ``local`` (a folder's contents, or one file) into ``remote_dir`` on the instance.

    ``method`` None: rsync when the instance has it, else SFTP. Raises `SyncInterrupted` when
    the link drops; calling again resumes (partial files are kept).
    """
    if not local.exists():
        raise SyncError(f"{local} does not exist; nothing to sync")
    chosen = _prepare(target, remote_dir, method)
    if chosen == "sftp":
        files = local_files(local, excludes, gitignore)
        start = time.monotonic()
        count, size, literal = sftp_push(
            target, local, remote_dir, files, on_progress, bwlimit_kbps
        )
        return SyncResult("sftp", count, size, literal, time.monotonic() - start)
    argv = [
        *_rsync_base(target, bwlimit_kbps=bwlimit_kbps, compress=compress),
        *filter_args(excludes, gitignore),
        _source_arg(local),
        _remote(target, remote_dir.rstrip("/") + "/"),
    ]
    if on_progress is not None:
        argv.insert(1, "--info=progress2")
    stats, elapsed = _run_rsync(target, argv, doing="sync to", on_progress=on_progress)
    return _result("rsync", stats, elapsed)


def pull(
    target: SshTarget,
    remote_path: str,
    local_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    bwlimit_kbps: int | None = None,
    method: Method | None = None,
) -> SyncResult:
    """Fetch ``remote_path`` (a file, or a folder's contents when it ends in /) into
    ``local_dir``; resumable like `push`."""
    local_dir.mkdir(parents=True, exist_ok=True)
    chosen = _prepare(target, None, method)
    if chosen == "sftp":
        start = time.monotonic()
        count, size, literal = sftp_pull(target, remote_path, local_dir, on_progress, bwlimit_kbps)
        return SyncResult("sftp", count, size, literal, time.monotonic() - start)
    argv = [
        *_rsync_base(target, bwlimit_kbps=bwlimit_kbps, compress=False),
        _remote(target, remote_path),
        f"{local_dir}/",
    ]
    if on_progress is not None:
        argv.insert(1, "--info=progress2")
    stats, elapsed = _run_rsync(target, argv, doing="pulling from", on_progress=on_progress)
    return _result("rsync", stats, elapsed)


def _result(method: Method, stats: str, elapsed: float) -> SyncResult:
    return SyncResult(
        method=method,
        files=_stat_number(stats, "Number of regular files transferred"),
        bytes=_stat_number(stats, "Total transferred file size"),
        literal_bytes=_stat_number(stats, "Literal data"),
        elapsed_s=elapsed,
    )


def local_files(local: Path, excludes: Sequence[str], gitignore: bool) -> list[str]:
    """Relative paths of the regular files a push sends, as rsync's own filter rules decide."""
    if local.is_file():
        return [local.name]
    argv = [
        _require_local_rsync(),
        "-r",
        "--dry-run",
        "--out-format=%n",
        *filter_args(excludes, gitignore),
        f"{local}/",
        os.path.join(os.sep, "nonexistent-rigdeck-sync-target"),
    ]
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode not in (0, 24):
        raise SyncError(f"cannot list {local}: {done.stderr.decode(errors='replace').strip()}")
    names = done.stdout.decode("utf-8", "surrogateescape").splitlines()
    return [n for n in names if n and not n.endswith("/") and (local / n).is_file()]
