"""SSH to a rented instance: key-only auth, pinned host keys, bounded exec and file access.

`SshTarget` offers the same operations as the local target (see `target.py`), so a job runs on one
code path wherever it runs. A cut link raises `SshLinkLost` and the next call reconnects; the job
itself runs detached on the instance and never notices.
"""

from __future__ import annotations

import logging
import posixpath
import select
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from types import TracebackType

import paramiko

from rigdeck.core.cloud.host_keys import HostKeyChanged, HostKeyStore, PinOnFirstContact
from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.cloud.ssh_endpoint import SshEndpoint, interactive_ssh_argv, ssh_options
from rigdeck.core.cloud.ssh_keys import SshKeyPair
from rigdeck.core.cloud.target import DEFAULT_CHUNK, DEFAULT_OUTPUT_LIMIT, ExecResult

# Paramiko's transport thread logs a dropped link at ERROR; with no handler configured Python would
# print that to stderr, over the TUI's screen. rigdeck reports the drop itself (SshLinkLost).
logging.getLogger("paramiko").addHandler(logging.NullHandler())

__all__ = [
    "HostKeyChanged",
    "SshAuthRefused",
    "SshEndpoint",
    "SshError",
    "SshLinkLost",
    "SshTarget",
    "SshTimeout",
    "interactive_ssh_argv",
    "ssh_options",
]


class SshError(CloudError):
    """An SSH operation failed; the message says which instance and what to do."""


class SshLinkLost(SshError):
    """The connection dropped (or could not be made); the next call connects again."""


class SshAuthRefused(SshError):
    """The instance refused rigdeck's key."""


class SshTimeout(SshError):
    """A command ran past its time limit (it may still be running on the instance)."""


