"""With the Hub unreachable every Hub request says so in one line at once, not after
huggingface_hub's ~24 s of retries: search, listing, a remote fit, a download, `rigdeck fit`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rigdeck.core.errors import HubError
from rigdeck.core.models.sources.hub import Hub
from rigdeck.core.models.sources.hub_values import HubFile, HubFilePart
from rigdeck.tui.cli import main

# Generous for a loaded machine; the retries it replaces take 24 s. The exact figure is printed
# by bench/hub_unreachable.py.
DEADLINE_S = 8.0


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback port nothing listens on: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield url


def _refused(call: Callable[[], object], endpoint: str) -> str:
    started = time.monotonic()
    with pytest.raises(HubError) as info:
        call()
    assert time.monotonic() - started < DEADLINE_S
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach {endpoint}")
    assert "check the connection or HF_ENDPOINT" in message
    return message


def test_every_hub_request_says_at_once_that_the_hub_is_unreachable(
    closed_endpoint: str, tmp_path: Path
) -> None:
    hub = Hub(endpoint=closed_endpoint, cache_dir=tmp_path / "hub")
    _refused(lambda: hub.search("llama"), closed_endpoint)
    _refused(lambda: hub.list_files("owner/model"), closed_endpoint)
    _refused(lambda: hub.open("owner/model", "model-Q4_K_M.gguf").read_at(0, 16), closed_endpoint)
    file = HubFile("owner/model", "main", (HubFilePart("model-Q4_K_M.gguf", 1 << 20, None),))
    _refused(lambda: hub.download(file), closed_endpoint)


def test_rigdeck_fit_of_a_hub_model_fails_in_one_line_promptly(
    closed_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    rc = main(["fit", "hf:owner/model", "--json"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert elapsed < DEADLINE_S
    assert f"cannot reach {closed_endpoint}" in err
    assert "Retrying" not in err
