"""Layout snapshots at 80x24 and 160x48, on a fixed machine so they never depend on this one."""

from __future__ import annotations

import pytest

from rigdeck.core.config import load_settings
from rigdeck.core.state import AppState
from rigdeck.tui.app import RigdeckApp
from tests.support.fixed_snapshot import FixedSampler, gpu_box, no_gpu_box


def fixed_app(tmp_path, snapshot, theme="rigdeck-dark") -> RigdeckApp:
    # One reading only: a long refresh keeps the history graphs the same on every run.
    settings = load_settings(
        tmp_path / "none.toml", env={}, overrides={"ui.theme": theme, "telemetry.refresh_s": 60.0}
    )
    settings = settings.__class__(**{**settings.__dict__, "warnings": ()})
    return RigdeckApp(
        settings,
        sampler_factory=lambda: FixedSampler(snapshot),
        state=AppState(tmp_path / "state.json"),
        clock_free=True,
    )


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    # Stop the refresh timer so nothing changes while the screenshot is taken.
    for timer in list(pilot.app._timers):
        timer.stop()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_telemetry_layout_gpu_box(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, gpu_box()), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_telemetry_layout_no_gpu(snap_compare, tmp_path, size):
    assert snap_compare(fixed_app(tmp_path, no_gpu_box()), terminal_size=size, run_before=settle)


def test_sixteen_colour_theme(snap_compare, tmp_path):
    app = fixed_app(tmp_path, gpu_box(gpus=2), theme="rigdeck-16")
    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)


def test_help_screen(snap_compare, tmp_path):
    async def open_help(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(
        fixed_app(tmp_path, gpu_box()), terminal_size=(100, 30), run_before=open_help
    )
