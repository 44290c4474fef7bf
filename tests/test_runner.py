"""The runner's plain values and failure paths; no model needed (real-model tests: _slow)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rigdeck.core.errors import RunError
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.llama_log import parse_buffer_sizes
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import LoadError, RunPlan, next_plans_down
from rigdeck.core.models.run.session import _split_stop


def test_plan_rejects_unknown_kv_type_in_one_line() -> None:
    with pytest.raises(RunError, match="type_k") as info:
        RunPlan("m.gguf", type_k="q5_1")  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_quantized_v_cache_needs_flash_attention() -> None:
    with pytest.raises(RunError, match="flash attention"):
        RunPlan("m.gguf", type_v="q8_0")
    assert RunPlan("m.gguf", type_k="q8_0", type_v="q8_0", flash_attn=True).type_v == "q8_0"


def test_settings_leave_out_path_and_predictions() -> None:
    plan = RunPlan("m.gguf", gpu_layers=20, n_ctx=8192, predicted_decode_tps=41.0)
    settings = plan.settings()
    assert settings["gpu_layers"] == 20 and settings["n_ctx"] == 8192
    assert "model_path" not in settings
    assert not any(key.startswith("predicted") for key in settings)


def test_steps_down_shorten_context_then_offload_fewer_layers() -> None:
    plan = RunPlan("m.gguf", gpu_layers=32, n_ctx=8192, predicted_vram_bytes=9_000_000_000)
    steps = next_plans_down(plan)
    assert steps[0].gpu_layers == 32 and steps[0].n_ctx == 4096
    layer_steps = [s.gpu_layers for s in steps if s.n_ctx == 8192]
    assert layer_steps == sorted(layer_steps, reverse=True)
    assert layer_steps[-1] == 0
    assert all(s.gpu_layers < 32 for s in steps if s.n_ctx == 8192)
    assert all(s.predicted_vram_bytes is None for s in steps)
    assert len(set(steps)) == len(steps) and plan.without_predictions() not in steps


def test_cpu_plan_can_only_shorten_context() -> None:
    steps = next_plans_down(RunPlan("m.gguf", gpu_layers=0, n_ctx=2048))
    assert [s.n_ctx for s in steps] == [1024, 512]
    assert all(s.gpu_layers == 0 for s in steps)
    assert next_plans_down(RunPlan("m.gguf", gpu_layers=0, n_ctx=512)) == []


def test_all_layers_steps_down_by_model_depth() -> None:
    steps = next_plans_down(RunPlan("m.gguf", gpu_layers=-1, n_ctx=512), n_layers=40)
    assert [s.gpu_layers for s in steps] == [30, 20, 10, 0]
    unknown = next_plans_down(RunPlan("m.gguf", gpu_layers=-1, n_ctx=512))
    assert [s.gpu_layers for s in unknown] == [0]


def test_buffer_sizes_are_read_from_llama_log_lines() -> None:
    log = (
        "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n"
        "load_tensors:        CUDA0 model buffer size =  4000.00 MiB\n"
        "llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB\n"
        "llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB\n"
        "sched_reserve:   CUDA_Host compute buffer size =    12.01 MiB\n"
    )
    sizes = parse_buffer_sizes(log)
    assert sizes["CUDA0 KV"] == 512 * 2**20  # two caches (sliding window) add up
    assert sizes["CPU_Mapped model"] == int(92.10 * 2**20)
    assert set(sizes) == {"CPU_Mapped model", "CUDA0 model", "CUDA0 KV", "CUDA_Host compute"}


def test_stop_strings_are_held_back_until_decided() -> None:
    assert _split_stop("Hello <|im", ["<|im_end|>"]) == ("Hello ", "<|im", False)
    assert _split_stop("Hello <|im_end|> junk", ["<|im_end|>"]) == ("Hello ", "", True)
    assert _split_stop("a < b", ["<|im_end|>"]) == ("a < b", "", False)


needs_llama = pytest.mark.skipif(not llama_available(), reason="llama-cpp-python not installed")


@needs_llama
def test_missing_file_is_a_one_line_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError) as info:
        load_model(RunPlan(str(tmp_path / "nope.gguf"), n_ctx=512))
    assert isinstance(info.value, LoadError) and info.value.reason == "missing"
    assert "nope.gguf" in str(info.value) and "\n" not in str(info.value)


@needs_llama
def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>" * 10)
    with pytest.raises(LoadError) as info:
        load_model(RunPlan(str(bad), n_ctx=512))
    assert info.value.reason == "corrupt" and "not a GGUF" in str(info.value)


def test_llama_thread_runs_calls_in_order_and_hands_back_results_and_errors() -> None:
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * i

    futures = [LLAMA_THREAD.submit(lambda i=i: job(i)) for i in range(5)]
    assert [f.result(timeout=10) for f in futures] == [0, 1, 4, 9, 16]
    assert [i for i, _ in seen] == list(range(5)) and len({name for _, name in seen}) == 1

    def fails() -> None:
        raise RunError("the model was unloaded; load it again")

    with pytest.raises(RunError, match="unloaded"):
        LLAMA_THREAD.run(fails)
    # A call made on the llama thread itself runs there at once instead of waiting on itself.
    assert LLAMA_THREAD.run(lambda: LLAMA_THREAD.run(lambda: job(7))) == 49
    assert seen[-1][1] == seen[0][1] != threading.current_thread().name
