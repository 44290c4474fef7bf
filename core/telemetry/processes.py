"""Signals to processes the user picked, with the refusals said plainly."""

from __future__ import annotations

import os
import signal

import psutil

from rigdeck.core.errors import ProcessActionError

SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


def send_signal(pid: int, name: str, *, read_only: bool = False) -> str:
    """Send SIGTERM or SIGKILL to ``pid``; return a one-line confirmation.

    Refuses in read-only mode, for rigdeck itself, for pid 1, and where the OS says no.
    """
    if name not in SIGNALS:
        raise ProcessActionError(f"unknown signal {name!r}: use TERM or KILL")
    if read_only:
        raise ProcessActionError("read-only mode: signals are disabled (telemetry.read_only)")
    if pid in (0, 1):
        raise ProcessActionError(f"refusing to signal pid {pid}")
    if pid == os.getpid():
        raise ProcessActionError("refusing to signal rigdeck itself; press q to quit")
    try:
        proc = psutil.Process(pid)
        label = proc.name()
        proc.send_signal(SIGNALS[name])
    except psutil.NoSuchProcess:
        raise ProcessActionError(f"pid {pid} is gone already") from None
    except psutil.AccessDenied:
        raise ProcessActionError(
            f"not allowed to signal pid {pid}: it belongs to another user (try sudo)"
        ) from None
    return f"sent SIG{name} to pid {pid} ({label})"
