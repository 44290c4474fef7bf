"""Downloads into the normal HF cache: progress, resume, checksum, cancel."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants, hf_hub_download, scan_cache_dir

from rigdeck.core.errors import HubError
from rigdeck.core.models.sources.hub import Cancelled, DownloadProgress, Hub, HubFile
from rigdeck.core.models.sources.local import discover
from rigdeck.core.secrets import Secret
from tests.support.fake_hub import FakeHub

MiB = 1024 * 1024
TOKEN = "hf_" + "D1l" * 12
REPO = "org/Tiny-GGUF"
SINGLE = "Tiny-Q4_K_M.gguf"
SPLIT = [f"Q8_0/Tiny-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)]
CONTENT = {
    SINGLE: b"GGUF" + os.urandom(3 * MiB),
    SPLIT[0]: b"GGUF" + os.urandom(2 * MiB),
    SPLIT[1]: os.urandom(MiB + 777),
}


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    with FakeHub(tokens={TOKEN}) as server:
        server.add_repo(REPO, CONTENT)
        yield server


@pytest.fixture
def hub(fake: FakeHub, tmp_path: Path) -> Hub:
    return Hub(endpoint=fake.url, token=Secret(TOKEN), cache_dir=tmp_path / "hf-cache")


def _file(hub: Hub, quant: str) -> HubFile:
    return next(f for f in hub.list_files(REPO) if f.quant == quant)


def _cdn_bytes(fake: FakeHub) -> int:
    return sum(s.body_bytes for s in fake.served(server="cdn"))


def _partials(hub: Hub) -> list[Path]:
    return sorted(hub.cache_dir.rglob("*.incomplete"))


def test_download_lands_in_the_hf_cache_with_progress(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q4_K_M")
    updates: list[DownloadProgress] = []
    path = hub.download(file, progress=updates.append)

    assert path.read_bytes() == CONTENT[SINGLE]
    assert path.name == SINGLE
    done = [u.done_bytes for u in updates]
    assert done == sorted(done)  # never goes backwards
    assert len(updates) > 3  # reported while it ran, not only at the end
    assert updates[-1].done_bytes == updates[-1].total_bytes == file.size_bytes
    assert updates[-1].fraction == 1.0

    # The normal HF cache: huggingface_hub itself finds the file without the network, and the
    # blob is named by its sha256 (the LFS oid).
    cached = hf_hub_download(REPO, SINGLE, cache_dir=hub.cache_dir, local_files_only=True)
    assert Path(cached) == path
    assert path.resolve().name == hashlib.sha256(CONTENT[SINGLE]).hexdigest()
    repo = next(r for r in scan_cache_dir(hub.cache_dir).repos if r.repo_id == REPO)
    assert {rev.refs for rev in repo.revisions} == {frozenset({"main"})}
    assert _partials(hub) == []

    # Local discovery sees it as a cached Hub model.
    models = discover(home=hub.cache_dir, env={"HF_HUB_CACHE": str(hub.cache_dir)}, demo=False)
    assert [(m.source, m.repo, m.quant, m.path) for m in models] == [
        ("hf-cache", REPO, "Q4_K_M", path)
    ]


def test_a_cached_file_is_not_downloaded_again(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q4_K_M")
    first = hub.download(file)
    fake.clear_log()
    updates: list[DownloadProgress] = []
    assert hub.download(file, progress=updates.append) == first
    assert _cdn_bytes(fake) == 0
    assert updates[-1].done_bytes == file.size_bytes


def test_split_model_downloads_every_part_next_to_each_other(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q8_0")
    updates: list[DownloadProgress] = []
    path = hub.download(file, progress=updates.append)
    assert path.name == Path(SPLIT[0]).name
    second = path.with_name(Path(SPLIT[1]).name)  # llama.cpp finds the parts by name
    assert path.read_bytes() == CONTENT[SPLIT[0]]
    assert second.read_bytes() == CONTENT[SPLIT[1]]
    assert {u.part for u in updates} == {1, 2}
    assert all(u.part_count == 2 and u.total_bytes == file.size_bytes for u in updates)
    assert updates[-1].done_bytes == file.size_bytes


def test_resumes_after_the_server_drops_the_connection(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q4_K_M")
    cut = MiB + 1234
    fake.drop_after(cut)
    path = hub.download(file)

    assert path.read_bytes() == CONTENT[SINGLE]
    gets = fake.served(server="cdn", method="GET")
    assert len(gets) == 2
    assert gets[0].range is None and gets[0].body_bytes == cut
    assert gets[1].range == f"bytes={cut}-"  # picked up where the connection died
    assert _cdn_bytes(fake) == file.size_bytes  # nothing fetched twice


def test_cancel_from_another_thread_keeps_the_partial_and_resumes(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q4_K_M")
    _reached, release = fake.hold_after(MiB + 100)  # the server stalls mid-file until released
    cancel = threading.Event()
    progressed = threading.Event()
    outcome: list[BaseException | Path] = []

    def on_progress(update: DownloadProgress) -> None:
        if update.done_bytes >= MiB:
            progressed.set()

    def worker() -> None:
        try:
            outcome.append(hub.download(file, progress=on_progress, cancel=cancel))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    assert progressed.wait(10)  # a MiB is on disk and the transfer is in flight
    cancel.set()
    release.set()
    thread.join(10)
    assert not thread.is_alive()

    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert "cancelled" in str(outcome[0])
    assert not (hub.cache_dir / "models--org--Tiny-GGUF" / "snapshots").exists()
    [partial] = _partials(hub)
    kept = partial.stat().st_size
    assert 0 < kept < file.size_bytes

    path = hub.download(file)  # a later call resumes from the kept bytes
    assert path.read_bytes() == CONTENT[SINGLE]
    assert fake.served(server="cdn", method="GET")[-1].range == f"bytes={kept}-"
    assert _partials(hub) == []


def test_checksum_mismatch_is_caught_and_nothing_corrupt_is_cached(fake: FakeHub, hub: Hub) -> None:
    fake.corrupt(REPO, SINGLE)
    file = _file(hub, "Q4_K_M")
    with pytest.raises(HubError) as info:
        hub.download(file)
    message = str(info.value)
    assert "checksum mismatch" in message and SINGLE in message and "try again" in message
    assert list(hub.cache_dir.rglob(SINGLE)) == []
    assert not list((hub.cache_dir / "models--org--Tiny-GGUF" / "blobs").iterdir())
    with pytest.raises(Exception, match="Cannot find the requested files"):
        hf_hub_download(REPO, SINGLE, cache_dir=hub.cache_dir, local_files_only=True)


def test_token_reaches_the_hub_but_not_the_storage_host(fake: FakeHub, hub: Hub) -> None:
    hub.download(_file(hub, "Q4_K_M"))
    assert all(s.authorization == f"Bearer {TOKEN}" for s in fake.served(server="hub"))
    assert all(s.authorization is None for s in fake.served(server="cdn"))


def test_storage_errors_end_in_one_line(fake: FakeHub, hub: Hub) -> None:
    file = _file(hub, "Q4_K_M")
    fake.fail("/blobs/", 500, server="cdn", method="GET")
    with pytest.raises(HubError) as info:
        hub.download(file)
    assert "server error (500)" in str(info.value)
    assert "\n" not in str(info.value)
    assert TOKEN not in str(info.value)


def test_offline_mode_refuses_before_any_request(
    fake: FakeHub, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = _file(hub, "Q4_K_M")
    fake.clear_log()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.download(file)
    assert fake.log == []


def test_a_split_model_missing_parts_is_refused_up_front(fake: FakeHub, hub: Hub) -> None:
    fake.add_repo("org/Broken-GGUF", {"b-00001-of-00002.gguf": b"GGUF"})
    [file] = hub.list_files("org/Broken-GGUF")
    assert not file.complete
    fake.clear_log()
    with pytest.raises(HubError, match="only 1 part"):
        hub.download(file)
    assert fake.served(server="cdn") == []
