"""`rigdeck serve` loads the model as the fit placed it, like `rigdeck run`: the same model and
settings allocate the same llama.cpp buffers served as in process, experts kept on the CPU and a
small sliding-window cache included (llama_cpp.server alone can do neither)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rigdeck.core.models.run import serve
from rigdeck.core.models.run.llama_glue import LOG_SINK
from rigdeck.core.models.run.llama_log import parse_buffer_sizes
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import RunPlan
from rigdeck.core.models.run.serve import start_server
from tests.support.gguf_factory import write_model

pytestmark = pytest.mark.skipif(
    bool(serve.missing_server_packages()), reason="llama-cpp-python[server] is not installed"
)


OVERRIDDEN = "buffer type overridden to CPU"


def in_process(plan: RunPlan) -> tuple[dict[str, int], str]:
    """llama.cpp's buffers and load log for ``plan`` loaded the way `rigdeck run` loads it."""
    with LOG_SINK.capture() as lines, load_model(plan, kind="run") as model:
        return dict(model.load_stats.llama_buffers), "".join(lines)


def served(plan: RunPlan, log_dir: Path) -> tuple[dict[str, int], str]:
    """The same from the server's log, once `rigdeck serve`'s server answers."""
    handle = start_server(plan, log_dir=log_dir, ready_timeout=180)
    try:
        text = handle.log_path.read_text(errors="replace")
        return parse_buffer_sizes(text), text
    finally:
        handle.stop()


def test_experts_kept_on_the_cpu_are_served_as_run(tmp_path: Path) -> None:
    path = write_model(tmp_path / "moe.gguf", "qwen3-30b-a3b-tiny", quant="Q8_0")
    plan = RunPlan(str(path), gpu_layers=-1, n_ctx=512, n_cpu_moe=2, n_threads=1)
    run, run_log = in_process(plan)
    serve_buffers, serve_log = served(plan, tmp_path)
    # Two blocks' routed experts (gate, up, down) stay on the CPU, served as in process.
    assert run_log.count(OVERRIDDEN) == serve_log.count(OVERRIDDEN) == 6
    assert serve_buffers == run


def test_a_small_sliding_window_cache_is_served_as_run(tmp_path: Path) -> None:
    path = write_model(tmp_path / "swa.gguf", "gemma-2-9b-tiny", quant="Q8_0")
    plan = RunPlan(str(path), n_ctx=4096, flash_attn=True, swa_full=False, n_threads=1)
    run, _ = in_process(plan)
    full, _ = in_process(replace(plan, swa_full=True))
    assert full["CPU KV"] > run["CPU KV"]  # what llama_cpp.server alone would allocate
    assert served(plan, tmp_path)[0] == run
