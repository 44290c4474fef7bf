"""Hub search, listing and errors through the real huggingface_hub client against a local Hub."""

from __future__ import annotations

import io
import logging
import socket
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import _http as hf_http

from rigdeck.core.errors import HubError
from rigdeck.core.models.format.quant_names import quant_from_file_type, quant_from_filename
from rigdeck.core.models.sources.hub import Hub, HubFilePart, group_files
from rigdeck.core.secrets import Secret
from tests.support.fake_hub import FakeHub

TOKEN = "hf_" + "T0k" * 12
OTHER_TOKEN = "hf_" + "0th" * 12


@pytest.fixture
def fake() -> Iterator[FakeHub]:
    with FakeHub(tokens={TOKEN, OTHER_TOKEN}) as server:
        server.add_repo(
            "bartowski/Llama-3.2-1B-Instruct-GGUF",
            {
                "Llama-3.2-1B-Instruct-Q4_K_M.gguf": b"GGUF" + b"\0" * 3000,
                "Llama-3.2-1B-Instruct-IQ2_XXS.gguf": b"GGUF" + b"\1" * 1000,
                "Llama-3.2-1B-Instruct-f16.gguf": b"GGUF" + b"\2" * 6000,
                "README.md": b"# card",
            },
            downloads=900,
            likes=12,
        )
        server.add_repo(
            "unsloth/Big-GGUF",
            {
                "UD-Q4_K_XL/Big-UD-Q4_K_XL-00001-of-00002.gguf": b"GGUF" + b"a" * 4000,
                "UD-Q4_K_XL/Big-UD-Q4_K_XL-00002-of-00002.gguf": b"b" * 3000,
                "mmproj-BF16.gguf": b"GGUF" + b"p" * 100,
                "gpt-oss-20b-MXFP4.gguf": b"GGUF" + b"m" * 2000,
            },
            downloads=50,
        )
        server.add_repo("meta/Gated-GGUF", {"g.Q8_0.gguf": b"GGUF" + b"g" * 500}, gated=True)
        server.add_repo("me/Private-GGUF", {"p.Q4_0.gguf": b"GGUF" + b"p" * 500}, private=True)
        server.add_repo("org/safetensors-only", {"model.safetensors": b"x" * 100}, tags=["pytorch"])
        yield server


@pytest.fixture
def no_backoff_wait(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """huggingface_hub retries 429/5xx/connection errors with waits of 1..8 s; record the waits
    instead of sleeping through them (the retries themselves still happen)."""
    waits: list[float] = []
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=waits.append))
    return waits


def _hub(fake: FakeHub, tmp_path: Path, token: str | None = None) -> Hub:
    return Hub(endpoint=fake.url, token=Secret(token) if token else None, cache_dir=tmp_path / "hf")


def test_search_lists_gguf_repos_most_downloaded_first(fake: FakeHub, tmp_path: Path) -> None:
    hub = _hub(fake, tmp_path)
    repos = hub.search()
    assert [r.repo_id for r in repos] == [
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "unsloth/Big-GGUF",
        "meta/Gated-GGUF",
    ]  # private repos stay hidden without a token; non-GGUF repos never show
    assert repos[0].downloads == 900 and repos[0].likes == 12
    assert repos[0].author == "bartowski"
    assert repos[2].gated
    assert [r.repo_id for r in hub.search("llama")] == ["bartowski/Llama-3.2-1B-Instruct-GGUF"]
    assert hub.search("no-such-model") == []
    request = fake.served(path_contains="/api/models")[0]
    assert "filter=gguf" in request.query


def test_search_follows_pages_and_respects_limit(fake: FakeHub, tmp_path: Path) -> None:
    for i in range(7):
        fake.add_repo(f"many/m{i}-GGUF", {"m.Q4_0.gguf": b"GGUF"}, downloads=i)
    fake.page_size = 3
    hub = _hub(fake, tmp_path)
    assert len(hub.search("m", limit=100)) == 9  # 7 + llama + private-less repos containing "m"
    assert len(fake.served(path_contains="/api/models")) > 1  # it walked the Link pages
    assert len(hub.search("many", limit=4)) == 4


