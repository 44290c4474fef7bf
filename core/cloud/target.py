"""Where a job runs: the few operations the job runner needs from a machine.

One protocol, two machines: this one (a local target) and a rented instance over SSH
(`rigdeck.core.cloud.ssh.SshTarget`), so the job runner is one code path whichever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_OUTPUT_LIMIT = 1024 * 1024
"""Bytes of stdout (and of stderr) a command keeps; the rest is read and dropped."""

DEFAULT_CHUNK = 1024 * 1024
"""Bytes one `read_from` returns at most: a log catching up arrives in bounded steps."""


@dataclass(frozen=True)
class ExecResult:
    """What a command left: its exit code and the first bytes of each stream."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded (invalid bytes replaced), for commands that print a short answer."""
        return self.stdout.decode("utf-8", "replace")


class Target(Protocol):
    """A machine a job runs on. Every call blocks: run it in a worker."""

    def run(
        self,
        command: str,
        *,
        timeout_s: float | None = 60.0,
        stdin: bytes | None = None,
        max_output_bytes: int = DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run a shell command line; its exit code and bounded output."""
        ...

    def read_from(self, path: str, offset: int, max_bytes: int = DEFAULT_CHUNK) -> bytes:
        """Up to ``max_bytes`` of ``path`` starting at byte ``offset``; b"" when none (yet)."""
        ...

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` whole (readers never see half), parents created."""
        ...

    def file_size(self, path: str) -> int | None:
        """Size of ``path`` in bytes; None when it does not exist."""
        ...

    def num_gpus(self) -> int:
        """GPUs the machine sees (0 without nvidia-smi or a driver)."""
        ...

    def close(self) -> None: ...
