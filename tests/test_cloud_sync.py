"""Sync and artifacts over the pinned SSH, against a real OpenSSH sshd on 127.0.0.1.

The sshd runs on this machine, so "the instance's disk" is a temp folder the test can read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigdeck.core.cloud.artifacts import (
    CheckpointWatch,
    pull_artifacts,
    remote_sha256,
    verify_artifacts,
)
from rigdeck.core.cloud.host_keys import HostKeyStore
from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.cloud.ssh import SshEndpoint, SshTarget
from rigdeck.core.cloud.ssh_keys import SshKeyPair, ensure_key_pair
from rigdeck.core.cloud.sync import (
    SyncInterrupted,
    SyncProgress,
    plan_push,
    pull,
    push,
)
from tests.support.sshd import SshdServer, skip_without_sshd

INSTANCE = 11


@pytest.fixture
def keys(tmp_path: Path) -> SshKeyPair:
    return ensure_key_pair(tmp_path / "keys")


def _serve(
    keys: SshKeyPair, store: HostKeyStore, instance_id: int, **kw: object
) -> Iterator[tuple[SshdServer, SshTarget]]:
    skip_without_sshd()
    server = SshdServer(**kw)  # type: ignore[arg-type]
    server.authorize(keys.public_key)
    with server:
        endpoint = SshEndpoint(instance_id, server.host, server.port, server.user)
        with SshTarget(endpoint, keys, store) as target:
            target.connect()  # first contact pins the key rsync's ssh then checks
            yield server, target


@pytest.fixture
def instance(keys: SshKeyPair, tmp_path: Path) -> Iterator[tuple[SshdServer, SshTarget]]:
    yield from _serve(keys, HostKeyStore(tmp_path / "kh"), INSTANCE)


@pytest.fixture
def bare_instance(keys: SshKeyPair, tmp_path: Path) -> Iterator[tuple[SshdServer, SshTarget]]:
    """An image without rsync or sha256sum."""
    store = HostKeyStore(tmp_path / "kh")
    yield from _serve(keys, store, INSTANCE + 1, hide_commands=("rsync", "sha256sum"))


def _write(path: Path, data: bytes | str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    return len(raw)


def make_project(root: Path) -> dict[str, int]:
    """A project with things a push must leave behind; returns the files it must send."""
    sent = {
        "train.py": _write(root / "train.py", "print('train')\n" * 50),
        "pkg/model.py": _write(root / "pkg/model.py", "x = 1\n"),
        "pkg/.gitignore": _write(root / "pkg/.gitignore", "secret.txt\n"),
        ".gitignore": _write(root / ".gitignore", "*.log\ndata/\n"),
        "configs/a.yaml": _write(root / "configs/a.yaml", "lr: 0.1\n"),
    }
    _write(root / "run.log", "noise")
    _write(root / "data/big.bin", os.urandom(10_000))
    _write(root / "pkg/secret.txt", "hunter2")
    _write(root / ".git/HEAD", "ref: refs/heads/main\n")
    _write(root / "pkg/__pycache__/model.cpython-311.pyc", b"\0" * 64)
    _write(root / ".venv/bin/python", "#!")
    return sent


def remote_files(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".partial")
    }


def test_push_honours_excludes_and_gitignore_and_resyncs_as_a_no_op(
    instance: tuple[SshdServer, SshTarget], tmp_path: Path
):
    _, target = instance
    project, remote = tmp_path / "project", tmp_path / "remote" / "job"
    expected = make_project(project)

    summary = plan_push(target, project, str(remote))
    assert (summary.files, summary.bytes) == (len(expected), sum(expected.values()))
    assert not remote.exists() or remote_files(remote) == {}  # a dry run sends nothing

    progress: list[SyncProgress] = []
    result = push(target, project, str(remote), on_progress=progress.append)
    assert result.method == "rsync"
    assert remote_files(remote) == expected
    assert (result.files, result.bytes) == (len(expected), sum(expected.values()))
    assert progress and progress[-1].percent == 100
    assert progress[-1].bytes_done == sum(expected.values())

    again = push(target, project, str(remote))
    assert (again.files, again.bytes, again.literal_bytes) == (0, 0, 0)
    assert plan_push(target, project, str(remote)).files == 0

    (project / "train.py").write_text("print('changed')\n")
    changed = push(target, project, str(remote))
    assert changed.files == 1
    assert (remote / "train.py").read_text() == "print('changed')\n"


def test_a_sync_cut_midway_resumes_from_its_partial_file(
    instance: tuple[SshdServer, SshTarget], tmp_path: Path
):
    server, target = instance
    project, remote = tmp_path / "project", tmp_path / "remote"
    size = 48 * 1024 * 1024
    _write(project / "weights.bin", os.urandom(size))
    cut: list[int] = []

    def cut_at_a_third(p: SyncProgress) -> None:
        if not cut and p.bytes_done > size // 3:
            cut.append(server.cut_connections())

    with pytest.raises(SyncInterrupted, match="run it again"):
        # A bandwidth cap keeps the transfer slow enough to be cut in the middle.
        push(target, project, str(remote), on_progress=cut_at_a_third, bwlimit_kbps=12_000)
    assert cut and cut[0] >= 1  # rsync's own ssh link, and the command link beside it
    kept = (remote / "weights.bin").stat().st_size
    assert size // 4 < kept < size

    resumed = push(target, project, str(remote))
    assert resumed.files == 1
    assert resumed.literal_bytes <= size - kept + 1024 * 1024  # the kept part was not resent
    local_hash = hashlib.sha256((project / "weights.bin").read_bytes()).hexdigest()
    assert hashlib.sha256((remote / "weights.bin").read_bytes()).hexdigest() == local_hash


def test_sync_refuses_an_instance_whose_host_key_changed(
    instance: tuple[SshdServer, SshTarget], tmp_path: Path
):
    server, target = instance
    project = tmp_path / "project"
    make_project(project)
    server.new_host_key()
    server.restart()
    with pytest.raises(CloudError, match=f"host key for instance {INSTANCE} changed: refusing"):
        push(target, project, str(tmp_path / "remote"), method="rsync")
    assert not (tmp_path / "remote" / "train.py").exists()


def test_without_rsync_on_the_instance_sftp_sends_the_same_files(
    bare_instance: tuple[SshdServer, SshTarget], tmp_path: Path
):
    _, target = bare_instance
    assert not target.has_command("rsync")
    project, remote = tmp_path / "project", tmp_path / "remote"
    expected = make_project(project)

    summary = plan_push(target, project, str(remote))
    assert (summary.files, summary.bytes) == (len(expected), sum(expected.values()))
    progress: list[SyncProgress] = []
    result = push(target, project, str(remote), on_progress=progress.append)
    assert result.method == "sftp"
    assert remote_files(remote) == expected
    assert progress[-1].percent == 100
    assert (project / "train.py").stat().st_mtime // 1 == (remote / "train.py").stat().st_mtime // 1

    again = push(target, project, str(remote))
    assert (again.files, again.literal_bytes) == (0, 0)

    back = tmp_path / "back"
    pulled = pull(target, f"{remote}/", back)
    assert pulled.method == "sftp"
    assert remote_files(back) == expected


def test_sftp_push_cut_midway_resumes(bare_instance: tuple[SshdServer, SshTarget], tmp_path: Path):
    server, target = bare_instance
    project, remote = tmp_path / "project", tmp_path / "remote"
    size = 24 * 1024 * 1024
    _write(project / "weights.bin", os.urandom(size))
    cut: list[int] = []

    def cut_at_a_third(p: SyncProgress) -> None:
        if not cut and p.bytes_done > size // 3:
            cut.append(server.cut_connections())

    with pytest.raises(SyncInterrupted):
        push(target, project, str(remote), on_progress=cut_at_a_third, bwlimit_kbps=12_000)
    assert cut == [1]
    assert not (remote / "weights.bin").exists()  # never half a file under the real name

    resumed = push(target, project, str(remote))
    assert resumed.literal_bytes < size
    assert (remote / "weights.bin").read_bytes() == (project / "weights.bin").read_bytes()


def _job_outputs(job: Path) -> None:
    _write(job / "out" / "model.bin", os.urandom(200_000))
    _write(job / "out" / "metrics.json", '{"loss": 0.1}')
    _write(job / "ckpt" / "step-1" / "weights.pt", os.urandom(50_000))
    _write(job / "ckpt" / "step-1" / "COMPLETE", "")
    _write(job / "notes.txt", "hello")


@pytest.mark.parametrize("image", ["instance", "bare_instance"])
def test_artifacts_pulled_and_verified_and_a_tampered_copy_fails(
    image: str, request: pytest.FixtureRequest, tmp_path: Path
):
    _, target = request.getfixturevalue(image)
    job = tmp_path / "remote-job"
    _job_outputs(job)
    here = tmp_path / "artifacts"

    files = pull_artifacts(target, str(job), ["out/", "ckpt/", "notes.txt", "missing.txt"], here)
    by_path = {f.path: f for f in files}
    assert set(by_path) == {
        "out/model.bin",
        "out/metrics.json",
        "ckpt/step-1/weights.pt",
        "ckpt/step-1/COMPLETE",
        "notes.txt",
    }
    for f in files:
        data = (job / f.path).read_bytes()
        assert f.verified
        assert f.sha256 == hashlib.sha256(data).hexdigest() == f.remote_sha256
        assert f.bytes == len(data) == (here / f.path).stat().st_size

    tampered = here / "out" / "model.bin"
    tampered.write_bytes(b"X" + tampered.read_bytes()[1:])
    checked = {f.path: f for f in verify_artifacts(target, str(job), ["out/"], here)}
    assert checked["out/model.bin"].verified is False
    assert checked["out/metrics.json"].verified is True


def test_remote_hashes_match_with_and_without_sha256sum(
    instance: tuple[SshdServer, SshTarget],
    bare_instance: tuple[SshdServer, SshTarget],
    tmp_path: Path,
):
    job = tmp_path / "remote-job"
    _job_outputs(job)
    with_tool = remote_sha256(instance[1], str(job), ["out", "notes.txt"])
    without = remote_sha256(bare_instance[1], str(job), ["out", "notes.txt"])
    assert with_tool == without
    assert len(with_tool) == 3


def test_only_complete_checkpoints_count(instance: tuple[SshdServer, SshTarget], tmp_path: Path):
    _, target = instance
    ckpt = tmp_path / "ckpt"
    _write(ckpt / "step-100" / "model.pt", b"a" * 1000)
    _write(ckpt / "step-100" / "COMPLETE", "")
    _write(ckpt / "step-200" / "model.pt", b"b" * 1000)  # no marker yet
    _write(ckpt / "last.pt", b"c" * 10)
    watch = CheckpointWatch(target, str(ckpt))

    first = watch.look()
    assert [(c.path, c.complete_by) for c in first] == [("step-100", "marker")]

    with (ckpt / "last.pt").open("ab") as f:  # still being written
        f.write(b"c" * 10)
    second = {c.path: c.complete_by for c in watch.look()}
    assert second == {"step-100": "marker", "step-200": "stable"}

    third = {c.path: c.complete_by for c in watch.look()}
    assert third == {"step-100": "marker", "step-200": "stable", "last.pt": "stable"}
