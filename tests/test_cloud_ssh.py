"""SSH to an instance, against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import stat
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rigdeck.core.cloud.host_keys import HostKeyChanged, HostKeyStore
from rigdeck.core.cloud.provider import Instance
from rigdeck.core.cloud.readiness import (
    PHASES,
    InstanceFailed,
    PhaseReached,
    ReadinessTimeout,
    wait_until_ready,
)
from rigdeck.core.cloud.ssh import SshEndpoint, SshLinkLost, SshTarget, SshTimeout
from rigdeck.core.cloud.ssh_keys import SshKeyPair, ensure_key_pair
from rigdeck.core.config import config_dir
from tests.support.sshd import SshdServer, skip_without_sshd

INSTANCE = 7


@pytest.fixture
def keys(tmp_path: Path) -> SshKeyPair:
    return ensure_key_pair(tmp_path / "keys")


@pytest.fixture
def store(tmp_path: Path) -> HostKeyStore:
    return HostKeyStore(tmp_path / "known_hosts")


@pytest.fixture
def sshd(keys: SshKeyPair) -> Iterator[SshdServer]:
    skip_without_sshd()
    server = SshdServer()
    server.authorize(keys.public_key)
    with server:
        yield server


@pytest.fixture
def target(sshd: SshdServer, keys: SshKeyPair, store: HostKeyStore) -> Iterator[SshTarget]:
    with SshTarget(SshEndpoint(INSTANCE, sshd.host, sshd.port, sshd.user), keys, store) as t:
        yield t


def test_key_pair_is_made_once_private_and_never_shown(capsys: pytest.CaptureFixture[str]):
    pair = ensure_key_pair()
    private_text = pair.private_key_path.read_text()
    assert pair.private_key_path.parent == config_dir() / "ssh"
    assert stat.S_IMODE(pair.private_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.private_key_path.parent.stat().st_mode) == 0o700
    assert "OPENSSH PRIVATE KEY" in private_text
    assert pair.public_key.startswith("ssh-ed25519 ")
    assert (pair.private_key_path.parent / "id_ed25519.pub").read_text().strip() == pair.public_key
    # ssh-keygen agrees the private key is valid and matches the public half.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(pair.private_key_path)], capture_output=True, text=True
    )
    if derived.returncode == 0:
        assert derived.stdout.split()[:2] == pair.public_key.split()[:2]
    again = ensure_key_pair()
    assert again == pair
    secret_body = private_text.splitlines()[1]
    shown = repr(pair) + str(pair) + pair.fingerprint + pair.public_key
    out = capsys.readouterr()
    assert secret_body not in shown + out.out + out.err


def test_key_readable_by_others_is_refused():
    pair = ensure_key_pair()
    pair.private_key_path.chmod(0o644)
    with pytest.raises(Exception, match="chmod 600") as info:
        ensure_key_pair()
    assert pair.private_key_path.read_text().splitlines()[1] not in str(info.value)


def test_first_contact_pins_the_host_key_and_a_changed_key_is_refused(
    sshd: SshdServer, target: SshTarget, store: HostKeyStore
):
    assert store.pinned(INSTANCE) == []
    assert target.run("echo hello").text == "hello\n"
    pin = store.path(INSTANCE)
    assert stat.S_IMODE(pin.stat().st_mode) == 0o600
    assert sshd.host_public_key() in pin.read_text()
    pinned_before = pin.read_text()

    sshd.change_host_key()
    target.close()
    with pytest.raises(HostKeyChanged) as info:
        target.run("echo hello")
    assert str(info.value).startswith(f"host key for instance {INSTANCE} changed: refusing")
    assert "\n" not in str(info.value)
    assert pin.read_text() == pinned_before  # the new key was not learnt

    # The OpenSSH client reading the same pin refuses too.
    argv = target.interactive_argv(["echo", "hello"])
    refused = subprocess.run([argv[0], "-oBatchMode=yes", *argv[1:]], capture_output=True)
    assert refused.returncode == 255
    assert b"hello" not in refused.stdout


def test_interactive_ssh_command_uses_the_pin_and_strict_checking(target: SshTarget):
    target.connect()
    argv = target.interactive_argv(["echo", "from-cli"])
    assert argv[0] == "ssh"
    assert "StrictHostKeyChecking=yes" in argv
    assert not any("StrictHostKeyChecking=no" in a for a in argv)
    assert f"UserKnownHostsFile={target.store.path(INSTANCE)}" in argv
    assert argv[argv.index("-i") + 1] == str(target.keys.private_key_path)
    done = subprocess.run([argv[0], "-oBatchMode=yes", *argv[1:]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-cli\n"


def test_unknown_key_is_refused_without_a_password_prompt(sshd: SshdServer, tmp_path: Path):
    stranger = ensure_key_pair(tmp_path / "stranger")
    endpoint = SshEndpoint(INSTANCE, sshd.host, sshd.port, sshd.user)
    with (
        SshTarget(endpoint, stranger, HostKeyStore(tmp_path / "kh2")) as t,
        pytest.raises(Exception, match="refused rigdeck's SSH key"),
    ):
        t.run("echo hi")


def test_exec_returns_exit_code_and_bounded_output(target: SshTarget):
    result = target.run("head -c 3000000 /dev/zero; echo oops >&2; exit 4", max_output_bytes=1000)
    assert result.exit_code == 4
    assert result.stdout == b"\0" * 1000 and result.stdout_truncated
    assert result.stderr == b"oops\n" and not result.stderr_truncated
    assert target.run("cat", stdin=b"piped in").stdout == b"piped in"


def test_a_command_past_its_limit_times_out(target: SshTarget):
    with pytest.raises(SshTimeout, match="ran past"):
        target.run("sleep 5", timeout_s=0.3)
    assert target.run("echo still-usable").ok


def test_write_then_read_by_offset_in_bounded_chunks(target: SshTarget, tmp_path: Path):
    path = str(tmp_path / "remote" / "deep" / "log.txt")
    data = bytes(range(256)) * 1000
    target.write_file(path, data, mode=0o600)
    assert Path(path).read_bytes() == data
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert target.file_size(path) == len(data)
    assert target.read_from(path, 0, 100) == data[:100]
    assert target.read_from(path, 255_000, 10_000) == data[255_000:]
    assert target.read_from(path, len(data)) == b""
    assert target.read_from(str(tmp_path / "not-yet"), 0) == b""
    assert target.file_size(str(tmp_path / "not-yet")) is None


def test_gpu_count_is_zero_without_nvidia_smi(keys: SshKeyPair, store: HostKeyStore):
    skip_without_sshd()
    with SshdServer(hide_commands=("nvidia-smi",)) as server:
        server.authorize(keys.public_key)
        endpoint = SshEndpoint(INSTANCE, server.host, server.port, server.user)
        with SshTarget(endpoint, keys, store) as t:
            assert t.num_gpus() == 0


WRITER = textwrap.dedent(
    """
    import sys, time
    with open(sys.argv[1], "a") as f:
        for i in range(int(sys.argv[2])):
            f.write(f"line {i:06d}\\n")
            if i % 200 == 0:
                f.flush()
                time.sleep(0.01)
    open(sys.argv[1] + ".done", "w").close()
    """
)


def test_log_read_by_offset_survives_cut_links_without_lost_or_doubled_bytes(
    sshd: SshdServer, target: SshTarget, tmp_path: Path
):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log = tmp_path / "job.log"
    lines = 20_000
    # Detached like a real job: its own session, no stdio tied to the SSH channel.
    started = target.run(
        f"setsid python3 {script} {log} {lines} </dev/null >/dev/null 2>&1 & echo started"
    )
    assert started.text.strip() == "started"

    received = bytearray()
    cuts = drops = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = target.read_from(str(log), len(received), 64 * 1024)
        except SshLinkLost:
            drops += 1
            continue
        received += chunk
        if cuts < 3 and len(received) > (cuts + 1) * lines * 3:
            cuts += sshd.cut_connections() and 1
        if not chunk and Path(f"{log}.done").exists() and len(received) == log.stat().st_size:
            break
    expected = "".join(f"line {i:06d}\n" for i in range(lines)).encode()
    assert cuts == 3
    assert drops >= 1
    assert bytes(received) == expected


def test_sshd_restarted_next_call_reconnects(sshd: SshdServer, target: SshTarget):
    assert target.run("echo before").ok
    sshd.restart()
    deadline = time.monotonic() + 10
    while target.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not target.connected
    assert target.run("echo after").text == "after\n"
    assert target.connected


# -- readiness -------------------------------------------------------------------------------


def _instance(state: str, **kw: object) -> Instance:
    base = Instance(
        id=INSTANCE,
        label="job",
        state="created",
        gpu_name="RTX 4090",
        num_gpus=1,
        gpu_ram_bytes=24 * 1024**3,
        dph=0.4,
        storage_dph=0.01,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return replace(base, state=state, **kw)  # type: ignore[arg-type]


class Timeline:
    """The provider's answers over successive polls, the last one repeated."""

    def __init__(self, *answers: Instance | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, instance_id: int) -> Instance | None:
        assert instance_id == INSTANCE
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_readiness_reports_each_phase_in_order_then_a_working_target(
    sshd: SshdServer, keys: SshKeyPair, store: HostKeyStore
):
    running = _instance("running", ssh_host=sshd.host, ssh_port=sshd.port)
    read = Timeline(
        _instance("created"),
        _instance("loading", status_message="Pulling image"),
        _instance("running"),  # running before the provider knows the port
        running,
    )
    seen: list[PhaseReached] = []
    target = wait_until_ready(
        INSTANCE, read, keys, store, user=sshd.user, poll_s=0.01, on_phase=seen.append
    )
    with target:
        assert [p.phase for p in seen] == list(PHASES)
        assert [p.elapsed_s for p in seen] == sorted(p.elapsed_s for p in seen)
        assert seen[1].detail == "Pulling image"
        assert target.run("echo ok").text == "ok\n"
    assert read.calls >= 4


