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
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
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
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import WeakFileLock, build_hf_headers, get_session, hf_raise_for_status

from rigdeck.core.errors import HubError
from rigdeck.core.models.format.quant_names import (
    group_split_parts,
    is_projector,
    model_stem,
    quant_from_filename,
)
from rigdeck.core.secrets import Secret, load_hf_token, redact

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 1 * MiB
# The first fetch takes two blocks: most model headers (metadata, vocabulary, tensor table) end
# within 2 MiB, so one request usually answers a whole header read.
DEFAULT_FIRST_FETCH = 2 * MiB
DEFAULT_MAX_FETCH = 16 * MiB
# Progress is reported at most once per this many bytes (and at the end of each part).
_PROGRESS_STEP = 1 * MiB
_RESUME_ATTEMPTS = 5
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

SearchSort = Literal["downloads", "likes", "last_modified", "trending_score", "created_at"]


class Cancelled(HubError):
    """The operation was cancelled by the user; what was downloaded so far is kept for resume."""


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubRepo:
    """One search hit: a repo holding GGUF files."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    last_modified: datetime | None = None
    gated: bool = False  # the owner must approve (or terms accepted) before files download
    private: bool = False
    tags: tuple[str, ...] = ()

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]


@dataclass(frozen=True)
class HubFilePart:
    """One file in a repo. `sha256` is the LFS hash when the Hub published one."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class HubFile:
    """A GGUF model in a repo: one file, or all parts of a split (first part first)."""

    repo_id: str
    revision: str
    parts: tuple[HubFilePart, ...]
    quant: str | None = None
    is_projector: bool = False
    complete: bool = True  # False when the listing lacks some split parts

    @property
    def path(self) -> str:
        """The file to open or load: the first part of a split."""
        return self.parts[0].path

    @property
    def name(self) -> str:
        return model_stem(self.path)

    @property
    def size_bytes(self) -> int:
        return sum(p.size for p in self.parts)


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands; bytes count the whole model (every part)."""

    repo_id: str
    file: str  # the part being transferred
    part: int  # 1-based
    part_count: int
    done_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


ProgressCallback = Callable[[DownloadProgress], None]


class _BearerAuth(httpx2.Auth):
    """Adds the token when the request is sent, so no frame of ours holds it in a local (a
    traceback that shows locals must not print it). httpx drops it on cross-origin redirects."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def auth_flow(self, request: httpx2.Request) -> Iterator[httpx2.Request]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


def _auth(token: Secret | None) -> _BearerAuth | None:
    return _BearerAuth(token) if token else None


# --- the range source --------------------------------------------------------------------------