def test_token_shows_private_repos(fake: FakeHub, tmp_path: Path) -> None:
    hub = _hub(fake, tmp_path, TOKEN)
    assert "me/Private-GGUF" in [r.repo_id for r in hub.search()]
    assert [f.path for f in hub.list_files("me/Private-GGUF")] == ["p.Q4_0.gguf"]


def test_list_files_groups_splits_and_labels_quants(fake: FakeHub, tmp_path: Path) -> None:
    files = _hub(fake, tmp_path).list_files("unsloth/Big-GGUF")
    by_quant = {f.quant: f for f in files}
    assert set(by_quant) == {"UD-Q4_K_XL", "MXFP4", "BF16"}
    split = by_quant["UD-Q4_K_XL"]
    assert split.path == "UD-Q4_K_XL/Big-UD-Q4_K_XL-00001-of-00002.gguf"
    assert len(split.parts) == 2
    assert split.size_bytes == 4004 + 3000
    assert split.complete
    assert all(p.sha256 and len(p.sha256) == 64 for p in split.parts)  # LFS metadata kept
    assert by_quant["BF16"].is_projector
    assert files[-1].is_projector  # projectors sort after the models


def test_list_files_sizes_come_from_the_listing(fake: FakeHub, tmp_path: Path) -> None:
    files = _hub(fake, tmp_path).list_files("bartowski/Llama-3.2-1B-Instruct-GGUF")
    assert [(f.quant, f.size_bytes) for f in files] == [
        ("IQ2_XXS", 1004),
        ("Q4_K_M", 3004),
        ("F16", 6004),
    ]  # smallest first; README.md is not a model
    assert all(f.revision == "main" for f in files)


def test_group_files_flags_incomplete_splits() -> None:
    files = group_files(
        "o/r",
        "main",
        [HubFilePart("m-00001-of-00003.gguf", 10), HubFilePart("m-00003-of-00003.gguf", 10)],
    )
    assert len(files) == 1
    assert not files[0].complete


# --- errors: one clear line each --------------------------------------------------------------


def test_unknown_repo(fake: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError) as info:
        _hub(fake, tmp_path).list_files("nobody/nothing")
    message = str(info.value)
    assert "nobody/nothing" in message and "not found" in message
    assert "HF_TOKEN" in message  # without a token, a private repo looks missing: say so


def test_private_repo_without_token_looks_missing(fake: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="not found"):
        _hub(fake, tmp_path).list_files("me/Private-GGUF")


def test_invalid_token_is_reported_as_such(fake: FakeHub, tmp_path: Path) -> None:
    bad = "hf_" + "bad" * 12
    with pytest.raises(HubError) as info:
        _hub(fake, tmp_path, bad).search()
    assert "token was rejected" in str(info.value)
    assert bad not in str(info.value)


def test_gated_repo_without_token(fake: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError) as info:
        _hub(fake, tmp_path).open("meta/Gated-GGUF", "g.Q8_0.gguf")
    message = str(info.value)
    assert "gated" in message
    assert f"{fake.url}/meta/Gated-GGUF" in message  # where to accept the terms
    assert "HF_TOKEN" in message


def test_gated_repo_with_token_not_yet_granted_then_granted(fake: FakeHub, tmp_path: Path) -> None:
    hub = _hub(fake, tmp_path, TOKEN)
    with pytest.raises(HubError, match=r"gated.*accept its terms"):
        hub.open("meta/Gated-GGUF", "g.Q8_0.gguf")
    fake.grant("meta/Gated-GGUF", TOKEN)
    source = hub.open("meta/Gated-GGUF", "g.Q8_0.gguf")
    assert source.read_at(0, 4) == b"GGUF"


def test_missing_file(fake: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="no such file"):
        _hub(fake, tmp_path).open("unsloth/Big-GGUF", "nope.gguf")


def test_missing_revision(fake: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="revision v9 does not exist"):
        _hub(fake, tmp_path).list_files("unsloth/Big-GGUF", revision="v9")


def test_server_error_on_resolve(fake: FakeHub, tmp_path: Path) -> None:
    fake.fail("/resolve/", 500, times=10)
    with pytest.raises(HubError) as info:
        _hub(fake, tmp_path).open("unsloth/Big-GGUF", "gpt-oss-20b-MXFP4.gguf")
    assert "server error (500)" in str(info.value)
    assert "\n" not in str(info.value)


