"""How figures read on every screen and in the CLI: one unit convention, one tok/s, one money."""

from __future__ import annotations

from rigdeck.core.models.fit.settings import build_run_settings
from rigdeck.tui import words
from rigdeck.tui.cli import watch_line
from tests.support.fixed_snapshot import gpu_box

GiB = 1 << 30
MiB = 1 << 20


def test_sizes_are_binary_and_say_so() -> None:
    assert words.size(int(9.6 * GiB)) == "9.6 GiB"
    assert words.size(300 * MiB) == "300.0 MiB"
    assert words.size(512) == "512 B"
    assert words.size(None) == "-"
    assert words.size_pair(12 * GiB, 32 * GiB) == "12.0/32.0 GiB"
    assert words.size_pair(None, 32 * GiB) == "N/A/32.0 GiB"


def test_the_cli_watch_line_uses_the_same_units_as_the_panes() -> None:
    line = watch_line(gpu_box())
    assert "ram 12.0/32.0 GiB" in line
    assert "9.3 GiB" in line and "G " not in line.replace("GiB", "")


def test_tokens_per_second_read_the_same_everywhere() -> None:
    assert [words.tps(x) for x in (7.25, 38.2, 0.0, None)] == ["7.2", "38", "-", "-"]


def test_money_has_cents_and_a_sign() -> None:
    assert [words.money(x) for x in (1.234, 0.004, -0.5, 1234.5, None)] == [
        "$1.23",
        "$0.004",
        "-$0.50",
        "$1,234.50",
        "-",
    ]


def test_durations_and_contexts() -> None:
    assert [words.duration(s) for s in (3 * 86400 + 4 * 3600, 5 * 3600 + 720, 423)] == [
        "3d 4h",
        "5h 12m",
        "7m 3s",
    ]
    assert [words.context(n) for n in (0, 4096, 3000)] == ["model max", "4k", "3000"]


def test_the_kv_fallback_is_worded_once_for_every_face() -> None:
    assert words.kv(build_run_settings(kv="q8_0", flash="off")) == (
        "K q8_0, V f16 (a quantized V needs flash attention)"
    )
    assert words.kv(build_run_settings(kv="q8_0")) == "q8_0"
