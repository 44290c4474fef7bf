"""Artifacts: pull a job's outputs, then prove each file arrived whole (sha256 here and there).

Also decides which checkpoints a resume may trust: one whose marker file exists (the script
writes it last), or whose files kept the same sizes between two looks.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.cloud.ssh import SshTarget
from rigdeck.core.cloud.sync import ProgressCallback, pull
from rigdeck.core.cloud.target import Target

DEFAULT_MARKERS: tuple[str, ...] = ("COMPLETE", ".complete", "DONE", ".done")

# Used where the instance has no sha256sum: prints the same "<hex>  <path>" lines.
_PY_SHA256 = r"""
import hashlib, os, sys
for top in sys.argv[1:]:
    paths = [top] if os.path.isfile(top) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)
    for p in paths:
        if not os.path.isfile(p) or p.endswith('.partial'):
            continue
        h = hashlib.sha256()
        with open(p, 'rb') as fh:
            for block in iter(lambda: fh.read(1 << 20), b''):
                h.update(block)
        sys.stdout.write(h.hexdigest() + '  ' + p + '\n')
"""


class ArtifactError(CloudError):
    """Artifacts could not be listed, pulled or checked; the message says which."""


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    """Relative to the job's folder there and the artifacts folder here (POSIX separators)."""
    bytes: int
    """Size of the local copy (0 when it is missing)."""
    sha256: str
    """The hash computed here (empty when the local copy is missing)."""
    verified: bool
    """The local copy's hash equals the instance's."""
    remote_sha256: str = ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def remote_sha256(target: Target, job_dir: str, paths: Sequence[str]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders, relative to ``job_dir``)."""
    if not paths:
        return {}
    quoted = " ".join(shlex.quote(p.rstrip("/") or ".") for p in paths)
    cd = f"cd {shlex.quote(job_dir)} &&"
    command = (
        f"{cd} find {quoted} -type f ! -name '*.partial' -print0 | xargs -0 -r sha256sum --"
        if target.run("command -v sha256sum >/dev/null", timeout_s=30).ok
        else f"{cd} python3 -c {shlex.quote(_PY_SHA256)} {quoted}"
    )
    result = target.run(command, timeout_s=3600, max_output_bytes=64 * 1024 * 1024)
    if not result.ok:
        raise ArtifactError(
            f"cannot hash artifacts in {job_dir}: "
            f"{result.stderr.decode('utf-8', 'replace').strip() or f'exit {result.exit_code}'}"
        )
    hashes: dict[str, str] = {}
    for line in result.text.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and len(digest) == 64:
            hashes[posixpath.normpath(path)] = digest
    return hashes


def verify_artifacts(
    target: Target, job_dir: str, paths: Sequence[str], local_dir: Path
) -> list[ArtifactFile]:
    """Compare every remote file under ``paths`` with its copy in ``local_dir``."""
    out = []
    for rel, digest in sorted(remote_sha256(target, job_dir, paths).items()):
        local = local_dir / rel
        here = sha256_file(local) if local.is_file() else ""
        size = local.stat().st_size if local.is_file() else 0
        out.append(ArtifactFile(rel, size, here, here == digest, digest))
    return out


def pull_artifacts(
    target: SshTarget,
    job_dir: str,
    paths: Sequence[str],
    local_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
) -> list[ArtifactFile]:
    """Pull ``paths`` (relative to ``job_dir``; a trailing / marks a folder) into ``local_dir``,
    keeping their relative layout, then verify each file by sha256."""
    for rel in paths:
        clean = posixpath.normpath(rel.rstrip("/"))
        if clean.startswith("..") or posixpath.isabs(clean):
            raise ArtifactError(f"artifact path {rel!r} leaves the job folder")
        source = posixpath.join(job_dir, clean)
        if target.file_size(source) is None and not _is_dir(target, source):
            continue  # a listed artifact the job never wrote: verify_artifacts omits it too
        if rel.endswith("/") or _is_dir(target, source):
            pull(target, source + "/", local_dir / clean, on_progress=on_progress)
        else:
            pull(target, source, (local_dir / clean).parent, on_progress=on_progress)
    return verify_artifacts(target, job_dir, [p for p in paths if p], local_dir)


def _is_dir(target: Target, path: str) -> bool:
    return target.run(f"test -d {shlex.quote(path)}", timeout_s=30).ok


@dataclass(frozen=True)
class Checkpoint:
    path: str
    """Relative to the checkpoint folder: a file, or a folder of files."""
    bytes: int
    mtime: float
    complete_by: Literal["marker", "stable"]


class CheckpointWatch:
    """Which checkpoints are complete, judged across successive looks at the folder.

    Only complete checkpoints count as resume points: one holding a marker file (written last by
    the script), or one whose files all kept their sizes since the previous look.
    """

    def __init__(
        self, target: Target, checkpoint_dir: str, markers: Sequence[str] = DEFAULT_MARKERS
    ) -> None:
        self.target = target
        self.checkpoint_dir = checkpoint_dir
        self.markers = frozenset(markers)
        self._previous: dict[str, tuple[tuple[str, int], ...]] = {}

    def look(self) -> list[Checkpoint]:
        """The complete checkpoints now, newest first."""
        result = self.target.run(
            f"find {shlex.quote(self.checkpoint_dir)} -mindepth 1 -type f "
            "-printf '%s\\t%T@\\t%P\\n'",
            timeout_s=60,
            max_output_bytes=16 * 1024 * 1024,
        )
        groups: dict[str, list[tuple[str, int, float]]] = {}
        if result.ok:
            for line in result.text.splitlines():
                size, mtime, rel = line.split("\t", 2)
                top = rel.split("/", 1)[0]
                groups.setdefault(top, []).append((rel, int(size), float(mtime)))
        complete = []
        current: dict[str, tuple[tuple[str, int], ...]] = {}
        for top, files in groups.items():
            shape = tuple(sorted((rel, size) for rel, size, _ in files))
            current[top] = shape
            names = {posixpath.basename(rel) for rel, _, _ in files if "/" in rel}
            total = sum(size for _, size, _ in files)
            newest = max(mtime for _, _, mtime in files)
            if names & self.markers:
                complete.append(Checkpoint(top, total, newest, "marker"))
            elif self._previous.get(top) == shape and total > 0:
                complete.append(Checkpoint(top, total, newest, "stable"))
        self._previous = current
        return sorted(complete, key=lambda c: c.mtime, reverse=True)

    def latest(self) -> Checkpoint | None:
        found = self.look()
        return found[0] if found else None
