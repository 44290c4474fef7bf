"""How to reach an instance, and the OpenSSH command lines that reach it with the pin.

rsync's ``-e`` and ``rigdeck cloud ssh`` use these options, so every program that talks to an
instance checks the same pinned host key (`host_keys.py`) and offers only rigdeck's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rigdeck.core.cloud.host_keys import HostKeyStore, host_alias
from rigdeck.core.cloud.ssh_keys import SshKeyPair


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach an instance: its provider id (the identity of its host key) and address."""

    instance_id: int
    host: str
    port: int
    user: str = "root"


def ssh_options(
    endpoint: SshEndpoint, keys: SshKeyPair, store: HostKeyStore, *, batch: bool = True
) -> list[str]:
    """OpenSSH client options that check the pinned key and offer only rigdeck's key.

    ``batch``: no prompts and no user ssh config, for rsync and other programs run unattended.
    """
    opts = [
        "-i",
        str(keys.private_key_path),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={store.path(endpoint.instance_id)}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlias={host_alias(endpoint.instance_id)}",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
        "-p",
        str(endpoint.port),
    ]
    if batch:
        opts = ["-F", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *opts]
    return opts


def interactive_ssh_argv(
    endpoint: SshEndpoint,
    keys: SshKeyPair,
    store: HostKeyStore,
    command: Sequence[str] = (),
) -> list[str]:
    """The ``ssh`` command line ``rigdeck cloud ssh`` runs (pinned key, strict checking)."""
    return ["ssh", *ssh_options(endpoint, keys, store, batch=False), _login(endpoint), *command]


def _login(endpoint: SshEndpoint) -> str:
    return f"{endpoint.user}@{endpoint.host}"
