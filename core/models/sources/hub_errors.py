"""Every failure of a Hub call as one line a user can act on, the token scrubbed from it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from rigdeck.core.errors import HubError
from rigdeck.core.secrets import Secret, redact

logger = logging.getLogger("rigdeck.core.models.sources.hub")


class HubErrors:
    """A ``with`` block that turns anything a Hub call raises into one HubError line."""

    def __init__(
        self,
        what: str,
        *,
        token: Secret | None,
        endpoint: str,
        repo_id: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.what, self.token, self.endpoint = what, token, endpoint
        self.repo_id, self.revision = repo_id, revision

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, HubError) or not isinstance(exc, Exception):
            return False
        raise hub_error(
            exc,
            what=self.what,
            token=self.token,
            endpoint=self.endpoint,
            repo_id=self.repo_id,
            revision=self.revision,
        ) from None


def hub_error(
    exc: BaseException,
    *,
    what: str,
    token: Secret | None,
    endpoint: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> HubError:
    """One actionable line for a failure; the token is scrubbed whatever the text says."""
    logger.debug("hub call failed for %s: %s", what, redact(repr(exc), [token]))
    message = _describe(
        exc,
        what=what,
        has_token=token is not None,
        endpoint=endpoint,
        repo_id=repo_id,
        revision=revision,
    )
    return HubError(redact(message, [token]))


def _describe(
    exc: BaseException,
    *,
    what: str,
    has_token: bool,
    endpoint: str | None,
    repo_id: str | None,
    revision: str | None,
) -> str:
    site = endpoint or constants.ENDPOINT
    login = "set HF_TOKEN or run `hf auth login`"
    if isinstance(exc, OfflineModeIsEnabled):
        return offline_message()
    if isinstance(exc, LocalEntryNotFoundError):
        # hf_hub_download's "not cached and could not fetch": the reason is the cause.
        cause = exc.__cause__
        if cause is not None and cause is not exc:
            return _describe(
                cause,
                what=what,
                has_token=has_token,
                endpoint=endpoint,
                repo_id=repo_id,
                revision=revision,
            )
        return f"cannot reach {site} for {what}; check the connection or HF_ENDPOINT"
    if isinstance(exc, GatedRepoError):
        repo = repo_id or what
        if has_token:
            return (
                f"{repo} is gated and your token has no access yet: accept its terms at "
                f"{site}/{repo}, then try again"
            )
        return f"{repo} is gated: accept its terms at {site}/{repo}, then {login}"
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id or what}: revision {revision or '?'} does not exist"
    if isinstance(exc, EntryNotFoundError):
        return f"{what}: no such file in the repo (at revision {revision or 'main'})"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        server_message = (
            (exc.response.headers.get("X-Error-Message") or "") if exc.response is not None else ""
        )
        if status == 401 and "Invalid credentials" in server_message:
            return f"the Hugging Face token was rejected (401): {login} with a valid token"
        if isinstance(exc, RepositoryNotFoundError):
            hint = "check the name" if has_token else f"check the name, or {login} if it is private"
            return f"{repo_id or what}: repository not found on {site} ({hint})"
        return _status_message(status, what=what, site=site, login=login, has_token=has_token)
    if isinstance(exc, HFValidationError):
        return f"{what}: not a valid repo name ({exc})"
    if isinstance(exc, httpx2.ConnectError):
        return (
            f"cannot reach {site} (connection refused or no network); "
            "check the connection or HF_ENDPOINT"
        )
    if isinstance(exc, httpx2.TimeoutException):
        return f"{site} did not answer in time ({what}); check the connection and try again"
    if isinstance(exc, httpx2.TransportError):
        return f"the connection to {site} broke while fetching {what}; try again"
    if isinstance(exc, httpx2.HTTPError):
        return f"{what}: HTTP error talking to {site}: {type(exc).__name__}"
    if isinstance(exc, OSError) and not isinstance(exc, HfHubHTTPError):
        return disk_message(exc, None)
    return f"{what}: {type(exc).__name__}: {_one_line(str(exc))}"


def _status_message(
    status: int | None, *, what: str, site: str, login: str, has_token: bool
) -> str:
    if status == 401:
        return (
            f"{what}: not authorised (401); {login}"
            if not has_token
            else (f"{what}: the Hub refused the token (401); {login} with a valid token")
        )
    if status == 403:
        return f"{what}: access denied (403); the token lacks permission for this repo"
    if status == 404:
        return f"{what}: not found (404) on {site}"
    if status == 429:
        return f"{site} is rate-limiting requests (429); wait a minute and try again" + (
            "" if has_token else f" ({login} for a higher limit)"
        )
    if status is not None and 500 <= status < 600:
        return f"{site} had a server error ({status}) for {what}; try again later"
    return f"{what}: unexpected answer from {site} (HTTP {status})"


def offline_message() -> str:
    return "offline mode is on (HF_HUB_OFFLINE); unset it to search or download from the Hub"


def disk_message(exc: OSError, cache_dir: Path | None) -> str:
    where = f" in {cache_dir}" if cache_dir is not None else ""
    reason = exc.strerror or type(exc).__name__
    target = f" ({exc.filename})" if exc.filename else ""
    return f"cannot write the download{where}: {reason}{target}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
