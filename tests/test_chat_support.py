"""The chat pane's helpers: typed sampling and progress (core), and the status line's words."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from rigdeck.core.errors import RunError
from rigdeck.core.models.run.chat_support import (
    conversation_path,
    load_fraction,
    parse_sampling,
)
from rigdeck.core.models.run.plan import GenerationStats, LoadStats, RunPlan
from rigdeck.tui.panes.chat.status import measured_line, progress_text, reply_line
from rigdeck.tui.panes.chat.streaming import (
    BUSY_DRAIN_INTERVAL_S,
    DRAIN_INTERVAL_S,
    drain_interval,
)

MiB = 1 << 20


def test_sampling_from_text() -> None:
    s = parse_sampling("0", " 0.9 ", "128", "")
    assert (s.temperature, s.top_p, s.max_tokens, s.seed) == (0.0, 0.9, 128, None)
    assert parse_sampling("1", "1", "1", "42").seed == 42
    assert parse_sampling("1", "1", "1", "random").seed is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (("hot", "1", "1", ""), "temperature"),
        (("1", "1.5", "1", ""), "top-p"),
        (("1", "1", "0", ""), "max tokens"),
        (("1", "1", "2.5", ""), "max tokens"),
        (("1", "1", "1", "abc"), "seed"),
    ],
)
def test_a_wrong_field_is_named_in_one_line(fields: tuple[str, str, str, str], named: str) -> None:
    with pytest.raises(RunError, match=named) as info:
        parse_sampling(*fields)
    assert "\n" not in str(info.value)


def test_progress_only_moves_forward_across_phases() -> None:
    steps = [
        ("reading", 0.0),
        ("reading", 1.0),
        ("loading", 0.0),
        ("loading", 0.5),
        ("loading", 1.0),
        ("warming", 0.0),
        ("warming", 1.0),
    ]
    fractions = [load_fraction(p, f) for p, f in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "50%" in progress_text("m", "loading", 0.5) and "loading weights" in progress_text(
        "m", "loading", 0.5
    )


def test_memory_is_compared_like_for_like_and_rss_stands_apart() -> None:
    plan = RunPlan(
        "m.gguf",
        predicted_ram_bytes=400 * MiB,
        predicted_decode_tps=91.0,
        predicted_buffers=(("CPU KV", 90 * MiB), ("CPU weights", 290 * MiB)),
    )
    load = LoadStats(
        load_seconds=0.5,
        host_rss_delta_bytes=210 * MiB,
        gpu_bytes=None,
        llama_buffers={"CPU_Mapped model": 288 * MiB, "CPU KV": 90 * MiB},
    )
    # RSS grew about half the prediction: shown apart, never as a 2x miss.
    assert measured_line(plan, load) == (
        "predicted 380.0 MiB / llama.cpp 378.0 MiB · RSS +210.0 MiB (mapped file pages: not a"
        " buffer), tok/s after the first reply (predicted 91)"
    )
    reply = GenerationStats(
        prompt_tokens=10,
        prompt_tokens_evaluated=10,
        decode_tokens=20,
        prompt_tps=200.0,
        decode_tps=76.4,
        wall_decode_tps=75.0,
        time_to_first_token_s=0.1,
        total_s=0.4,
        finish_reason="cancelled",
        timing_source="llama.cpp",
    )
    assert measured_line(plan, load, reply).endswith(", 76 tok/s (predicted 91)")
    assert reply_line(reply) == "20 tokens, prompt 200 tok/s, decode 76.4 tok/s · stopped"


def _gpu_load(llama_buffers: dict[str, int]) -> LoadStats:
    """A load with some layers on the GPU where NVML could not see the process."""
    return LoadStats(
        load_seconds=2.0,
        host_rss_delta_bytes=250 * MiB,
        gpu_bytes=None,
        llama_buffers=llama_buffers,
    )


def test_a_split_load_is_compared_per_device() -> None:
    plan = RunPlan(
        "m.gguf",
        gpu_layers=20,
        predicted_buffers=(("CPU weights", 2048 * MiB), ("GPU0 weights", 3 * 1024 * MiB)),
    )
    load = _gpu_load({"CUDA0 model": 3 * 1024 * MiB, "CPU_Mapped model": 1800 * MiB})
    line = measured_line(plan, load)
    assert line.startswith(
        "GPU0 predicted 3.0 GiB / llama.cpp 3.0 GiB · CPU predicted 2.0 GiB / llama.cpp 1.8 GiB"
    )


def test_without_llama_report_the_gpu_falls_back_to_its_buffers() -> None:
    plan = RunPlan(
        "m.gguf", gpu_layers=-1, predicted_vram_bytes=5 * 1024 * MiB, predicted_ram_bytes=300 * MiB
    )
    load = _gpu_load({"CUDA0 model": 4 * 1024 * MiB, "CPU_Mapped model": 50 * MiB})
    line = measured_line(plan, load)
    assert line.startswith("GPU predicted 5.0 GiB / measured 4.0 GiB · RSS +250.0 MiB")


def test_saved_chat_names_are_safe_and_sortable() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5)
    path = conversation_path(Path("/d"), "/m/My Model: v2.Q4_K_M.gguf", when, ".md")
    assert path == Path("/d/20260102-030405-My-Model-v2.Q4_K_M.md")


def test_a_reply_is_drawn_less_often_when_generation_takes_every_core() -> None:
    assert drain_interval(2, 2) == BUSY_DRAIN_INTERVAL_S > DRAIN_INTERVAL_S
    assert drain_interval(4, 8) == DRAIN_INTERVAL_S  # a core to spare for the screen
    assert drain_interval(None, 2) == DRAIN_INTERVAL_S  # llama-cpp-python's half the cores
    assert drain_interval(8, None) == DRAIN_INTERVAL_S
