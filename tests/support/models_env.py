"""A deterministic models pane: generated GGUFs in a configured folder, a fixed machine, a fixed
CPU calibration, and home / HF cache / XDG cache in temp folders (never the user's ~/.cache)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.theme import Theme
from textual.widgets import Footer

from rigdeck.core.config import Settings, load_settings
from rigdeck.core.models.run.calibrate import RATES_VERSION
from rigdeck.core.state import AppState
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.core.themes import builtin_themes
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.models import ModelsPane
from tests.support.fixed_snapshot import FixedSampler, gpu_box
from tests.support.gguf_factory import write_model

# The same figures on every machine, so predicted tok/s in snapshots never move.
CALIBRATION = {"bandwidth_1t": 12e9, "bandwidth_all": 40e9, "sgemm_flops": 2e11}
# llama.cpp's per-thread rates as the demo bench would have measured them (run/calibrate.py).
LLAMA_RATES = {
    "decode_bytes_per_thread_s": 10e9,
    "memory_bandwidth": 40e9,
    "prompt_flops_per_thread": 30e9,
    "repacked_prompt_flops_per_thread": 100e9,
    "physical_cores": 4,
    "logical_cores": 8,
    "source": "llama.cpp",
}
GiB = 1 << 30


def roomy_gpu_box() -> Snapshot:
    """The RTX 3080 box with 9 GB of its 10 GB free: an 8B Q4_K_M fits whole, a 70B does not."""
    return gpu_box(vram_used=1_000_000_000)


def write_calibrations(folder: Path) -> None:
    """Fixed numpy and llama.cpp calibrations in a cache folder (``XDG_CACHE_HOME/rigdeck``),
    so no test measures this machine and predicted tok/s never move."""
    from rigdeck.core.machine import fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu_calibration.json").write_text(
        json.dumps(
            {**CALIBRATION, "threads": max(1, os.cpu_count() or 1), "measured_at": time.time()}
        )
    )
    rates = {
        fingerprint().key: {
            "measured_at": time.time(),
            "version": RATES_VERSION,
            "rates": LLAMA_RATES,
        }
    }
    (folder / "llama_calibration.json").write_text(json.dumps(rates))


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point home, the HF cache and the CPU calibration caches (numpy's and llama.cpp's) at
    ``tmp_path``, holding fixed figures; returns the HF cache folder (``HF_HOME/hub``)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "OLLAMA_MODELS"):
        monkeypatch.delenv(var, raising=False)
    write_calibrations(tmp_path / "cache" / "rigdeck")
    return tmp_path / "hf" / "hub"


def write_models(folder: Path) -> dict[str, Path]:
    """Sparse Llama 3.1 8B and 70B (Q4_K_M) headers-only files and a hostile one."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "8b": write_model(
            folder / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "llama-3.1-8b", with_tokenizer=False
        ),
        "70b": write_model(
            folder / "Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf",
            "llama-3.1-70b",
            with_tokenizer=False,
        ),
    }
    broken = folder / "broken-Q4_0.gguf"
    # GGUF v3 claiming 2**64-1 tensors: the reader must refuse it, not allocate for it.
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16 + b"\x00" * 8)
    paths["broken"] = broken
    return paths


def _settings(
    tmp_path: Path, dirs: list[Path] | None, theme: str, overrides: dict[str, object]
) -> Settings:
    settings = load_settings(
        tmp_path / "none.toml",
        env={},
        overrides={
            "ui.theme": theme,
            "telemetry.refresh_s": 60.0,
            "models.dirs": [str(d) for d in dirs or []],
            **overrides,
        },
    )
    return settings.__class__(**{**settings.__dict__, "warnings": ()})


def models_app(
    tmp_path: Path,
    snapshot: Snapshot,
    *,
    dirs: list[Path] | None = None,
    theme: str = "rigdeck-dark",
    **overrides: object,
) -> RigdeckApp:
    """The whole app: for the contract with it (show_snapshot, RunRequested -> chat)."""
    return RigdeckApp(
        _settings(tmp_path, dirs, theme, overrides),
        sampler_factory=lambda: FixedSampler(snapshot),
        state=AppState(tmp_path / "state.json"),
        clock_free=True,
    )


class PaneHost(App[None]):
    """The models pane alone, fed one reading the way the app feeds it when it is shown.

    Keeps the pane's tests and snapshots independent of the other panes and the shell.
    """

    def __init__(self, settings: Settings, snapshot: Snapshot) -> None:
        super().__init__()
        self.settings = settings
        self.snapshot = snapshot
        self.run_requests: list[ModelsPane.RunRequested] = []
        self.state = AppState()  # under the test's own XDG_STATE_HOME

    def compose(self) -> ComposeResult:
        yield ModelsPane(id="models-pane")
        yield Footer()

    def on_mount(self) -> None:
        for spec in builtin_themes():
            self.register_theme(
                Theme(
                    name=spec.name, dark=spec.dark, variables=dict(spec.variables), **spec.colours
                )
            )
        self.theme = self.settings.ui.theme or "rigdeck-dark"
        self.query_one(ModelsPane).show_snapshot(self.snapshot)

    def on_models_pane_run_requested(self, message: ModelsPane.RunRequested) -> None:
        self.run_requests.append(message)


def pane_app(
    tmp_path: Path,
    snapshot: Snapshot,
    *,
    dirs: list[Path] | None = None,
    theme: str = "rigdeck-dark",
    **overrides: object,
) -> PaneHost:
    return PaneHost(_settings(tmp_path, dirs, theme, overrides), snapshot)


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    """Let every worker finish and every message they posted land (a scan posts, which starts
    a fit, which posts)."""
    app = pilot.app
    for _ in range(20):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            await pilot.pause()
            if not any(w.is_running for w in app.workers):
                return


async def open_models(pilot) -> ModelsPane:  # type: ignore[no-untyped-def]
    """Wait for the first reading, show the models pane, wait for its rows to be fitted."""
    await settle(pilot)
    if isinstance(pilot.app, RigdeckApp):
        await pilot.press("2")
        await settle(pilot)
    return pilot.app.query_one(ModelsPane)
