"""The app driven by keys through Pilot, as a user would."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest
from textual.widgets import Static, TabbedContent

from rigdeck.core.config import load_settings, with_overrides
from rigdeck.core.state import AppState
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.telemetry.sampler import TelemetrySampler
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.telemetry import TelemetryPane
from rigdeck.tui.screens import ConfirmScreen, DoctorScreen, HelpScreen
from rigdeck.tui.widgets.line_panel import LinePanel
from rigdeck.tui.widgets.process_list import ProcessList
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.fixed_snapshot import FixedSampler, gpu_box, no_gpu_box


def make_app(tmp_path, snapshot=None, sampler_factory=None, **overrides) -> RigdeckApp:
    settings = load_settings(tmp_path / "none.toml", env={})
    settings = settings.__class__(**{**settings.__dict__, "warnings": ()})
    for section, values in overrides.items():
        settings = with_overrides(settings, **{section: values})
    fixed = FixedSampler(snapshot or gpu_box())
    return RigdeckApp(
        settings,
        sampler_factory=sampler_factory or (lambda: fixed),
        state=AppState(tmp_path / "state.json"),
    )


async def settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def text_of(app, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def test_telemetry_pane_shows_gpu_cpu_and_the_bottleneck(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert "VRAM 8.9/9.3 GiB used by pid 4121 python" in text_of(app, "#diagnosis")
        assert "RTX 3080" in text_of(app, "#gpu-0-title")
        assert "throttled: power cap" in text_of(app, "#gpu-0-title")
        table = app.query_one("#processes", ProcessList)
        assert table.row_count == 2
        assert table.get_row_at(0)[0] == "4121"
        assert "gpubox" in text_of(app, "#statusbar")


async def test_no_gpu_says_why_and_the_rest_works(tmp_path):
    app = make_app(tmp_path, snapshot=no_gpu_box())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert "libnvidia-ml.so is missing" in text_of(app, "#no-gpu")
        assert "Nothing limits" in text_of(app, "#diagnosis")
        assert "no GPU" in text_of(app, "#statusbar")


async def test_keys_switch_panes_and_open_help(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tabs = app.query_one("#panes", TabbedContent)
        for key, pane in (("2", "models"), ("3", "chat"), ("4", "cloud"), ("1", "telemetry")):
            await pilot.press(key)
            assert tabs.active == pane
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        ids = {row[3] for row in app.binding_rows()}
        assert {"quit", "help", "telemetry.pause", "telemetry.term", "pane.cloud"} <= ids
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_pause_freezes_the_view(tmp_path):
    fixed = FixedSampler(gpu_box())
    app = make_app(tmp_path, sampler_factory=lambda: fixed)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause()
        assert app.query_one(TelemetryPane).paused
        assert "paused" in text_of(app, "#statusbar")
        fixed.snapshot = gpu_box(vram_used=1_000_000_000)
        app._sample()
        await settle(app, pilot)
        assert "VRAM 8.9" in text_of(app, "#diagnosis")  # frozen on the old reading
        await pilot.press("p")
        await pilot.pause()
        assert "VRAM fine" in text_of(app, "#diagnosis")


async def test_sort_cycles_through_keys(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        table = app.query_one("#processes", ProcessList)
        assert table.get_row_at(0)[0] == "4121"  # by memory
        await pilot.press("s")  # by CPU%
        assert table.get_row_at(0)[0] == "4121"
        await pilot.press("s")  # by pid
        assert table.get_row_at(0)[0] == "977"
        assert "sorted by pid" in str(table.border_title)


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def gpu_sampler_with(pid: int):
    return lambda: TelemetrySampler(
        nvml=NvmlReader(FakeNvml([FakeGpu(processes=[(pid, 3 * 1024**3)])])), watched=[]
    )


async def test_sigterm_after_confirmation_stops_the_process(tmp_path, sleeper):
    app = make_app(tmp_path, sampler_factory=gpu_sampler_with(sleeper.pid))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        table = app.query_one("#processes", ProcessList)
        assert table.get_row_at(0)[0] == str(sleeper.pid)
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        assert f"pid {sleeper.pid}" in app.screen.question
        await pilot.press("n")
        assert sleeper.poll() is None  # "no" left it alone
        await pilot.press("k", "y")
        assert sleeper.wait(timeout=10) == -signal.SIGTERM


async def test_read_only_mode_refuses_signals(tmp_path, sleeper):
    app = make_app(
        tmp_path, sampler_factory=gpu_sampler_with(sleeper.pid), telemetry={"read_only": True}
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("K")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("read-only" in n.message for n in app._notifications)
        assert sleeper.poll() is None


async def test_theme_from_palette_is_remembered(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("colon")
        await pilot.press(*"Theme: rigdeck-light")
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "rigdeck-light"
    assert AppState(tmp_path / "state.json").get("theme") == "rigdeck-light"
    again = make_app(tmp_path)
    async with again.run_test(size=(100, 30)) as pilot:
        assert again.theme == "rigdeck-light"


async def test_keymap_from_config_remaps_keys(tmp_path):
    app = make_app(tmp_path, ui={"keymap": {"pane.models": "m", "quit": "ctrl+q"}})
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("m")
        assert app.query_one("#panes", TabbedContent).active == "models"
        rows = {row[3]: row[0] for row in app.binding_rows()}
        assert rows["pane.models"] == "m"


async def test_config_warning_is_shown_and_app_runs(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[telemetry]\nrefresh_s = = 1\n", encoding="utf-8")
    settings = load_settings(bad, env={})
    app = RigdeckApp(
        settings,
        sampler_factory=lambda: FixedSampler(gpu_box()),
        state=AppState(tmp_path / "s.json"),
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        messages = [n.message for n in app._notifications]
        assert any(f"{bad}:2:" in m and "starting on defaults" in m for m in messages)
        assert "VRAM" in text_of(app, "#diagnosis")


async def test_doctor_screen_reports_checks(tmp_path):
    app = make_app(tmp_path, snapshot=no_gpu_box())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("d")
        assert isinstance(app.screen, DoctorScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        body = str(app.screen.query_one("#doctor-body", Static).render())
        assert "llama.cpp" in body and "config" in body


async def test_no_color_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)):
        assert app.no_color


async def test_hidden_pane_is_not_redrawn(tmp_path):
    fixed = FixedSampler(gpu_box())
    app = make_app(tmp_path, sampler_factory=lambda: fixed)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("4")
        fixed.snapshot = gpu_box(vram_used=1_000_000_000)
        app._sample()
        await settle(app, pilot)
        assert "VRAM 8.9" in text_of(app, "#diagnosis")  # not drawn while hidden
        await pilot.press("1")
        await pilot.pause()
        assert "VRAM fine" in text_of(app, "#diagnosis")  # drawn on return


async def test_up_down_move_the_selection_and_signals_follow_it(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        pane = app.query_one(TelemetryPane)
        assert pane.selected_process().pid == 4121
        await pilot.press("down")
        assert pane.selected_process().pid == 977
        assert app.query_one("#processes", ProcessList).cursor_row == 1
        await pilot.press("down")  # the last row stays selected
        assert pane.selected_process().pid == 977
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        assert "pid 977" in app.screen.question
        await pilot.press("n")
        await pilot.press("up")
        assert pane.selected_process().pid == 4121


async def test_selection_stays_on_its_process_when_the_list_is_redrawn(tmp_path):
    fixed = FixedSampler(gpu_box())
    app = make_app(tmp_path, sampler_factory=lambda: fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("down")
        await pilot.press("s", "s")  # by pid: 977 moves to the top, still selected
        table = app.query_one("#processes", ProcessList)
        assert table.get_row_at(0)[0] == "977" and table.cursor_row == 0
        fixed.snapshot = gpu_box(vram_used=1_000_000_000)
        app._sample()
        await settle(app, pilot)
        assert app.query_one(TelemetryPane).selected_process().pid == 977


class SlowGpuSampler(FixedSampler):
    """A sampler whose full reading (NVML, the process scan) hangs until released."""

    def __init__(self, snapshot) -> None:
        super().__init__(snapshot)
        self.release = threading.Event()

    def sample(self, *, host_processes: int = 0):
        self.release.wait(10)
        return super().sample(host_processes=host_processes)


async def test_first_frame_has_a_reading_before_the_slow_one_lands(tmp_path):
    slow = SlowGpuSampler(gpu_box())
    app = make_app(tmp_path, sampler_factory=lambda: slow)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        try:
            assert slow.samples == 0  # the worker is still waiting on "NVML"
            assert "VRAM 8.9" in text_of(app, "#diagnosis")
            cpu = app.query_one("#cpu-panel", LinePanel).lines[0]
            assert cpu.fraction == pytest.approx(0.23) and "23%" in cpu.text
        finally:
            slow.release.set()
        await settle(app, pilot)
        assert slow.samples == 1
