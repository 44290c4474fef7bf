"""The one RunSettings builder: config [models] under flags or pane controls, one rule for V."""

from __future__ import annotations

import pytest

from rigdeck.core.config import ModelSettings
from rigdeck.core.errors import FitError
from rigdeck.core.models.fit.settings import build_run_settings, parse_flash
from rigdeck.tui import words


def test_config_alone_gives_its_context_kv_and_flash() -> None:
    s = build_run_settings(ModelSettings(context=8192, kv_type="q8_0", flash_attn="on"))
    assert (s.n_ctx, s.type_k, s.type_v, s.flash_attn) == (8192, "q8_0", "q8_0", True)
    assert words.kv(s) == "q8_0" and s.flash == "on"


def test_nothing_said_gives_the_defaults() -> None:
    s = build_run_settings()
    assert (s.n_ctx, s.type_k, s.type_v, s.flash_attn, s.flash) == (
        4096,
        "f16",
        "f16",
        None,
        "auto",
    )


def test_flags_win_over_the_config() -> None:
    config = ModelSettings(context=8192, kv_type="q8_0", flash_attn="off")
    s = build_run_settings(config, ctx=2048, kv="f16", flash=True, gpu_layers=10, threads=3)
    assert (s.n_ctx, s.type_k, s.type_v, s.flash_attn) == (2048, "f16", "f16", True)
    assert (s.gpu_layers, s.n_threads) == (10, 3)


@pytest.mark.parametrize(
    ("config", "flags"),
    [
        (ModelSettings(kv_type="q8_0", flash_attn="off"), {}),  # the config alone
        (ModelSettings(), {"kv": "q8_0", "flash": False}),  # --kv q8_0 --no-flash-attn
        (ModelSettings(), {"kv": "q8_0", "flash": "off"}),  # the pane's controls
        (ModelSettings(flash_attn="off"), {"kv": "q8_0"}),  # a flag over the config
    ],
)
def test_a_quantized_v_without_flash_attention_falls_back_to_f16_everywhere(
    config: ModelSettings, flags: dict[str, object]
) -> None:
    s = build_run_settings(config, **flags)  # type: ignore[arg-type]
    assert (s.type_k, s.type_v, s.flash_attn) == ("q8_0", "f16", False)
    assert s.v_fallback
    assert words.kv(s) == "K q8_0, V f16 (a quantized V needs flash attention)"


def test_auto_flash_attention_keeps_a_quantized_v() -> None:
    s = build_run_settings(kv="q4_0")
    assert (s.type_k, s.type_v, s.v_fallback) == ("q4_0", "q4_0", False)
    off = build_run_settings(kv="f16", flash="off")
    assert not off.v_fallback and words.kv(off) == "f16"


def test_unknown_values_name_the_choices() -> None:
    with pytest.raises(FitError, match="f16, q8_0, q4_0"):
        build_run_settings(kv="q3_k")
    with pytest.raises(FitError, match="auto, on or off"):
        build_run_settings(flash="sometimes")
    assert [parse_flash(v) for v in (None, True, False, "ON", "false")] == [
        "auto",
        "on",
        "off",
        "on",
        "off",
    ]
