"""The models pane's context / KV / flash controls are remembered between runs of the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigdeck.core.state import AppState
from tests.support.fixed_snapshot import no_gpu_box
from tests.support.models_env import isolate, open_models, pane_app, settle, write_models


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    isolate(tmp_path, monkeypatch)
    return write_models(tmp_path / "models")


async def test_controls_set_in_one_run_are_there_in_the_next(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    app = pane_app(tmp_path, no_gpu_box(), dirs=[models["8b"].parent])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert (pane.controls.context, pane.controls.kv_type, pane.controls.flash) == (
            4096,
            "f16",
            "auto",
        )
        await pilot.press("c", "v", "a")  # 8k, q8_0, flash on
        await settle(pilot)
        assert (pane.controls.context, pane.controls.kv_type, pane.controls.flash) == (
            8192,
            "q8_0",
            "on",
        )

    # A new app (the same state dir): the rows are fitted with what was set, not the config's.
    again = pane_app(tmp_path, no_gpu_box(), dirs=[models["8b"].parent])
    async with again.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert (pane.controls.context, pane.controls.kv_type, pane.controls.flash) == (
            8192,
            "q8_0",
            "on",
        )
        placement = next(iter(pane.fitted.values())).placement
        assert placement is not None and placement.settings.n_ctx == 8192


async def test_a_damaged_memory_falls_back_to_the_config(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    AppState().set("models.controls", {"context": "lots", "kv_type": "q3_k", "flash": 7})
    app = pane_app(tmp_path, no_gpu_box(), dirs=[models["8b"].parent], **{"models.kv_type": "q4_0"})
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert (pane.controls.context, pane.controls.kv_type, pane.controls.flash) == (
            4096,
            "q4_0",
            "auto",
        )
