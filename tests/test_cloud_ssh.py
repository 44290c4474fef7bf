"""SSH to an instance, against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import stat
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigdeck.core.cloud.host_keys import HostKeyChanged, HostKeyStore
from rigdeck.core.cloud.jobs.spec import parse_spec
from rigdeck.core.cloud.provider import Instance, RentRequest, new_label
from rigdeck.core.cloud.readiness import (
    PHASES,
    InstanceFailed,
    PhaseReached,
    ReadinessCancelled,
    ReadinessTimeout,
    wait_until_ready,
)
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.cloud.ssh import SshEndpoint, SshLinkLost, SshTarget, SshTimeout
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.ssh_keys import SshKeyPair, ensure_key_pair
from rigdeck.core.cloud.vast import VastProvider
from rigdeck.core.config import config_dir, data_dir
from rigdeck.core.errors import RigdeckError
from tests.support.sshd import SshdServer, skip_without_sshd
from tests.support.vast_sim import TEST_API_KEY, FrozenClock, make_provider

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
    with pytest.raises(RigdeckError, match="chmod 600") as info:
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

    # The same name now holds another, longer file: the reader follows the name, not the old one.
    replacement = tmp_path / "replacement"
    replacement.write_bytes(data + b"tail")
    replacement.replace(path)
    assert target.read_from(path, len(data)) == b"tail"


def test_pins_live_under_the_data_dir_with_simulated_ones_apart():
    real, simulated = HostKeyStore(), HostKeyStore(simulated=True)
    assert real.path(5).is_relative_to(data_dir())
    assert simulated.path(5).is_relative_to(data_dir())
    assert real.path(5) != simulated.path(5)


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


# -- readiness, against the project's Vast API simulator and the real sshd ----------------------


@pytest.fixture
def vast() -> Iterator[Simulator]:
    with Simulator(clock=FrozenClock(), seed=0, api_key=TEST_API_KEY) as simulator:
        yield simulator


@pytest.fixture
def cloud(vast: Simulator) -> VastProvider:
    return make_provider(vast)


def _rent(cloud: VastProvider) -> int:
    offer = cloud.search_offers("num_gpus=1")[0]
    return cloud.rent(RentRequest(offer.id, "pytorch/pytorch", 10.0, label=new_label()))


def _polls(vast: Simulator, cloud: VastProvider, step_s: float = 0.5):
    """The provider's instance reader, with half a simulated second passing between polls."""
    seen: list[str] = []

    def read(instance_id: int) -> Instance | None:
        vast.advance(step_s)
        found = cloud.instance(instance_id)
        seen.append(found.state if found else "gone")
        return found

    return read, seen


def test_readiness_reports_each_phase_in_order_then_a_working_target(
    vast: Simulator, cloud: VastProvider, sshd: SshdServer, keys: SshKeyPair, store: HostKeyStore
):
    instance_id = _rent(cloud)
    vast.set_ssh(instance_id, sshd.host, sshd.port)
    read, states = _polls(vast, cloud)
    phases: list[PhaseReached] = []
    target = wait_until_ready(
        instance_id, read, keys, store, user=sshd.user, poll_s=0.01, on_phase=phases.append
    )
    with target:
        assert [p.phase for p in phases] == list(PHASES)
        assert [p.elapsed_s for p in phases] == sorted(p.elapsed_s for p in phases)
        assert phases[-1].detail == f"{sshd.host}:{sshd.port}"
        assert target.run("echo ok").text == "ok\n"
        assert target.endpoint.instance_id == instance_id
    assert states[0] == "created" and "loading" in states and states[-1] == "running"
    assert store.pinned(instance_id)


def test_readiness_fails_fast_when_the_instance_exits(
    vast: Simulator, cloud: VastProvider, keys: SshKeyPair, store: HostKeyStore
):
    instance_id = _rent(cloud)
    read, _ = _polls(vast, cloud)

    def exits_while_loading(iid: int) -> Instance | None:
        found = read(iid)
        if found is not None and found.state == "loading":
            vast.set_state(iid, "exited", "container killed by the host")
        return found

    started = time.monotonic()
    with pytest.raises(InstanceFailed, match="is exited: container killed by the host") as info:
        wait_until_ready(instance_id, exits_while_loading, keys, store, timeout_s=60, poll_s=0.01)
    assert time.monotonic() - started < 30  # did not wait out the 60 s deadline
    assert info.value.instance_id == instance_id
    assert info.value.phase == "loading image"