def test_search_retries_a_transient_server_error(
    fake: FakeHub, tmp_path: Path, no_backoff_wait: list[float]
) -> None:
    fake.fail("/api/models", 503, times=1)
    assert len(_hub(fake, tmp_path).search()) == 3
    assert len(no_backoff_wait) == 1


def test_search_gives_up_on_a_hub_that_stays_down(
    fake: FakeHub, tmp_path: Path, no_backoff_wait: list[float]
) -> None:
    fake.fail("/api/models", 500, times=100)
    with pytest.raises(HubError, match=r"server error \(500\).*try again later"):
        _hub(fake, tmp_path).search()
    assert len(no_backoff_wait) >= 3  # it did retry before giving up


def test_rate_limited(fake: FakeHub, tmp_path: Path, no_backoff_wait: list[float]) -> None:
    fake.fail("/api/models", 429, times=100, headers={"Retry-After": "1"})
    with pytest.raises(HubError) as info:
        _hub(fake, tmp_path).search()
    assert "rate-limiting" in str(info.value)
    assert "HF_TOKEN" in str(info.value)  # logging in raises the limit


def test_connection_refused(tmp_path: Path, no_backoff_wait: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = Hub(endpoint=f"http://127.0.0.1:{port}", cache_dir=tmp_path)
    with pytest.raises(HubError, match=r"cannot reach http://127\.0\.0\.1"):
        hub.open("a/b", "c.gguf")
    with pytest.raises(HubError, match="cannot reach"):
        hub.search()


def test_offline_mode(fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub = _hub(fake, tmp_path)
    for call in (hub.search, lambda: hub.list_files("unsloth/Big-GGUF")):
        with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
            call()
    assert fake.log == []  # nothing left the machine


# --- the token --------------------------------------------------------------------------------


def test_token_goes_to_the_hub_but_never_to_storage(fake: FakeHub, tmp_path: Path) -> None:
    hub = _hub(fake, tmp_path, TOKEN)
    hub.search()
    hub.list_files("unsloth/Big-GGUF")
    source = hub.open("unsloth/Big-GGUF", "gpt-oss-20b-MXFP4.gguf")
    assert source.read_at(0, 4) == b"GGUF"
    hub_requests = fake.served(server="hub")
    cdn_requests = fake.served(server="cdn")
    assert hub_requests and cdn_requests
    assert all(r.authorization == f"Bearer {TOKEN}" for r in hub_requests)
    assert all(r.authorization is None for r in cdn_requests)


def test_without_a_token_none_is_sent(
    fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even if huggingface_hub could find one on its own (env, login file), a Hub built without
    # a token sends none: the user's choice in rigdeck wins.
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    _hub(fake, tmp_path).search()
    assert all(r.authorization is None for r in fake.log)


def test_from_env_uses_hf_token(
    fake: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    hub = Hub.from_env(endpoint=fake.url, cache_dir=tmp_path)
    assert hub.has_token
    assert "me/Private-GGUF" in [r.repo_id for r in hub.search()]


def test_token_never_appears_in_reprs_errors_or_logs(
    fake: FakeHub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    no_backoff_wait: list[float],
) -> None:
    hub = _hub(fake, tmp_path, TOKEN)
    seen: list[str] = [repr(hub), str(hub)]
    fake.fail("/api/models", 500, times=100)
    fake.fail("/tree/", 403, times=1)
    with caplog.at_level(logging.DEBUG):
        for call in (
            hub.search,
            lambda: hub.list_files("unsloth/Big-GGUF"),
            lambda: hub.open("meta/Gated-GGUF", "g.Q8_0.gguf"),
            lambda: hub.open("unsloth/Big-GGUF", "missing.gguf"),
        ):
            with pytest.raises(HubError) as info:
                call()
            seen += [str(info.value), repr(info.value)]
            assert info.value.__cause__ is None  # no chained traceback carrying request details
        source = hub.open("unsloth/Big-GGUF", "gpt-oss-20b-MXFP4.gguf")
        source.read_at(0, 100)
        seen.append(repr(source))
    captured = capsys.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    assert fake.served(server="hub")[-1].authorization == f"Bearer {TOKEN}"  # it was in use
    for text in seen:
        assert TOKEN not in text


# --- quant labels as they appear in real repos ------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("Qwen2.5-7B-Instruct-IQ2_XXS.gguf", "IQ2_XXS"),
        ("Qwen2.5-7B-Instruct-IQ2_XS.gguf", "IQ2_XS"),
        ("Meta-Llama-3-8B-Instruct.Q8_0.gguf", "Q8_0"),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "F16"),
        ("gemma-2-2b-it-bf16.gguf", "BF16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("DeepSeek-R1-UD-IQ1_S-00001-of-00004.gguf", "UD-IQ1_S"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("mistral-7b-instruct-v0.2.Q3_K_L.gguf", "Q3_K_L"),
        ("Q4_K_S/Model-Q4_K_S-00002-of-00003.gguf", "Q4_K_S"),
        ("tinyllama-1.1b-chat-v1.0.Q2_K.gguf", "Q2_K"),
        ("model-IQ4_NL.gguf", "IQ4_NL"),
        ("BitNet-b1.58-2B-TQ1_0.gguf", "TQ1_0"),
        ("Qwen2.5-0.5B-Instruct.gguf", None),  # "Q" inside a name is not a quant
        ("llama3.1:8b-instruct-q4_K_M", "Q4_K_M"),  # ollama tags are lower case
    ],
)
def test_quant_label_from_filename(filename: str, label: str | None) -> None:
    assert quant_from_filename(filename) == label


def test_quant_label_from_gguf_file_type_matches_llama_cpp() -> None:
    gguf = pytest.importorskip("gguf")
    for member in gguf.LlamaFileType:
        if member.name == "GUESSED":
            continue
        name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert quant_from_file_type(member.value) == name, member
        assert quant_from_file_type(member.value | 1024) == name  # the "guessed" flag is ignored
    assert quant_from_file_type(None) is None
    assert quant_from_file_type(999) is None


# --- the fake Hub as other tests use it -------------------------------------------------------


def test_a_folder_of_ggufs_served_as_repos(tmp_path: Path) -> None:
    root = tmp_path / "served"
    (root / "alice" / "Tiny-GGUF").mkdir(parents=True)
    (root / "alice" / "Tiny-GGUF" / "tiny.Q4_0.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    (root / "bob" / "Other-GGUF" / "sub").mkdir(parents=True)
    (root / "bob" / "Other-GGUF" / "sub" / "o-Q6_K.gguf").write_bytes(b"GGUF" + b"\1" * 50)
    with FakeHub() as fake:
        fake.add_directory(root)
        hub = Hub(endpoint=fake.url, cache_dir=tmp_path / "cache")
        assert sorted(r.repo_id for r in hub.search()) == ["alice/Tiny-GGUF", "bob/Other-GGUF"]
        [file] = hub.list_files("bob/Other-GGUF")
        assert (file.path, file.quant, file.size_bytes) == ("sub/o-Q6_K.gguf", "Q6_K", 54)
        assert hub.open("bob/Other-GGUF", file.path).read_at(0, 5) == b"GGUF\1"


def test_tracebacks_with_locals_do_not_show_the_token(fake: FakeHub, tmp_path: Path) -> None:
    # The app's crash screen renders tracebacks with local variables: none may hold the token.
    from rich.console import Console
    from rich.traceback import Traceback

    hub = _hub(fake, tmp_path, TOKEN)
    readme = hub.open("bartowski/Llama-3.2-1B-Instruct-GGUF", "README.md")  # served by the Hub
    fake.fail("/resolve/", 500, method="GET")
    errors: list[HubError] = []
    for call in (
        lambda: readme.read_at(0, 10),
        lambda: hub.list_files("nobody/nothing"),
        lambda: hub.open("meta/Gated-GGUF", "g.Q8_0.gguf"),
    ):
        with pytest.raises(HubError) as info:
            call()
        errors.append(info.value)
    assert fake.served(method="GET", path_contains="README")[-1].authorization  # token was sent

    out = io.StringIO()
    console = Console(file=out, width=240, record=True)
    for exc in errors:
        console.print(
            Traceback.from_exception(
                type(exc), exc, exc.__traceback__, show_locals=True, locals_max_string=2000
            )
        )
    text = console.export_text()
    assert "read_at" in text  # the frames and their locals were rendered
    assert TOKEN not in text
