"""The SFTP half of sync, for instances without rsync: same skip and resume rules, slower.

A file is skipped when the other side has it with the same size and mtime (seconds). Data goes
to a partial file named after the source's size and mtime, so a cut transfer resumes from its
length, and a changed source starts over; a finished file is renamed into place.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from rigdeck.core.cloud.ssh import SshError, SshTarget

if TYPE_CHECKING:
    from rigdeck.core.cloud.sync import SyncProgress

CHUNK = 256 * 1024


def _interrupted(target: SshTarget, doing: str, exc: BaseException) -> Exception:
    from rigdeck.core.cloud.sync import SyncError, SyncInterrupted

    where = f"instance {target.endpoint.instance_id}"
    if isinstance(exc, SshError):
        return SyncInterrupted(f"{doing} {where} was cut ({exc.message}); run it again to resume")
    if not target.connected or isinstance(exc, EOFError):
        target.close()
        return SyncInterrupted(f"{doing} {where} was cut ({exc}); run it again and it resumes")
    return SyncError(f"{doing} {where} failed: {exc}")


def _partial_name(path: str, size: int, mtime: int) -> str:
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.{size}-{mtime}.partial")


class _Meter:
    def __init__(self, total: int, on_progress: Callable[[SyncProgress], None] | None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0
        self.on_progress = on_progress

    def throttle(self, sent: int, limit_bytes_per_s: int | None) -> None:
        """Hold back until ``sent`` bytes fit under the limit (rsync's --bwlimit, for SFTP)."""
        if limit_bytes_per_s:
            ahead = sent / limit_bytes_per_s - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)

    def add(self, n: int, *, force: bool = False) -> None:
        from rigdeck.core.cloud.sync import SyncProgress

        self.done += n
        now = time.monotonic()
        if self.on_progress is None or (now - self.last < 0.1 and not force):
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self.on_progress(
            SyncProgress(self.done, min(100, self.done * 100 // self.total), rate, elapsed)
        )


def _remote_stat(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def _same(remote: paramiko.SFTPAttributes | None, size: int, mtime: int) -> bool:
    return remote is not None and remote.st_size == size and int(remote.st_mtime or 0) == mtime


def _makedirs(sftp: paramiko.SFTPClient, directory: str, made: set[str]) -> None:
    if directory in made or directory in ("", "/", "."):
        return
    if _remote_stat(sftp, directory) is None:
        _makedirs(sftp, posixpath.dirname(directory), made)
        try:
            sftp.mkdir(directory)
        except OSError:
            if _remote_stat(sftp, directory) is None:
                raise
    made.add(directory)


def _pairs(local: Path, remote_dir: str, files: Sequence[str]) -> Iterator[tuple[Path, str]]:
    for rel in files:
        src = local if local.is_file() else local / rel
        yield src, posixpath.join(remote_dir, rel)


def sftp_plan(
    target: SshTarget, local: Path, remote_dir: str, files: Sequence[str]
) -> tuple[int, int]:
    """(files, bytes) a push over SFTP would send now."""
    try:
        sftp = target.sftp()
        count = size = 0
        for src, dst in _pairs(local, remote_dir, files):
            st = src.stat()
            if not _same(_remote_stat(sftp, dst), st.st_size, int(st.st_mtime)):
                count += 1
                size += st.st_size
        return count, size
    except (OSError, EOFError, paramiko.SSHException, SshError) as exc:
        raise _interrupted(target, "planning the sync to", exc) from None


def sftp_push(
    target: SshTarget,
    local: Path,
    remote_dir: str,
    files: Sequence[str],
    on_progress: Callable[[SyncProgress], None] | None,
    bwlimit_kbps: int | None = None,
) -> tuple[int, int, int]:
    """Send ``files`` (relative to ``local``); (files sent, their bytes, bytes that crossed)."""
    try:
        sftp = target.sftp()
        todo = []
        for src, dst in _pairs(local, remote_dir, files):
            st = src.stat()
            if not _same(_remote_stat(sftp, dst), st.st_size, int(st.st_mtime)):
                todo.append((src, dst, st))
        meter = _Meter(sum(st.st_size for _, _, st in todo), on_progress)
        made: set[str] = set()
        literal = 0
        for src, dst, st in todo:
            _makedirs(sftp, posixpath.dirname(dst), made)
            partial = _partial_name(dst, st.st_size, int(st.st_mtime))
            have = _remote_stat(sftp, partial)
            offset = (have.st_size or 0) if have is not None else 0
            if offset > st.st_size:
                offset = 0
            meter.add(offset)
            with src.open("rb") as fin, sftp.open(partial, "ab" if offset else "wb") as fout:
                fout.set_pipelined(True)
                fin.seek(offset)
                while block := fin.read(CHUNK):
                    fout.write(block)
                    literal += len(block)
                    meter.add(len(block))
                    meter.throttle(literal, bwlimit_kbps and bwlimit_kbps * 1024)
            sftp.utime(partial, (int(st.st_atime), int(st.st_mtime)))
            sftp.chmod(partial, stat.S_IMODE(st.st_mode))
            sftp.posix_rename(partial, dst)
        meter.add(0, force=True)
        return len(todo), sum(st.st_size for _, _, st in todo), literal
    except (OSError, EOFError, paramiko.SSHException, SshError) as exc:
        raise _interrupted(target, "sync to", exc) from None


def _remote_walk(
    sftp: paramiko.SFTPClient, root: str, rel: str = ""
) -> Iterator[tuple[str, paramiko.SFTPAttributes]]:
    for attr in sftp.listdir_attr(posixpath.join(root, rel) if rel else root):
        child = posixpath.join(rel, attr.filename) if rel else attr.filename
        mode = attr.st_mode or 0
        if stat.S_ISDIR(mode):
            yield from _remote_walk(sftp, root, child)
        elif stat.S_ISREG(mode) and not attr.filename.endswith(".partial"):
            yield child, attr


def sftp_pull(
    target: SshTarget,
    remote_path: str,
    local_dir: Path,
    on_progress: Callable[[SyncProgress], None] | None,
    bwlimit_kbps: int | None = None,
) -> tuple[int, int, int]:
    """Fetch a remote file, or a folder's contents (path ending in /), into ``local_dir``."""
    try:
        sftp = target.sftp()
        if remote_path.endswith("/"):
            root = remote_path.rstrip("/") or "/"
            entries = [(posixpath.join(root, rel), rel, a) for rel, a in _remote_walk(sftp, root)]
        else:
            attr = sftp.stat(remote_path)
            entries = [(remote_path, posixpath.basename(remote_path), attr)]
        todo = []
        for src, rel, attr in entries:
            dst = local_dir / rel
            size, mtime = attr.st_size or 0, int(attr.st_mtime or 0)
            if dst.is_file() and dst.stat().st_size == size and int(dst.stat().st_mtime) == mtime:
                continue
            todo.append((src, dst, size, mtime, attr.st_mode or 0o644))
        meter = _Meter(sum(t[2] for t in todo), on_progress)
        literal = 0
        for src, dst, size, mtime, mode in todo:
            dst.parent.mkdir(parents=True, exist_ok=True)
            partial = dst.parent / f".{dst.name}.{size}-{mtime}.partial"
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > size:
                offset = 0
            meter.add(offset)
            with sftp.open(src, "rb") as fin, partial.open("ab" if offset else "wb") as fout:
                fin.seek(offset)
                fin.prefetch(size)
                while block := fin.read(CHUNK):
                    fout.write(block)
                    literal += len(block)
                    meter.add(len(block))
                    meter.throttle(literal, bwlimit_kbps and bwlimit_kbps * 1024)
            os.utime(partial, (mtime, mtime))
            partial.chmod(stat.S_IMODE(mode))
            partial.replace(dst)
        meter.add(0, force=True)
        return len(todo), sum(t[2] for t in todo), literal
    except FileNotFoundError:
        from rigdeck.core.cloud.sync import SyncError

        raise SyncError(
            f"{remote_path} does not exist on instance {target.endpoint.instance_id}"
        ) from None
    except (OSError, EOFError, paramiko.SSHException, SshError) as exc:
        raise _interrupted(target, "pulling from", exc) from None
