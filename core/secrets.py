"""Secrets: held in memory as `Secret`, never shown in reprs, logs or error messages.

Sources follow the project precedence (environment first, then a file). Files that hold secrets are
written 0600 and refused when other users can read them.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from rigdeck.core.errors import RigdeckError

REDACTED = "***"

# Token shapes worth scrubbing even when we do not hold the value ourselves (a server echoing a
# header, a token pasted into a URL): Hugging Face tokens and bearer credentials.
_TOKEN_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?!bearer\b)[^\s'\",}]{8,}"),
)


class Secret:
    """A credential whose value is only reachable through `reveal()`.

    `repr`, `str` and `format` print a placeholder, so a Secret dropped into a log line, an
    exception or a dataclass repr cannot leak. Pickling is refused so it never lands on disk by
    accident.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The raw value: pass it straight to the place that needs it, never to a log."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


SecretLike = Secret | str | None


def redact(text: str, secrets: Iterable[SecretLike] = ()) -> str:
    """Return `text` with every known secret value and every token-shaped string replaced."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        # Very short values would blank out ordinary words; real credentials are long.
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from a record's final message.

    Attach it to a handler (or logger) that may see HTTP client logs: the message is formatted
    once, redacted, and the args are dropped so no later formatter re-inserts the raw value.
    """

    def __init__(self, secrets: Iterable[SecretLike] = ()) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not a leak
            return True
        record.msg = redact(message, self._secrets)
        record.args = None
        return True


def write_secret_file(path: Path, value: str | Secret) -> None:
    """Write a secret to `path` with mode 0600, atomically (readers see old or new, never half)."""
    text = value.reveal() if isinstance(value, Secret) else value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 from the start, so there is no window where it is readable.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_secret_file(path: Path) -> Secret | None:
    """Read a secret written by `write_secret_file`; None when the file is absent or empty.

    Refuses a file that group or others can read: the secret may already be exposed, and the
    user should fix the mode (or rotate the key) rather than have it silently used.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RigdeckError(
            f"{path} holds a secret but other users can read it; run: chmod 600 {path}"
        )
    text = path.read_text(encoding="utf-8").strip()
    return Secret(text) if text else None


def load_secret(
    env_var: str, file: Path | None = None, *, env: Mapping[str, str] | None = None
) -> Secret | None:
    """A secret from the environment variable, else from `file` (0600), else None."""
    environ = os.environ if env is None else env
    value = (environ.get(env_var) or "").strip()
    if value:
        return Secret(value)
    return read_secret_file(file) if file is not None else None


def load_hf_token(*, env: Mapping[str, str] | None = None) -> Secret | None:
    """The Hugging Face token: HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the token
    huggingface_hub stored at login (`hf auth login`), else None."""
    environ = os.environ if env is None else env
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = (environ.get(var) or "").strip()
        if value:
            return Secret(value)
    return _token_from_store()


def _token_from_store() -> Secret | None:
    from huggingface_hub import constants

    # Read the file huggingface_hub writes at login directly: its get_token() also tries OIDC and
    # OAuth refresh, which may touch the network; discovering a token must stay local.
    try:
        text = Path(constants.HF_TOKEN_PATH).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    return Secret(text) if text else None