@pytest.mark.parametrize(
    ("answers", "words"),
    [
        (
            [_instance("loading"), _instance("exited", status_message="killed by the host")],
            "is exited: killed by the host",
        ),
        ([_instance("offline")], "is offline"),
        (
            [_instance("loading", status_message="Error response from daemon: pull denied")],
            "reports an error: Error response from daemon",
        ),
        ([_instance("loading"), None], "is gone"),
    ],
)
def test_readiness_fails_fast_when_the_instance_cannot_start(
    keys: SshKeyPair, store: HostKeyStore, answers: list[Instance | None], words: str
):
    started = time.monotonic()
    with pytest.raises(InstanceFailed, match=words) as info:
        wait_until_ready(INSTANCE, Timeline(*answers), keys, store, timeout_s=60, poll_s=0.01)
    assert time.monotonic() - started < 30  # did not wait out the 60 s deadline
    assert info.value.instance_id == INSTANCE


def test_readiness_times_out_naming_where_it_stalled(keys: SshKeyPair, store: HostKeyStore):
    closed_port = 9  # discard: nothing listens there on 127.0.0.1
    read = Timeline(_instance("running", ssh_host="127.0.0.1", ssh_port=closed_port))
    with pytest.raises(ReadinessTimeout, match="stuck after 'loading image'") as info:
        wait_until_ready(INSTANCE, read, keys, store, timeout_s=0.3, poll_s=0.05)
    assert info.value.phase == "loading image"
    assert "nothing answers SSH" in str(info.value)