def test_readiness_fails_fast_on_an_error_status(
    vast: Simulator, cloud: VastProvider, keys: SshKeyPair, store: HostKeyStore
):
    vast.never_ready(msg="Error response from daemon: pull access denied for nosuch/image")
    instance_id = _rent(cloud)
    read, _ = _polls(vast, cloud)
    with pytest.raises(InstanceFailed, match="reports an error: Error response from daemon"):
        wait_until_ready(instance_id, read, keys, store, timeout_s=60, poll_s=0.01)


def test_readiness_fails_fast_when_the_instance_is_gone(
    vast: Simulator, cloud: VastProvider, keys: SshKeyPair, store: HostKeyStore
):
    instance_id = _rent(cloud)
    cloud.destroy(instance_id)
    with pytest.raises(InstanceFailed, match="is gone"):
        wait_until_ready(instance_id, cloud.instance, keys, store, timeout_s=60, poll_s=0.01)


def test_readiness_times_out_naming_where_it_stalled(
    vast: Simulator, cloud: VastProvider, keys: SshKeyPair, store: HostKeyStore
):
    instance_id = _rent(cloud)
    vast.set_ssh(instance_id, "127.0.0.1", 9)  # nothing listens on port 9 of 127.0.0.1
    read, _ = _polls(vast, cloud, step_s=10.0)
    with pytest.raises(ReadinessTimeout, match="stuck after 'loading image'") as info:
        wait_until_ready(instance_id, read, keys, store, timeout_s=0.3, poll_s=0.05)
    assert info.value.phase == "loading image"
    assert "nothing answers SSH at 127.0.0.1:9" in str(info.value)


# -- the job runner's target over SSH ----------------------------------------------------------


def test_a_job_started_over_ssh_outlives_a_cut_link_and_its_log_arrives_whole(
    sshd: SshdServer, target: SshTarget, tmp_path: Path
):
    remote_dir = tmp_path / "instance" / "workspace" / "demo"
    remote_dir.mkdir(parents=True)
    (remote_dir / "writer.py").write_text(WRITER)
    spec_file = tmp_path / "project" / "demo.toml"
    spec_file.parent.mkdir()
    spec_file.write_text(
        'name = "demo"\n[run]\n'
        f'remote_dir = "{remote_dir}"\n'
        'command = "python3 writer.py out.log 5000 && cat out.log && echo gpus={num_gpus}"\n'
    )
    jobs = SshJobTarget(target, str(remote_dir))
    launch = jobs.plan(parse_spec(spec_file.read_text(), spec_file), "demo-1")
    assert jobs.start(launch).outcome == "started"
    assert jobs.start(launch).outcome in ("running", "finished")  # never a second copy

    sshd.cut_connections()  # the link drops right after the start
    received = bytearray()
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        try:
            received += jobs.read_log(launch.paths, len(received), 4096)
            status = jobs.status(launch.paths)
        except SshLinkLost:
            continue
        if status.ended and len(received) == status.log_bytes:
            break
    assert status is not None and status.phase == "exited" and status.exit_code == 0
    text = received.decode()
    body = "".join(f"line {i:06d}\n" for i in range(5000))
    assert body in text and text.count("line 000000\n") == 1
    assert "gpus=0" in text
    assert received == Path(launch.paths.log).read_bytes()


def test_readiness_wait_can_be_cancelled(
    vast: Simulator, cloud: VastProvider, keys: SshKeyPair, store: HostKeyStore
):
    instance_id = _rent(cloud)
    cancel = threading.Event()
    phases: list[PhaseReached] = []

    def cancel_once_scheduled(reached: PhaseReached) -> None:
        phases.append(reached)
        cancel.set()  # as a user pressing Escape on the progress screen

    with pytest.raises(ReadinessCancelled, match="cancelled"):
        wait_until_ready(
            instance_id,
            cloud.instance,
            keys,
            store,
            timeout_s=60,
            poll_s=30,
            on_phase=cancel_once_scheduled,
            cancel=cancel,
        )
    assert [p.phase for p in phases] == ["scheduled"]