class HttpRangeSource:
    """A `gguf.ByteSource` over HTTP range requests, with a block cache and transfer counters.

    Reads are served from aligned blocks (`block_size`). A miss fetches the missing blocks in one
    request, stretched to at least the current fetch size, which starts at `first_fetch` and
    doubles up to `max_fetch`; the GGUF reader's growing chunks therefore cost a few requests.
    `requests` and `bytes_fetched` say what the reads cost on the wire.

    The token, if any, is sent as ``Authorization`` and appears in no repr or message. A server
    that ignores ``Range`` is read only as far as needed, then the connection is dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        size: int | None = None,
        token: Secret | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        first_fetch: int = DEFAULT_FIRST_FETCH,
        max_fetch: int = DEFAULT_MAX_FETCH,
        timeout: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.name = name
        self._url = url
        self._size = size
        self._token = token
        self._block = block_size
        self._fetch_blocks = max(1, -(-first_fetch // block_size))
        self._max_blocks = max(self._fetch_blocks, max_fetch // block_size)
        self._timeout = timeout
        self._cancel = cancel
        self._blocks: dict[int, bytes] = {}
        self._eof_block: int | None = None  # index of the last block, once known
        self._requests = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"HttpRangeSource(name={self.name!r}, size={self._size}, requests={self._requests}, "
            f"bytes_fetched={self._bytes})"
        )

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def requests(self) -> int:
        """HTTP requests made so far."""
        return self._requests

    @property
    def bytes_fetched(self) -> int:
        """Body bytes received so far."""
        return self._bytes

    def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        with self._lock:
            end = offset + size
            if self._size is not None:
                end = min(end, self._size)
            if end <= offset:
                return b""
            first, last = offset // self._block, (end - 1) // self._block
            if self._eof_block is not None:
                last = min(last, self._eof_block)
            missing = [i for i in range(first, last + 1) if i not in self._blocks]
            if missing:
                self._fetch(missing[0], missing[-1])
            out = bytearray()
            for index in range(first, last + 1):
                block = self._blocks.get(index)
                if block is None:
                    break  # past the end of the file
                out += block
                if len(block) < self._block:
                    break
            start = offset - first * self._block
            return bytes(out[start : start + (end - offset)])

    def _fetch(self, first: int, last: int) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"{self.name}: cancelled")
        last = max(last, first + self._fetch_blocks - 1)
        if self._size is not None:
            last = min(last, (self._size - 1) // self._block)
        self._fetch_blocks = min(self._fetch_blocks * 2, self._max_blocks)
        start, stop = first * self._block, (last + 1) * self._block  # stop is exclusive
        if self._size is not None:
            stop = min(stop, self._size)
        headers = {"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"}
        self._requests += 1
        try:
            with get_session().stream(
                "GET",
                self._url,
                headers=headers,
                auth=_auth(self._token),
                timeout=_timeout(self._timeout),
            ) as response:
                if response.status_code == 416:
                    # Asked past the end: the file is shorter than we thought.
                    total = _content_range_total(response.headers.get("Content-Range"))
                    if total is not None:
                        self._size = total
                    self._eof_block = max(first - 1, 0)
                    return
                hf_raise_for_status(response)
                start, data = self._read_body(response, start, stop)
        except HubError:
            raise
        except Exception as exc:  # every transport or HTTP failure becomes one HubError line
            raise _hub_error(
                exc, what=self.name, token=self._token, endpoint=_origin(self._url)
            ) from None
        first = start // self._block
        if len(data) < stop - start:
            self._eof_block = (start + len(data) - 1) // self._block if data else max(first - 1, 0)
            if self._size is None or self._size > start + len(data):
                self._size = start + len(data)
        for i in range(0, len(data), self._block):
            self._blocks[first + i // self._block] = data[i : i + self._block]

    def _read_body(self, response: httpx2.Response, start: int, stop: int) -> tuple[int, bytes]:
        """``(offset of the first byte, bytes up to stop)`` from a 206 or a 200 answer."""
        want = stop - start
        if response.status_code == 206:
            got_start = _content_range_start(response.headers.get("Content-Range"))
            if got_start is not None and got_start != start:
                raise HubError(
                    f"{self.name}: the server answered bytes from {got_start}, not {start}"
                )
            total = _content_range_total(response.headers.get("Content-Range"))
            if total is not None:
                self._size = total
        else:
            # 200: the server ignored Range and sends the file from byte 0. Read only up to
            # `stop` and hang up instead of downloading gigabytes; keep it all, it was paid for.
            length = response.headers.get("Content-Length")
            if self._size is None and length is not None and length.isdigit():
                self._size = int(length)
            start, want = 0, stop
        buf = bytearray()
        for chunk in response.iter_bytes(chunk_size=64 * 1024):
            self._bytes += len(chunk)
            buf += chunk
            if len(buf) >= want:
                break
        return start, bytes(buf[:want])


def _content_range_total(value: str | None) -> int | None:
    if value and "/" in value:
        total = value.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    return None


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/", value or "")
    return int(match[1]) if match else None


def _timeout(seconds: float) -> httpx2.Timeout:
    # Connect fast or fail; a slow body is fine as long as bytes keep arriving.
    return httpx2.Timeout(seconds, connect=min(seconds, 10.0))


# --- the Hub -----------------------------------------------------------------------------------


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
        token = self._token if _same_origin(location, self.endpoint) else None
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
            raise HubError(_offline_message())
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
                raise HubError(_disk_message(exc, self.cache_dir)) from None
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
            token = self._token if _same_origin(location, self.endpoint) else None
            before = have
            try:
                with get_session().stream(
                    "GET",
                    location,
                    headers=headers,
                    auth=_auth(token),
                    timeout=_timeout(self.timeout),
                ) as response:
                    if (
                        response.status_code in (401, 403, 410)
                        and not refreshed
                        and not _same_origin(location, self.endpoint)
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
                    raise _hub_error(
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
                raise _hub_error(
                    exc, what=what, token=self._token, endpoint=self.endpoint
                ) from None
            except OSError:
                raise  # the disk, not the network: the caller words it
            except Exception as exc:
                raise _hub_error(
                    exc, what=what, token=self._token, endpoint=self.endpoint
                ) from None
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
                raise HubError(_disk_message(exc, self.cache_dir)) from None
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
    ) -> _ErrorContext:
        return _ErrorContext(self, what, repo_id, revision)


class _ErrorContext:
    """Turns anything a Hub call raises into one HubError line (the token scrubbed)."""

    def __init__(self, hub: Hub, what: str, repo_id: str | None, revision: str | None) -> None:
        self.hub, self.what, self.repo_id, self.revision = hub, what, repo_id, revision

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, HubError) or not isinstance(exc, Exception):
            return False
        raise _hub_error(
            exc,
            what=self.what,
            token=self.hub._token,
            endpoint=self.hub.endpoint,
            repo_id=self.repo_id,
            revision=self.revision,
        ) from None


# --- grouping ----------------------------------------------------------------------------------


def group_files(repo_id: str, revision: str, files: Iterable[HubFilePart]) -> list[HubFile]:
    """Fold split parts into one `HubFile` each and label quantization and projectors."""
    singles, splits = group_split_parts(files, lambda f: f.path)
    grouped = [
        HubFile(repo_id, revision, (f,), quant_from_filename(f.path), is_projector(f.path))
        for f in singles
    ]
    for (_stem, count), parts in splits.items():
        ordered = tuple(parts[i] for i in sorted(parts))
        grouped.append(
            HubFile(
                repo_id,
                revision,
                ordered,
                quant_from_filename(ordered[0].path),
                is_projector(ordered[0].path),
                complete=len(ordered) == count,
            )
        )
    grouped.sort(key=lambda f: (f.is_projector, f.size_bytes, f.path))
    return grouped


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


# --- errors ------------------------------------------------------------------------------------


def _hub_error(
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
        return _offline_message()
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
        return _disk_message(exc, None)
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


def _offline_message() -> str:
    return "offline mode is on (HF_HUB_OFFLINE); unset it to search or download from the Hub"


def _disk_message(exc: OSError, cache_dir: Path | None) -> str:
    where = f" in {cache_dir}" if cache_dir is not None else ""
    reason = exc.strerror or type(exc).__name__
    target = f" ({exc.filename})" if exc.filename else ""
    return f"cannot write the download{where}: {reason}{target}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


# --- small helpers -----------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    ports = {"http": 80, "https": 443}
    return (a.scheme, a.hostname, a.port or ports.get(a.scheme)) == (
        b.scheme,
        b.hostname,
        b.port or ports.get(b.scheme),
    )


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
