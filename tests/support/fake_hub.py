"""A local server speaking enough of the Hugging Face Hub protocol for the real client.

Two HTTP servers on 127.0.0.1: the *hub* (API and ``resolve`` URLs) and a *cdn* on another port
that serves LFS blobs, like the real Hub redirecting to its storage. Being a different origin, the
cdn lets tests check that the token never leaves the hub.

Hub side:
- ``GET /api/models`` (search, filter, author, sort, limit; cursor pagination with a Link header),
- ``GET /api/models/<repo>[/revision/<rev>]`` (model info, siblings with sizes when ``blobs``),
- ``GET /api/models/<repo>/tree/<rev>[/<path>]`` (``recursive``; sizes, git oid, lfs sha256),
- ``HEAD|GET /<repo>/resolve/<rev>/<path>``: LFS files answer 302 to the cdn with ``X-Repo-Commit``,
  ``X-Linked-Etag``, ``X-Linked-Size`` and ``ETag``; small files are served directly (with Range).
Errors are shaped like the Hub's: ``X-Error-Code`` RepoNotFound / GatedRepo / EntryNotFound /
RevisionNotFound, ``X-Error-Message`` "Invalid credentials in Authorization header".

Cdn side: ``GET|HEAD /blobs/<sha256>`` with real Range support (206 + Content-Range, 416).

Every answered request is logged (`FakeHub.log`) with the body bytes sent, so tests can assert
what a remote operation cost. Faults are injected with `fail`, `drop_after`, `hold_after` and
`corrupt`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

ServerName = Literal["hub", "cdn"]
_SMALL_FILE_LIMIT = 10 * 1024 * 1024  # like git-lfs thresholds on the Hub: bigger files are LFS
_IO_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Served:
    """One request as the server saw and answered it."""

    server: ServerName
    method: str
    path: str
    query: str
    range: str | None
    status: int
    body_bytes: int
    authorization: str | None


@dataclass
class FakeFile:
    path: str
    size: int
    sha256: str
    git_oid: str
    lfs: bool
    data: bytes | None = None
    source: Path | None = None

    def open_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield bytes [start, end] (inclusive) of the file's content."""
        if self.data is not None:
            view = memoryview(self.data)[start : end + 1]
            for i in range(0, len(view), _IO_CHUNK):
                yield bytes(view[i : i + _IO_CHUNK])
            return
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(start)
            left = end + 1 - start
            while left > 0:
                chunk = f.read(min(_IO_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FakeFile]
    commit: str
    gated: bool = False
    private: bool = False
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    last_modified: str = "2025-01-01T00:00:00.000Z"
    granted: set[str] = field(default_factory=set)  # tokens that accepted a gated repo's terms


@dataclass
class _Fault:
    server: ServerName | None
    path_contains: str
    method: str | None
    remaining: int
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None  # send this many body bytes, then cut the connection
    hold_after: int | None = None  # send this many body bytes, then wait for `release`
    release: threading.Event | None = None
    reached: threading.Event | None = None


class FakeHub:
    """A Hub and its cdn on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(self, *, tokens: Iterable[str] = (), page_size: int = 1000) -> None:
        self.tokens = set(tokens)
        self.page_size = page_size
        self.ignore_range = False  # make the cdn answer 200 with the whole file, like some proxies
        self.repos: dict[str, FakeRepo] = {}
        self._log: list[Served] = []
        self._inflight = 0
        self._faults: list[_Fault] = []
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._hub = _Server(self, "hub")
        self._cdn = _Server(self, "cdn")

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._hub.start()
        self._cdn.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.release is not None:
                    fault.release.set()
        self._hub.stop()
        self._cdn.stop()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub (HF_ENDPOINT)."""
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        return self._cdn.url

    # --- content -------------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, Path | bytes],
        *,
        gated: bool = False,
        private: bool = False,
        downloads: int = 0,
        likes: int = 0,
        tags: Iterable[str] = ("gguf",),
        sha256: Mapping[str, str] | None = None,
    ) -> FakeRepo:
        """Publish a repo. Files are bytes or paths (a sparse file makes a cheap big model).

        `sha256` gives a file's LFS hash instead of hashing it, for big sparse files nobody
        downloads in full.
        """
        given = dict(sha256 or {})
        fake_files: dict[str, FakeFile] = {}
        for path, content in files.items():
            if isinstance(content, bytes):
                size = len(content)
                digest = given.get(path) or hashlib.sha256(content).hexdigest()
                data, source = content, None
            else:
                size = content.stat().st_size
                digest = given.get(path) or _sha256_file(content)
                data, source = None, content
            lfs = size > _SMALL_FILE_LIMIT or path.endswith((".gguf", ".bin", ".safetensors"))
            git_oid = hashlib.sha1(f"{repo_id}/{path}:{digest}".encode()).hexdigest()
            fake_files[path] = FakeFile(path, size, digest, git_oid, lfs, data, source)
        commit = hashlib.sha1(
            repo_id.encode() + b"".join(sorted(f.sha256.encode() for f in fake_files.values()))
        ).hexdigest()
        repo = FakeRepo(
            repo_id=repo_id,
            files=fake_files,
            commit=commit,
            gated=gated,
            private=private,
            downloads=downloads,
            likes=likes,
            tags=list(tags),
        )
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def add_directory(self, root: Path, **options: object) -> list[FakeRepo]:
        """Publish ``root/<owner>/<name>/**`` as repos ``owner/name``."""
        repos = []
        for owner in sorted(p for p in root.iterdir() if p.is_dir()):
            for repo_dir in sorted(p for p in owner.iterdir() if p.is_dir()):
                files = {
                    p.relative_to(repo_dir).as_posix(): p
                    for p in sorted(repo_dir.rglob("*"))
                    if p.is_file()
                }
                repos.append(self.add_repo(f"{owner.name}/{repo_dir.name}", files, **options))  # type: ignore[arg-type]
        return repos

    def grant(self, repo_id: str, token: str) -> None:
        """Let `token` download a gated repo (its owner accepted the terms)."""
        self.repos[repo_id].granted.add(token)

    # --- faults --------------------------------------------------------------------------------

    def fail(
        self,
        path_contains: str,
        status: int,
        *,
        times: int = 1,
        server: ServerName | None = None,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` instead of serving them."""
        self._add_fault(_Fault(server, path_contains, method, times, status, dict(headers or {})))

    def drop_after(self, nbytes: int, *, path_contains: str = "/blobs/", times: int = 1) -> None:
        """Cut the connection after `nbytes` of the next matching cdn download's body."""
        self._add_fault(_Fault("cdn", path_contains, "GET", times, drop_after=nbytes))

    def hold_after(
        self, nbytes: int, *, path_contains: str = "/blobs/"
    ) -> tuple[threading.Event, threading.Event]:
        """Pause the next matching cdn download after `nbytes`.

        Returns ``(reached, release)``: `reached` is set once the bytes are sent; the body goes on
        when the test sets `release` (stop() releases it too).
        """
        reached, release = threading.Event(), threading.Event()
        self._add_fault(
            _Fault(
                "cdn", path_contains, "GET", 1, hold_after=nbytes, release=release, reached=reached
            )
        )
        return reached, release

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve the file with one flipped byte from the cdn (its published sha256 stays)."""
        self._corrupt.add(self.repos[repo_id].files[path].sha256)

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, server: ServerName, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and (fault.server is None or fault.server == server)
                    and (fault.method is None or fault.method == method)
                    and fault.path_contains in path
                ):
                    fault.remaining -= 1
                    return fault
        return None

    # --- accounting ----------------------------------------------------------------------------

    def begin(self) -> None:
        with self._lock:
            self._inflight += 1

    def record(self, served: Served) -> None:
        with self._lock:
            self._log.append(served)
            self._inflight -= 1
            self._settled.notify_all()

    @property
    def log(self) -> list[Served]:
        """Every request answered so far, oldest first.

        A client can finish reading a response before the server thread has logged it, so this
        first waits (briefly) for requests still being handled.
        """
        with self._lock:
            self._settled.wait_for(lambda: self._inflight == 0, timeout=5)
            return list(self._log)

    def served(
        self,
        *,
        server: ServerName | None = None,
        path_contains: str = "",
        method: str | None = None,
    ) -> list[Served]:
        return [
            s
            for s in self.log
            if (server is None or s.server == server)
            and (method is None or s.method == method)
            and path_contains in s.path
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._settled.wait_for(lambda: self._inflight == 0, timeout=5)
            self._log.clear()

    # --- helpers for handlers ------------------------------------------------------------------

    def find_blob(self, sha256: str) -> FakeFile | None:
        with self._lock:
            for repo in self.repos.values():
                for file in repo.files.values():
                    if file.sha256 == sha256:
                        return file
        return None


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up (a cancelled download, a range reader that got enough) are normal.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server:
    def __init__(self, hub: FakeHub, name: ServerName) -> None:
        self.hub = hub
        self.name = name
        handler = type(f"{name.title()}Handler", (_Handler,), {"fake": hub, "server_name": name})
        self.httpd = _QuietHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval keeps stop() (and so every test's teardown) quick.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"fake-{name}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Abort(Exception):
    """Raised inside a handler to cut the connection on purpose."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real client pool expects
    fake: FakeHub
    server_name: ServerName

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # --- plumbing ------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._method = method
        self._status = 0
        self._sent = 0
        split = urlsplit(self.path)
        self._route = unquote(split.path)
        self._query = parse_qs(split.query)
        self.fake.begin()
        try:
            fault = self.fake._take_fault(self.server_name, method, self._route)
            if fault is not None and fault.drop_after is None and fault.hold_after is None:
                self._error(fault.status, "injected failure", headers=fault.headers)
            elif self.server_name == "hub":
                self._hub()
            else:
                self._cdn(fault)
        except (_Abort, ConnectionError, BrokenPipeError):
            self.close_connection = True
        finally:
            self.fake.record(
                Served(
                    server=self.server_name,
                    method=method,
                    path=self._route,
                    query=split.query,
                    range=self.headers.get("Range"),
                    status=self._status,
                    body_bytes=self._sent,
                    authorization=self.headers.get("Authorization"),
                )
            )

    def _start(self, status: int, headers: Mapping[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _body(self, data: bytes) -> None:
        if self._method != "HEAD" and data:
            self.wfile.write(data)
            self._sent += len(data)

    def _json(self, payload: object, *, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._start(
            200,
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
                **(headers or {}),
            },
        )
        self._body(data)

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = json.dumps({"error": message}).encode()
        extra = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        extra.update(headers or {})
        self._start(status, extra)
        self._body(data)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    # --- hub -----------------------------------------------------------------------------------

    def _hub(self) -> None:
        token = self._token()
        if token is not None and token not in self.fake.tokens:
            self._error(401, "Invalid credentials in Authorization header")
            return
        route = self._route
        if route == "/api/models":
            self._search(token)
            return
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", route)
        if match:
            self._tree(token, match[1], match[2], match[3] or "")
            return
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", route)
        if match:
            self._model_info(token, match[1], match[2] or "main")
            return
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", route)
        if match:
            self._resolve(token, match[1], match[2], match[3])
            return
        self._error(404, "Not Found")

    def _visible(self, repo: FakeRepo, token: str | None) -> bool:
        return not repo.private or token is not None

    def _repo(self, repo_id: str, token: str | None, revision: str | None) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None or not self._visible(repo, token):
            # The Hub answers 401 for both missing and private repos, so it leaks nothing.
            self._error(401, "Repository not found", code="RepoNotFound")
            return None
        if revision is not None and revision not in ("main", repo.commit):
            self._error(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
            return None
        return repo

    def _model_json(self, repo: FakeRepo, *, siblings: bool, blobs: bool) -> dict[str, object]:
        data: dict[str, object] = {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.commit,
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "tags": repo.tags,
            "library_name": "gguf" if "gguf" in repo.tags else None,
            "lastModified": repo.last_modified,
            "createdAt": repo.last_modified,
        }
        if siblings:
            entries = []
            for file in repo.files.values():
                entry: dict[str, object] = {"rfilename": file.path}
                if blobs:
                    entry["size"] = file.size
                    entry["blobId"] = file.git_oid
                    if file.lfs:
                        entry["lfs"] = {
                            "sha256": file.sha256,
                            "size": file.size,
                            "pointerSize": 134,
                        }
                entries.append(entry)
            data["siblings"] = entries
        return data

    def _search(self, token: str | None) -> None:
        q = self._query
        search = (q.get("search") or [""])[0].lower()
        filters = {f.lower() for f in q.get("filter", [])}
        author = (q.get("author") or [None])[0]
        sort = (q.get("sort") or [None])[0]
        limit = int((q.get("limit") or ["0"])[0]) or None
        cursor = int((q.get("cursor") or ["0"])[0])
        with self.fake._lock:
            repos = list(self.fake.repos.values())
        hits = [
            r
            for r in repos
            if self._visible(r, token)
            and search in r.repo_id.lower()
            and filters <= {t.lower() for t in r.tags}
            and (author is None or r.repo_id.split("/")[0] == author)
        ]
        if sort in ("downloads", "likes"):
            hits.sort(key=lambda r: (-getattr(r, sort), r.repo_id))
        else:
            hits.sort(key=lambda r: r.repo_id)
        page = min(self.fake.page_size, limit or self.fake.page_size)
        chunk = hits[cursor : cursor + page]
        headers = {}
        if cursor + page < len(hits):
            rest = {k: v for k, v in q.items() if k != "cursor"}
            next_url = (
                f"{self.fake.url}/api/models?{urlencode(rest, doseq=True)}&cursor={cursor + page}"
            )
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._json(
            [self._model_json(r, siblings=False, blobs=False) for r in chunk], headers=headers
        )

    def _model_info(self, token: str | None, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, token, revision)
        if repo is None:
            return
        blobs = (self._query.get("blobs") or ["false"])[0].lower() == "true"
        self._json(self._model_json(repo, siblings=True, blobs=blobs))

    def _tree(self, token: str | None, repo_id: str, revision: str, base: str) -> None:
        repo = self._repo(repo_id, token, revision)
        if repo is None:
            return
        recursive = (self._query.get("recursive") or ["false"])[0].lower() == "true"
        prefix = f"{base.strip('/')}/" if base.strip("/") else ""
        entries: list[dict[str, object]] = []
        folders: set[str] = set()
        for file in sorted(repo.files.values(), key=lambda f: f.path):
            if not file.path.startswith(prefix):
                continue
            rest = file.path[len(prefix) :]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                folders.add(prefix + "/".join(parts[:depth]))
            if not recursive and len(parts) > 1:
                continue
            entry: dict[str, object] = {
                "type": "file",
                "oid": file.git_oid,
                "size": file.size,
                "path": file.path,
            }
            if file.lfs:
                entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": 134}
            entries.append(entry)
        if prefix and not entries and not folders:
            self._error(404, f"{base} does not exist", code="EntryNotFound")
            return
        dirs = [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(folders)
        ]
        self._json(dirs + entries)

    def _resolve(self, token: str | None, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, token, revision)
        if repo is None:
            return
        if repo.gated and (token is None or token not in repo.granted):
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            self._error(401 if token is None else 403, message, code="GatedRepo")
            return
        file = repo.files.get(path)
        commit_header = {"X-Repo-Commit": repo.commit}
        if file is None:
            self._error(404, "Entry not found", code="EntryNotFound", headers=commit_header)
            return
        if file.lfs:
            location = f"{self.fake.cdn_url}/blobs/{file.sha256}?{urlencode({'file': path})}"
            self._start(
                302,
                {
                    **commit_header,
                    "Location": location,
                    "ETag": f'"{file.git_oid}"',
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(file.size),
                    "Content-Length": "0",
                },
            )
            return
        _send_file(self, file, extra={**commit_header, "ETag": f'"{file.git_oid}"'}, fault=None)

    # --- cdn -----------------------------------------------------------------------------------

    def _cdn(self, fault: _Fault | None) -> None:
        match = re.fullmatch(r"/blobs/([0-9a-f]{64})", self._route)
        file = self.fake.find_blob(match[1]) if match else None
        if file is None:
            self._error(404, "NoSuchKey")
            return
        corrupt = file.sha256 in self.fake._corrupt
        _send_file(
            self,
            file,
            extra={"ETag": f'"{file.sha256}"'},
            fault=fault,
            corrupt=corrupt,
            honour_range=not self.fake.ignore_range,
        )


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


def _send_file(
    handler: _Handler,
    file: FakeFile,
    *,
    extra: Mapping[str, str],
    fault: _Fault | None,
    corrupt: bool = False,
    honour_range: bool = True,
) -> None:
    """Serve a file body honouring a single Range, with optional mid-body faults."""
    size = file.size
    start, end, status = 0, size - 1, 200
    header = handler.headers.get("Range") if honour_range else None
    if header:
        match = _RANGE_RE.match(header.strip())
        if match is None or (not match[1] and not match[2]):
            handler._start(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            return
        if match[1]:
            start = int(match[1])
            end = min(int(match[2]), size - 1) if match[2] else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(size - int(match[2]), 0), size - 1
        if start >= size or start > end:
            handler._start(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            return
        status = 206
    headers = {
        **extra,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(end - start + 1),
    }
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    handler._start(status, headers)
    if handler._method == "HEAD":
        return
    position = start
    limit = fault.drop_after if fault is not None else None
    hold = fault.hold_after if fault is not None else None
    flip_at = size // 2 if corrupt else -1
    for chunk in file.open_range(start, end):
        if position <= flip_at < position + len(chunk):
            i = flip_at - position
            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        if hold is not None and handler._sent + len(chunk) >= hold:
            head = chunk[: max(hold - handler._sent, 0)]
            handler._body(head)
            handler.wfile.flush()
            assert fault is not None and fault.reached is not None and fault.release is not None
            fault.reached.set()
            fault.release.wait(timeout=30)
            handler._body(chunk[len(head) :])
            hold = None
            position += len(chunk)
            continue
        if limit is not None and handler._sent + len(chunk) >= limit:
            handler._body(chunk[: max(limit - handler._sent, 0)])
            handler.wfile.flush()
            # Close the socket mid-body: the client sees the connection end before Content-Length.
            handler.connection.shutdown(socket.SHUT_RDWR)
            raise _Abort
        handler._body(chunk)
        position += len(chunk)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_url(hub: FakeHub, repo_id: str, path: str, revision: str = "main") -> str:
    return f"{hub.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
