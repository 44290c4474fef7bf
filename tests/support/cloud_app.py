"""The app on a fixed machine with its cloud pane wired to a test's Vast simulator.

app = cloud_app(tmp_path, provider)              # the real SDK against `sim`
async with app.run_test(size=(120, 40)) as pilot:
    pane = await cloud_ready(pilot)             # connected, first search and poll drawn
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rigdeck.core.config import load_settings
from rigdeck.core.state import AppState
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.cloud.controller import CloudOptions
from support.fixed_snapshot import FixedSampler, no_gpu_box


def cloud_app(
    tmp_path: Path,
    provider: Any | None,
    *,
    overrides: dict[str, Any] | None = None,
    clock: Callable[[], datetime] | None = None,
    simulate: bool = False,
    **more_options: Any,
) -> RigdeckApp:
    settings = load_settings(
        tmp_path / "none.toml",
        env={},
        overrides={"ui.theme": "rigdeck-dark", "telemetry.refresh_s": 60.0, **(overrides or {})},
    )
    settings = settings.__class__(**{**settings.__dict__, "warnings": ()})
    app = RigdeckApp(
        settings,
        sampler_factory=lambda: FixedSampler(no_gpu_box()),
        state=AppState(tmp_path / "state.json"),
        clock_free=True,
        simulate=simulate,
    )
    options: dict[str, Any] = {"provider": provider, "start_guard": False, **more_options}
    if clock is not None:
        options["clock"] = clock
    app.cloud_options = CloudOptions(**options)  # type: ignore[attr-defined]
    return app


async def until(pilot: Any, condition: Callable[[], bool], *, timeout: float = 15.0,
                what: str = "") -> None:  # fmt: skip
    """Let the app run until `condition` holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)


async def cloud_ready(pilot: Any) -> Any:
    """Show the cloud pane and wait for its first search and first poll to be drawn."""
    await pilot.press("4")
    pane = pilot.app.query_one("#cloud-pane")
    await until(pilot, lambda: pane.searches >= 1 and pane.polls >= 1, what="cloud pane ready")
    await pilot.pause()
    return pane
