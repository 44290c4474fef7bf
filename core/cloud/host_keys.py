"""Host keys pinned per instance: recorded on first contact, refused when they change.

Each instance gets its own known_hosts file (0600) under the data dir, with its key stored under
an alias (``rigdeck-instance-N``) rather than host:port: a provider may move an instance's SSH
endpoint, but the machine's identity is its key. The OpenSSH client reads the same file through
``HostKeyAlias`` with ``StrictHostKeyChecking=yes``, so rsync and ``rigdeck cloud ssh`` check the
very key paramiko pinned.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import paramiko

from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.config import data_dir
from rigdeck.core.secrets import write_secret_file


class HostKeyChanged(CloudError):
    """The instance answered with a key other than the one pinned: possibly someone else."""


def host_alias(instance_id: int) -> str:
    return f"rigdeck-instance-{instance_id}"


def key_fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class HostKeyStore:
    """The folder of pinned host keys: one known_hosts file per instance id.

    ``simulated``: the simulator's instances get a folder of their own, so a simulated id never
    shares a pin with a real rental of the same number.
    """

    def __init__(self, directory: Path | None = None, *, simulated: bool = False) -> None:
        default = "known_hosts-simulated" if simulated else "known_hosts"
        self.directory = (data_dir() / "ssh" / default) if directory is None else directory

    def path(self, instance_id: int) -> Path:
        return self.directory / f"instance-{instance_id}"

    def pinned(self, instance_id: int) -> list[paramiko.PKey]:
        """The keys pinned for the instance (empty before first contact)."""
        path = self.path(instance_id)
        if not path.exists():
            return []
        keys = paramiko.HostKeys(str(path)).lookup(host_alias(instance_id))
        return [] if keys is None else list(keys.values())

    def pin(self, instance_id: int, key: paramiko.PKey) -> None:
        """Record ``key`` as the instance's key; refuses to replace a different one."""
        known = self.pinned(instance_id)
        if any(k == key for k in known):
            return
        if known:
            raise self.changed_error(instance_id, key)
        line = f"{host_alias(instance_id)} {key.get_name()} {key.get_base64()}\n"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_file(self.path(instance_id), line)

    def forget(self, instance_id: int) -> None:
        """Drop the pin (after the instance is destroyed, or when the user trusts a new key)."""
        self.path(instance_id).unlink(missing_ok=True)

    def changed_error(self, instance_id: int, offered: paramiko.PKey) -> HostKeyChanged:
        known = ", ".join(key_fingerprint(k) for k in self.pinned(instance_id)) or "none"
        return HostKeyChanged(
            f"host key for instance {instance_id} changed: refusing to connect; it offered "
            f"{offered.get_name()} {key_fingerprint(offered)}, pinned is {known}; if you know "
            f"the machine was rebuilt, delete {self.path(instance_id)} and connect again"
        )


class PinOnFirstContact(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Accept and pin the key of an instance met for the first time; refuse any other case.

    Paramiko asks this policy only when it holds no key of the offered type for the host. If the
    instance already has a pin (of another type), that is a change, and it is refused.
    """

    def __init__(self, store: HostKeyStore, instance_id: int) -> None:
        self._store = store
        self._instance_id = instance_id

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self._store.pin(self._instance_id, key)  # raises HostKeyChanged when a pin exists
