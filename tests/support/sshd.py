"""A real OpenSSH sshd on 127.0.0.1 playing a rented instance.

Its own host key (made per server), key-only login against an authorized_keys file the test
writes, config, pid file and logs in a temp dir. It runs as the current user. It can restart,
change its host key, cut every live connection while the listener stays up (as a dropped link
would), and hide commands from sessions (an instance image without rsync).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
LogLevel ERROR
Subsystem sftp internal-sftp
{extra}
"""


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
    )


def skip_without_sshd() -> str:
    binary = sshd_binary()
    if binary is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server is not installed (apt-get install -y openssh-server rsync)")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            yield int(entry.name)


class SshdServer:
    """One sshd listener; ``host``/``port`` are what an instance's ssh_host/ssh_port would say."""

    def __init__(self, root: Path | None = None, *, hide_commands: Iterable[str] = ()) -> None:
        self.binary = skip_without_sshd()
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-", dir=root))
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text("")
        self.authorized.chmod(0o600)
        self.hidden = tuple(hide_commands)
        self.proc: subprocess.Popen[bytes] | None = None
        self._prepare_system()
        self.new_host_key()

    # -- setup ------------------------------------------------------------------------------

    @staticmethod
    def _prepare_system() -> None:
        # As root, sshd needs its privilege-separation dir and user (the Debian package's
        # postinst makes both; a container that never ran it may lack /run/sshd).
        if os.getuid() != 0:
            return
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        if subprocess.run(["getent", "passwd", "sshd"], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "-r", "-d", "/run/sshd", "-s", "/usr/sbin/nologin", "sshd"],
                check=True,
                capture_output=True,
            )

    def new_host_key(self) -> None:
        """Make a fresh host key (takes effect at the next start or restart)."""
        key = self.dir / "host_key"
        key.unlink(missing_ok=True)
        Path(f"{key}.pub").unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-sshd", "-f", str(key)],
            check=True,
            capture_output=True,
        )

    def host_public_key(self) -> str:
        return (self.dir / "host_key.pub").read_text().split()[1]

    def authorize(self, public_key: str) -> None:
        with self.authorized.open("a") as f:
            f.write(public_key.strip() + "\n")

    def _write_config(self) -> Path:
        # A fresh image's root has no shell startup files; the developer's own (pyenv, conda)
        # would make every command slow, and one that prints would corrupt rsync's protocol.
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        env = [f"HOME={home}"]
        if self.hidden:
            # Sessions get a PATH of links to every program except the hidden ones.
            bin_dir = self.dir / "bin"
            shutil.rmtree(bin_dir, ignore_errors=True)
            bin_dir.mkdir()
            for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
                for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
                    link = bin_dir / entry.name
                    if entry.name not in self.hidden and not link.exists():
                        link.symlink_to(entry)
            env.append(f"PATH={bin_dir}")
        # One SetEnv line: sshd reads only the first.
        extra = "SetEnv " + " ".join(env)
        config = self.dir / "sshd_config"
        config.write_text(SSHD_CONFIG.format(port=self.port, dir=self.dir, extra=extra))
        return config

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> SshdServer:
        config = self._write_config()
        check = subprocess.run([self.binary, "-t", "-f", str(config)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refused its test config: {check.stderr.decode().strip()}")
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-D", "-e", "-f", str(config)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log_text()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(4) == b"SSH-":
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the listener and every connection it serves."""
        if self.proc is None:
            return
        self.cut_connections()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """sshd restarted on the instance: same port, live connections gone."""
        self.stop()
        self.start()

    def change_host_key(self) -> None:
        """The machine now answers with another host key (rebuilt, or not the same machine)."""
        self.new_host_key()
        self.restart()

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        if self.proc is None:
            return []
        return list(_children(self.proc.pid))

    def cut_connections(self) -> int:
        """Kill every live connection's sshd process, leaving the listener (and any program
        started detached from a session) alive: a dropped link. Returns how many were cut."""
        pids = self.connection_pids()
        # The session's own sshd children die with their monitor; kill them too so the TCP
        # socket closes now rather than when they notice.
        doomed = list(pids)
        for pid in pids:
            doomed.extend(p for p in _children(pid) if _comm(p) == "sshd")
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> SshdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
