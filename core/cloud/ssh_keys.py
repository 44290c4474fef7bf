"""The user's SSH key pair for rented machines: made once by rigdeck, private half 0600.

The public key text is what the provider registers and attaches to an instance; the private key
stays in a file only the owner can read and is never returned as text, so it cannot reach a log.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rigdeck.core.config import config_dir
from rigdeck.core.errors import RigdeckError
from rigdeck.core.secrets import read_secret_file, write_secret_file

KEY_NAME = "id_ed25519"
KEY_COMMENT = "rigdeck"


class SshKeyError(RigdeckError):
    """The key pair could not be made or read; the message names the file."""


@dataclass(frozen=True)
class SshKeyPair:
    """Where the private key lives and the public key text (safe to show and to send)."""

    private_key_path: Path
    public_key: str
    """One OpenSSH line: ``ssh-ed25519 AAAA... rigdeck``."""

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it, for the user to compare."""
        blob = base64.b64decode(self.public_key.split()[1])
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"


def default_key_dir() -> Path:
    return config_dir() / "ssh"


def ensure_key_pair(directory: Path | None = None) -> SshKeyPair:
    """The user's key pair, made on first use (ed25519, private key 0600, folder 0700)."""
    folder = default_key_dir() if directory is None else directory
    private = folder / KEY_NAME
    public = folder / f"{KEY_NAME}.pub"
    if not private.exists():
        _generate(private, public)
    # read_secret_file refuses a key others can read: ssh would refuse it too, and it may leak.
    secret = read_secret_file(private)
    if secret is None:
        raise SshKeyError(f"{private} is empty; delete it and rigdeck makes a new key pair")
    try:
        key = serialization.load_ssh_private_key(secret.reveal().encode(), password=None)
    except (ValueError, TypeError):
        raise SshKeyError(
            f"{private} is not an unencrypted OpenSSH private key; move it away and rigdeck "
            "makes a new key pair"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SshKeyError(f"{private} is not an ed25519 key; move it away to make a new one")
    text = _public_line(key)
    if not public.exists() or public.read_text(encoding="utf-8").strip() != text:
        public.write_text(text + "\n", encoding="utf-8")
    return SshKeyPair(private_key_path=private, public_key=text)


def _generate(private: Path, public: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private.parent.chmod(0o700)
    write_secret_file(private, pem)
    public.write_text(_public_line(key) + "\n", encoding="utf-8")


def _public_line(key: Ed25519PrivateKey) -> str:
    blob = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{blob.decode()} {KEY_COMMENT}"