class _Bounded:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.limit - self.kept
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self.parts.append(data)
            self.kept += len(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


class SshTarget:
    """One instance over SSH. Connects on first use and again after a cut link.

    Methods block; call them from a worker. Commands may run concurrently from several threads
    (each gets its own channel); file operations share one SFTP session under a lock.
    """

    def __init__(
        self,
        endpoint: SshEndpoint,
        keys: SshKeyPair,
        store: HostKeyStore | None = None,
        *,
        connect_timeout_s: float = 15.0,
        keepalive_s: int = 15,
    ) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.store = HostKeyStore() if store is None else store
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._open_files: dict[str, paramiko.SFTPFile] = {}

    def __repr__(self) -> str:
        e = self.endpoint
        return f"SshTarget(instance {e.instance_id}, {e.user}@{e.host}:{e.port})"

    def __enter__(self) -> SshTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def connect(self) -> None:
        """Open the connection now (first contact pins the host key); no-op when open."""
        self._transport()

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            self._drop()
            client = self._open()
            self._client = client
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(self.keepalive_s)
            # Small SSH packets (a channel open, a file stat) would otherwise sit out Nagle's
            # wait for the peer's delayed ACK: about 40 ms a request.
            sock = transport.sock
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return transport

    def _open(self) -> paramiko.SSHClient:
        e = self.endpoint
        client = paramiko.SSHClient()
        host_name = e.host if e.port == 22 else f"[{e.host}]:{e.port}"
        for key in self.store.pinned(e.instance_id):
            client.get_host_keys().add(host_name, key.get_name(), key)
        client.set_missing_host_key_policy(PinOnFirstContact(self.store, e.instance_id))
        try:
            pkey = paramiko.Ed25519Key.from_private_key_file(str(self.keys.private_key_path))
            client.connect(
                e.host,
                port=e.port,
                username=e.user,
                pkey=pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise self.store.changed_error(e.instance_id, exc.key) from None
        except HostKeyChanged:
            client.close()
            raise
        except paramiko.AuthenticationException:
            client.close()
            raise SshAuthRefused(
                f"instance {e.instance_id} refused rigdeck's SSH key; attach the key to the "
                "instance (the provider may still be installing it) and try again"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            raise SshLinkLost(
                f"cannot reach instance {e.instance_id} at {e.host}:{e.port} over SSH "
                f"({_reason(exc)}); check that it is running, then try again"
            ) from None
        return client

    def _drop(self) -> None:
        for f in self._open_files.values():
            try:
                f.close()
            except Exception:  # the link is already gone; nothing to release remotely
                pass
        self._open_files.clear()
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _lost(self, doing: str, exc: BaseException) -> SshLinkLost:
        with self._lock:
            self._drop()
        return SshLinkLost(
            f"link to instance {self.endpoint.instance_id} dropped while {doing} "
            f"({_reason(exc)}); a job keeps running there, and the next call reconnects"
        )

    def _link_failed(self, exc: BaseException) -> bool:
        if isinstance(exc, (EOFError, socket.timeout, ConnectionError)):
            return True
        return not self.connected

    # -- commands ---------------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        timeout_s: float | None = 60.0,
        stdin: bytes | None = None,
        max_output_bytes: int = DEFAULT_OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run ``command`` through the remote user's shell; exit code and bounded output."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        out, err = _Bounded(max_output_bytes), _Bounded(max_output_bytes)
        transport, chan = self._open_channel()
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out.add(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.add(chan.recv_stderr(65536))
                finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
                if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.exit_status_ready():
                    raise EOFError("channel closed before the command finished")
                if not transport.is_active():
                    raise EOFError("connection closed")
                if deadline is not None and time.monotonic() > deadline:
                    raise SshTimeout(
                        f"command on instance {self.endpoint.instance_id} ran past "
                        f"{timeout_s:g} s; it may still be running there"
                    )
                select.select([chan], [], [], 0.05)
            code = chan.recv_exit_status()
        except SshError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost("running a command", exc) from None
        finally:
            chan.close()
        return ExecResult(
            exit_code=code,
            stdout=out.value(),
            stderr=err.value(),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
        )

    def _open_channel(self) -> tuple[paramiko.Transport, paramiko.Channel]:
        # A link that died while idle is often noticed only here. Nothing has run yet, so one
        # fresh connection is tried before giving up: only a command cut mid-way reports a loss.
        for attempt in (1, 2):
            transport = self._transport()
            try:
                return transport, transport.open_session(timeout=self.connect_timeout_s)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                lost = self._lost("opening a command channel", exc)
                if attempt == 2:
                    raise lost from None
        raise AssertionError("unreachable")

    def num_gpus(self) -> int:
        result = self.run("nvidia-smi -L", timeout_s=30)
        if not result.ok:
            return 0
        return sum(1 for line in result.text.splitlines() if line.startswith("GPU "))

    def has_command(self, name: str) -> bool:
        return self.run(f"command -v {name} >/dev/null 2>&1", timeout_s=30).ok

    # -- files ------------------------------------------------------------------------------

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (opened on first use, again after a reconnect)."""
        with self._lock:
            self._transport()
            if self._sftp is None:
                client = self._client
                assert client is not None
                try:
                    self._sftp = client.open_sftp()
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    raise self._lost("opening SFTP", exc) from None
            return self._sftp

    def read_from(self, path: str, offset: int, max_bytes: int = DEFAULT_CHUNK) -> bytes:
        """Up to ``max_bytes`` of ``path`` from byte ``offset``; b"" when absent or no more.

        One round trip when nothing is new (a stat of the path), two when there is: the file
        stays open between calls, and all its 32 KiB pieces are asked for at once.
        """
        with self._lock:
            try:
                sftp = self.sftp()
                try:
                    size = int(sftp.stat(path).st_size or 0)
                except FileNotFoundError:
                    self._forget_handle(path)
                    return b""
                count = min(max_bytes, size - offset)
                if count <= 0:
                    return b""
                data = self._read_handle(sftp, path, offset, count)
                if len(data) < count:
                    # The open handle is an older file the path no longer names: reopen.
                    self._forget_handle(path)
                    data = self._read_handle(sftp, path, offset, count)
                return data
            except SshError:
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self._link_failed(exc):
                    raise self._lost(f"reading {path}", exc) from None
                self._forget_handle(path)
                if isinstance(exc, FileNotFoundError):
                    return b""
                raise SshError(
                    f"cannot read {path} on instance {self.endpoint.instance_id}: {_reason(exc)}"
                ) from None

    def _read_handle(self, sftp: paramiko.SFTPClient, path: str, offset: int, count: int) -> bytes:
        handle = self._open_files.get(path)
        if handle is None:
            handle = sftp.open(path, "rb")
            if len(self._open_files) >= 8:
                self._forget_handle(next(iter(self._open_files)))
            self._open_files[path] = handle
        return b"".join(handle.readv([(offset, count)]))

    def _forget_handle(self, path: str) -> None:
        handle = self._open_files.pop(path, None)
        if handle is not None:
            try:
                handle.close()
            except Exception:  # closing a handle on a dropped link: nothing left to release
                pass

    def file_size(self, path: str) -> int | None:
        with self._lock:
            try:
                return int(self.sftp().stat(path).st_size or 0)
            except FileNotFoundError:
                return None
            except SshError:
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self._link_failed(exc):
                    raise self._lost(f"reading the size of {path}", exc) from None
                raise SshError(
                    f"cannot stat {path} on instance {self.endpoint.instance_id}: {_reason(exc)}"
                ) from None

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` whole: a temp file beside it, then an atomic rename."""
        with self._lock:
            try:
                sftp = self.sftp()
                self._makedirs(sftp, posixpath.dirname(path))
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                with sftp.open(tmp, "wb") as f:
                    f.set_pipelined(True)
                    f.write(data)
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
                self._forget_handle(path)
            except SshError:
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if self._link_failed(exc):
                    raise self._lost(f"writing {path}", exc) from None
                raise SshError(
                    f"cannot write {path} on instance {self.endpoint.instance_id}: {_reason(exc)}"
                ) from None

    @staticmethod
    def _makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
        if directory in ("", "/", "."):
            return
        try:
            sftp.stat(directory)
            return
        except FileNotFoundError:
            pass
        SshTarget._makedirs(sftp, posixpath.dirname(directory))
        try:
            sftp.mkdir(directory)
        except OSError:
            sftp.stat(directory)  # made meanwhile by someone else: fine; else raise

    def ssh_options(self, *, batch: bool = True) -> list[str]:
        return ssh_options(self.endpoint, self.keys, self.store, batch=batch)

    def interactive_argv(self, command: Sequence[str] = ()) -> list[str]:
        return interactive_ssh_argv(self.endpoint, self.keys, self.store, command)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
