"""The Hugging Face Hub for GGUF models: search, list quantizations, read remote headers, download.

Everything here is a plain blocking function meant for a worker thread. It goes through the real
`huggingface_hub` client (its endpoint, its HTTP session, its error types, its cache layout) and
turns every failure into one `HubError` line a user can act on.

- `Hub.search` lists GGUF repos (`HfApi.list_models` with the ``gguf`` filter).
- `Hub.list_files` lists a repo's GGUF files with sizes and LFS sha256, split parts grouped.
- `Hub.open` returns an `HttpRangeSource`: a `gguf.ByteSource` that fetches aligned blocks with
  HTTP range requests, so a header costs a request or three and a few MiB, never the file.
- `Hub.download` fetches a file (all parts of a split) into the normal HF cache with progress,
  resume across calls (the partial blob is kept), sha256 verification and cancel.

The token is held as a `Secret`: it goes into an ``Authorization`` header for the Hub's own origin
only (never to the storage host a file redirects to) and is scrubbed from every message.

The values live in `hub_values`, the range source in `hub_range`, the error wording in
`hub_errors`; this module is the client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    get_session,
    hf_hub_download,
    hf_hub_url,
    hf_raise_for_status,
)
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile

# Public in huggingface_hub.utils (documented there) but not re-exported by name for type checkers.
from huggingface_hub.utils import WeakFileLock, build_hf_headers  # type: ignore[attr-defined]

from rigdeck.core.errors import HubError
from rigdeck.core.models.sources.hub_errors import (
    HubErrors,
    disk_message,
    hub_error,
    offline_message,
)
from rigdeck.core.models.sources.hub_range import (
    HttpRangeSource,
    bearer_auth,
    http_timeout,
    same_origin,
)
from rigdeck.core.models.sources.hub_reach import check_reachable
from rigdeck.core.models.sources.hub_values import (
    Cancelled,
    DownloadProgress,
    HubFile,
    HubFilePart,
    HubRepo,
    ProgressCallback,
    group_files,
)
from rigdeck.core.secrets import Secret, load_hf_token

logger = logging.getLogger(__name__)

__all__ = [
    "Cancelled",
    "DownloadProgress",
    "HttpRangeSource",
    "Hub",
    "HubFile",
    "HubFilePart",
    "HubRepo",
    "ProgressCallback",
    "SearchSort",
    "group_files",
]

MiB = 1024 * 1024
# Progress is reported at most once per this many bytes (and at the end of each part).
_PROGRESS_STEP = 1 * MiB
_RESUME_ATTEMPTS = 5
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

SearchSort = Literal["downloads", "likes", "last_modified", "trending_score", "created_at"]


class Hub:
    """The Hugging Face Hub (or a server speaking its protocol) as rigdeck uses it.

    `endpoint` defaults to ``HF_ENDPOINT`` as set now (huggingface_hub only reads it at import),
    then to huggingface_hub's configured endpoint. `cache_dir` defaults to the HF cache
    (``HF_HUB_CACHE`` / ``HF_HOME``).
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        token: Secret | None = None,
        cache_dir: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        chosen = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        self.endpoint = chosen.rstrip("/")
        self._token = token if token else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.timeout = timeout

    @classmethod
    def from_env(cls, *, endpoint: str | None = None, cache_dir: Path | None = None) -> Hub:
        """A Hub with the user's token (HF_TOKEN or the huggingface_hub login), if any."""
        return cls(endpoint=endpoint, token=load_hf_token(), cache_dir=cache_dir)

    def __repr__(self) -> str:
        token = "Secret(***)" if self._token else "None"
        return f"Hub(endpoint={self.endpoint!r}, token={token}, cache_dir={str(self.cache_dir)!r})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    # -- search and listing ---------------------------------------------------------------------

    def search(
        self,
        query: str = "",
        *,
        limit: int = 50,
        sort: SearchSort = "downloads",
        author: str | None = None,
    ) -> list[HubRepo]:
        """GGUF repos whose name contains `query`, most downloaded first."""
        with self._errors(what="search"):
            models = self._api().list_models(
                filter="gguf",
                search=query.strip() or None,
                author=author,
                sort=sort,
                limit=limit,
                token=self._token_arg(),
            )
            return [_repo_from_info(m) for m in models]

    def list_files(self, repo_id: str, *, revision: str = "main") -> list[HubFile]:
        """The GGUF files in a repo, split parts grouped, models before projectors, small first."""
        with self._errors(what=repo_id, repo_id=repo_id, revision=revision):
            entries = self._api().list_repo_tree(
                repo_id, recursive=True, revision=revision, token=self._token_arg()
            )
            files = [
                HubFilePart(e.path, e.size, e.lfs.sha256 if e.lfs else None)
                for e in entries
                if isinstance(e, RepoFile) and e.path.lower().endswith(".gguf")
            ]
        return group_files(repo_id, revision, files)

    # -- remote header --------------------------------------------------------------------------

    def open(
        self,
        repo_id: str,
        filename: str,
        *,
        revision: str = "main",
        cancel: threading.Event | None = None,
        **options: Any,
    ) -> HttpRangeSource:
        """A range source over one remote file; resolving it costs one HEAD request.

        Pass it to `gguf.read_header`. `options` go to `HttpRangeSource` (block sizes).
        """
        location, size, _etag, _commit = self._resolve(repo_id, filename, revision)
        token = self._token if same_origin(location, self.endpoint) else None
        return HttpRangeSource(
            location,
            name=f"hf:{repo_id}/{filename}",
            size=size,
            token=token,
            timeout=self.timeout,
            cancel=cancel,
            **options,
        )

    # -- download -------------------------------------------------------------------------------

    def download(
        self,
        file: HubFile,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Path:
        """Download every part of `file` into the HF cache; returns the first part's path.

        Runs in the calling thread; set `cancel` from another to stop within one chunk (the
        partial download stays and the next call resumes it). A dropped connection resumes
        where it stopped. Each part is checked against its sha256 before it enters the cache.
        """
        if constants.is_offline_mode():
            raise HubError(offline_message())
        if not file.complete:
            raise HubError(
                f"{file.repo_id}/{file.path}: the repo lists only {len(file.parts)} part(s) of "
                "this split model, so it could not be loaded; pick another file"
            )
        total = file.size_bytes
        done = 0
        paths: list[Path] = []
        for index, part in enumerate(file.parts, start=1):

            def report(
                part_done: int, *, _part: HubFilePart = part, _i: int = index, _before: int = done
            ) -> None:
                if progress is not None:
                    progress(
                        DownloadProgress(
                            file.repo_id,
                            _part.path,
                            _i,
                            len(file.parts),
                            _before + part_done,
                            total,
                        )
                    )

            paths.append(self._download_part(file.repo_id, file.revision, part, report, cancel))
            done += part.size
        return paths[0]

    def _download_part(
        self,
        repo_id: str,
        revision: str,
        part: HubFilePart,
        report: Callable[[int], None],
        cancel: threading.Event | None,
    ) -> Path:
        what = f"{repo_id}/{part.path}"
        _check_cancel(cancel, what)
        location, size, etag, commit = self._resolve(repo_id, part.path, revision)
        size = size if size is not None else part.size
        storage = self.cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
        pointer = storage / "snapshots" / commit / Path(*part.path.split("/"))
        blob = storage / "blobs" / etag
        if not pointer.exists() and not blob.exists():
            expected = part.sha256 or (etag if _SHA256_RE.match(etag) else None)
            lock = self.cache_dir / ".locks" / storage.name / f"{etag}.lock"
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                # The same lock hf_hub_download takes, so the two never write one blob at once.
                with WeakFileLock(lock):
                    if not blob.exists():
                        self._fetch_blob(
                            what,
                            location,
                            blob,
                            size,
                            expected,
                            report,
                            cancel,
                            refresh=lambda: self._resolve(repo_id, part.path, commit)[0],
                        )
            except OSError as exc:
                raise HubError(disk_message(exc, self.cache_dir)) from None
        report(size)
        return self._link(repo_id, part.path, revision, commit, storage, pointer)

    def _fetch_blob(
        self,
        what: str,
        location: str,
        blob: Path,
        size: int,
        expected_sha256: str | None,
        report: Callable[[int], None],
        cancel: threading.Event | None,
        refresh: Callable[[], str],
    ) -> None:
        partial = blob.with_name(blob.name + ".incomplete")
        blob.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            partial.unlink()
            have = 0
        _check_space(blob.parent, size - have)
        digest = _hash_file(partial) if have else hashlib.sha256()
        report(have)
        reported = have
        failures = 0
        refreshed = False
        while have < size:
            _check_cancel(cancel, what)
            headers = build_hf_headers(token=False, headers={"Accept-Encoding": "identity"})
            if have:
                headers["Range"] = f"bytes={have}-"
            # The token goes to the Hub's own host only, never to the storage host it redirects to.
            token = self._token if same_origin(location, self.endpoint) else None
            before = have
            try:
                with get_session().stream(
                    "GET",
                    location,
                    headers=headers,
                    auth=bearer_auth(token),
                    timeout=http_timeout(self.timeout),
                ) as response:
                    if (
                        response.status_code in (401, 403, 410)
                        and not refreshed
                        and not same_origin(location, self.endpoint)
                    ):
                        # A signed storage URL may have expired during a long download.
                        refreshed = True
                        location = refresh()
                        continue
                    hf_raise_for_status(response)
                    if have and response.status_code == 200:
                        # The server ignored Range: start over rather than append a second copy.
                        have, digest = 0, hashlib.sha256()
                        partial.unlink(missing_ok=True)
                    with partial.open("ab") as out:
                        # Chunks as they arrive (tens of KiB): a dropped connection loses
                        # nothing already received, and cancel is checked between them.
                        for chunk in response.iter_bytes():
                            if cancel is not None and cancel.is_set():
                                raise Cancelled(
                                    f"download of {what} cancelled; "
                                    f"{have * 100 // max(size, 1)}% kept, downloading again resumes"
                                )
                            out.write(chunk)
                            digest.update(chunk)
                            have += len(chunk)
                            if have - reported >= _PROGRESS_STEP:
                                reported = have
                                report(have)
                if have < size:
                    raise httpx2.RemoteProtocolError("connection closed before the end of the file")
            except (httpx2.TransportError, httpx2.StreamError) as exc:
                # Progress since the last failure means the link works: resume at once. Repeated
                # failures without progress end the download (the partial file stays).
                failures = 0 if have > before else failures + 1
                if failures >= _RESUME_ATTEMPTS:
                    raise hub_error(
                        exc, what=what, token=self._token, endpoint=self.endpoint
                    ) from None
                logger.info("resuming %s at byte %d after: %s", what, have, type(exc).__name__)
                # Back off before retrying a link that made no progress; cancel cuts the wait.
                waiter = cancel if cancel is not None else threading.Event()
                if failures and waiter.wait(min(2.0**failures, 10.0)):
                    raise Cancelled(f"download of {what} cancelled") from None
                continue
            except HubError:
                raise
            except (HfHubHTTPError, OfflineModeIsEnabled) as exc:
                raise hub_error(exc, what=what, token=self._token, endpoint=self.endpoint) from None
            except OSError:
                raise  # the disk, not the network: the caller words it
            except Exception as exc:
                raise hub_error(exc, what=what, token=self._token, endpoint=self.endpoint) from None
        if have != size:
            partial.unlink(missing_ok=True)
            raise HubError(f"{what}: got {have} bytes, expected {size}; try again")
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            partial.unlink(missing_ok=True)
            raise HubError(
                f"{what}: checksum mismatch (sha256 {actual[:12]}…, the Hub says "
                f"{expected_sha256[:12]}…); the corrupt download was deleted, try again"
            )
        os.replace(partial, blob)

    def _link(
        self, repo_id: str, filename: str, revision: str, commit: str, storage: Path, pointer: Path
    ) -> Path:
        """Put the blob into the snapshot tree through huggingface_hub itself, so the cache looks
        exactly as if hf_hub_download had fetched it (symlink or copy, locks, ref files)."""
        if not pointer.exists():
            with self._errors(what=f"{repo_id}/{filename}", repo_id=repo_id, revision=revision):
                linked = hf_hub_download(
                    repo_id,
                    filename,
                    revision=commit,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    token=self._token_arg(),
                )
            pointer = Path(str(linked))
        if revision != commit:
            ref = storage / "refs" / revision
            try:
                ref.parent.mkdir(parents=True, exist_ok=True)
                if not ref.exists() or ref.read_text() != commit:
                    ref.write_text(commit)
            except OSError as exc:
                raise HubError(disk_message(exc, self.cache_dir)) from None
        return pointer

    # -- plumbing -------------------------------------------------------------------------------

    def _resolve(
        self, repo_id: str, filename: str, revision: str
    ) -> tuple[str, int | None, str, str]:
        """HEAD the file: (download location, size, etag, commit), as hf_hub_download sees them."""
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)
        if not url.startswith(self.endpoint + "/"):
            # hf_hub_url swaps in `endpoint` only while its import-time URL template still
            # matches constants.ENDPOINT; if that constant was changed since, build it here.
            url = f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"
        with self._errors(what=f"{repo_id}/{filename}", repo_id=repo_id, revision=revision):
            meta = get_hf_file_metadata(
                url, token=self._token_arg(), timeout=self.timeout, endpoint=self.endpoint
            )
        if meta.commit_hash is None or meta.etag is None:
            raise HubError(
                f"{self.endpoint} did not answer like a Hugging Face Hub for {repo_id}/{filename} "
                "(no commit or ETag header); check HF_ENDPOINT"
            )
        return meta.location, meta.size, meta.etag, meta.commit_hash

    def _api(self) -> HfApi:
        # A fresh client per call keeps the raw token out of any long-lived object we expose.
        return HfApi(endpoint=self.endpoint, token=self._token_arg())

    def _token_arg(self) -> str | Literal[False]:
        # False, not None: without a token of ours, huggingface_hub must not pick one up itself.
        return self._token.reveal() if self._token else False

    def _errors(
        self, *, what: str, repo_id: str | None = None, revision: str | None = None
    ) -> HubErrors:
        if not constants.is_offline_mode():  # offline mode has its own word
            check_reachable(self.endpoint)  # a second, not huggingface_hub's 24 s of retries
        return HubErrors(
            what, token=self._token, endpoint=self.endpoint, repo_id=repo_id, revision=revision
        )


def _repo_from_info(info: Any) -> HubRepo:
    return HubRepo(
        repo_id=info.id,
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        last_modified=info.last_modified or info.created_at,
        gated=bool(info.gated),
        private=bool(info.private),
        tags=tuple(info.tags or ()),
    )


# --- small helpers -----------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def _check_cancel(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"download of {what} cancelled")


def _check_space(folder: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise HubError(
            f"not enough disk space in {folder}: need {needed // MiB} MiB more, "
            f"{free // MiB} MiB free"
        )


def _hash_file(path: Path) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in _iter_file(f):
            digest.update(chunk)
    return digest


def _iter_file(f: Any) -> Iterator[bytes]:
    while chunk := f.read(MiB):
        yield chunk
