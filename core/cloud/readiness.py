"""Wait for a new instance to take SSH commands, phase by phase, failing fast when it cannot.

Phases, in order: the provider scheduled it, it is loading its image, its sshd answers, a shell
command works. Each phase is reported (with the time since the wait began) as it is reached, so
the UI can say where a slow start is stuck. An instance that exits, goes offline, is gone or
carries an error message stops the wait at once: the caller destroys it rather than pay for a
timeout.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rigdeck.core.cloud.host_keys import HostKeyStore
from rigdeck.core.cloud.provider import CloudError, Instance
from rigdeck.core.cloud.ssh import SshAuthRefused, SshEndpoint, SshLinkLost, SshTarget
from rigdeck.core.cloud.ssh_keys import SshKeyPair

Phase = Literal["scheduled", "loading image", "sshd answering", "shell works"]
PHASES: tuple[Phase, ...] = ("scheduled", "loading image", "sshd answering", "shell works")

# Words a provider's status line uses when a start has failed for good (image pull refused,
# daemon error, no such image); progress lines ("Pulling...", "success, running") never hold them.
_ERROR_WORDS = re.compile(
    r"\b(error|failed|failure|unable|cannot|denied|not found|no such|invalid|unauthorized)\b",
    re.IGNORECASE,
)


class InstanceFailed(CloudError):
    """The instance will not become usable (exited, offline, gone, an error from the provider)."""

    def __init__(self, message: str, *, instance_id: int, phase: Phase | None) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.phase = phase


class ReadinessTimeout(CloudError):
    """The instance did not get through its phases in time."""

    def __init__(self, message: str, *, instance_id: int, phase: Phase | None) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.phase = phase


class ReadinessCancelled(ReadinessTimeout):
    """The caller stopped the wait (``cancel`` was set)."""


@dataclass(frozen=True)
class PhaseReached:
    phase: Phase
    elapsed_s: float
    """Seconds since the wait began (monotonic clock)."""
    detail: str = ""
    """The provider's status line or the endpoint, when there is one."""


def sshd_answers(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True when something on host:port greets with an SSH banner."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def failure_of(instance: Instance) -> str | None:
    """Why ``instance`` will not start, or None while it still may."""
    if instance.state in ("exited", "offline"):
        extra = f": {instance.status_message}" if instance.status_message else ""
        return f"instance {instance.id} is {instance.state}{extra}"
    if instance.outbid:
        return f"instance {instance.id} was outbid and stopped before it started"
    if instance.status_message and _ERROR_WORDS.search(instance.status_message):
        return f"instance {instance.id} reports an error: {instance.status_message}"
    return None


def wait_until_ready(
    instance_id: int,
    read_instance: Callable[[int], Instance | None],
    keys: SshKeyPair,
    store: HostKeyStore | None = None,
    *,
    user: str = "root",
    timeout_s: float = 900.0,
    poll_s: float = 5.0,
    on_phase: Callable[[PhaseReached], None] | None = None,
    cancel: threading.Event | None = None,
) -> SshTarget:
    """Poll the instance until a shell command works over SSH; the connected target.

    ``read_instance`` is the provider's ``instance`` (None: gone). Raises `InstanceFailed` at the
    first sign the instance cannot start, `ReadinessTimeout` naming the phase it stalled after,
    and `HostKeyChanged` / `SshAuthRefused` as they come (neither gets better by waiting, except
    a key the provider is still installing, which is retried until the deadline).
    """
    start = time.monotonic()
    deadline = start + timeout_s
    stop = threading.Event() if cancel is None else cancel
    reached: list[Phase] = []

    def mark(phase: Phase, detail: str = "") -> None:
        for earlier in PHASES[: PHASES.index(phase) + 1]:
            if earlier not in reached:
                reached.append(earlier)
                if on_phase is not None:
                    on_phase(PhaseReached(earlier, time.monotonic() - start, detail))

    last_problem = ""
    while True:
        instance = read_instance(instance_id)
        phase = reached[-1] if reached else None
        if instance is None:
            raise InstanceFailed(
                f"instance {instance_id} is gone at the provider",
                instance_id=instance_id,
                phase=phase,
            )
        failure = failure_of(instance)
        if failure is not None:
            raise InstanceFailed(failure, instance_id=instance_id, phase=phase)
        detail = instance.status_message or ""
        mark("scheduled", detail)
        if instance.state in ("loading", "running"):
            mark("loading image", detail)
        if instance.state == "running" and instance.ssh_host and instance.ssh_port:
            endpoint = SshEndpoint(instance_id, instance.ssh_host, instance.ssh_port, user)
            where = f"{endpoint.host}:{endpoint.port}"
            if sshd_answers(endpoint.host, endpoint.port):
                mark("sshd answering", where)
                target = SshTarget(endpoint, keys, store)
                try:
                    result = target.run("echo ok", timeout_s=30)
                    if result.ok and result.text.strip() == "ok":
                        mark("shell works", where)
                        return target
                    last_problem = f"echo ok answered {result.exit_code}"
                except (SshLinkLost, SshAuthRefused) as exc:
                    last_problem = exc.message
                target.close()
            else:
                last_problem = f"nothing answers SSH at {where} yet"
        now = time.monotonic()
        if now >= deadline:
            after = f"after {reached[-1]!r}" if reached else "before it was scheduled"
            extra = f" ({last_problem})" if last_problem else ""
            raise ReadinessTimeout(
                f"instance {instance_id} was not ready within {timeout_s:g} s: stuck {after}"
                f"{extra}; destroy it or wait longer",
                instance_id=instance_id,
                phase=reached[-1] if reached else None,
            )
        if stop.wait(min(poll_s, deadline - now)):
            raise ReadinessCancelled(
                f"waiting for instance {instance_id} was cancelled",
                instance_id=instance_id,
                phase=reached[-1] if reached else None,
            )
