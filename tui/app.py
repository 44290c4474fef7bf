"""RigdeckApp: the shell (status bar, one tab per pane, footer, palette, help) and the loops
that feed panes from core. Panes draw; the app dispatches."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.widget import Widget
from textual.widgets import Footer, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from rigdeck.core.config import Settings, config_dir, load_settings
from rigdeck.core.errors import RigdeckError
from rigdeck.core.state import AppState
from rigdeck.core.telemetry.history import History
from rigdeck.core.telemetry.processes import send_signal
from rigdeck.core.telemetry.sampler import TelemetrySampler, default_watched_paths
from rigdeck.core.telemetry.snapshot import GPU_PENDING, Snapshot
from rigdeck.core.themes import ThemeSpec, builtin_themes, default_theme_name, user_themes
from rigdeck.tui.panes.telemetry import HOST_PROCESS_ROWS, PROCESS_REFRESH_S, TelemetryPane
from rigdeck.tui.screens import ConfirmScreen, DoctorScreen, HelpScreen
from rigdeck.tui.words import duration as format_duration

PANES: tuple[tuple[str, str, str], ...] = (
    ("telemetry", "Telemetry", "1"),
    ("models", "Models", "2"),
    ("chat", "Chat", "3"),
    ("cloud", "Cloud", "4"),
    ("economics", "Economics", "5"),
)

LAZY_PANES = ("models", "chat", "cloud", "economics")


def _pane_class(pane: str) -> Any:
    if pane == "models":
        from rigdeck.tui.panes.models import ModelsPane

        return ModelsPane
    if pane == "cloud":
        from rigdeck.tui.panes.cloud import CloudPane

        return CloudPane
    if pane == "economics":
        from rigdeck.tui.panes.economics import EconomicsPane

        return EconomicsPane
    from rigdeck.tui.panes.chat import ChatPane

    return ChatPane


PLACEHOLDERS: dict[str, str] = {}
SIMULATED_BANNER = " SIMULATED — cloud on a simulated Vast.ai account: no money moves "


def to_textual_theme(spec: ThemeSpec) -> Theme:
    colours: dict[str, Any] = dict(spec.colours)
    return Theme(name=spec.name, dark=spec.dark, variables=dict(spec.variables), **colours)


class SnapshotReady(Message):
    """A fresh machine reading from the sampler worker."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class RigdeckApp(App[None]):
    CSS_PATH = "rigdeck.tcss"
    TITLE = "rigdeck"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit rigdeck"),
        Binding(
            "question_mark,f1",
            "help",
            "Help",
            id="help",
            tooltip="Every key, with its id for remapping",
        ),
        Binding(
            "colon",
            "command_palette",
            "Palette",
            id="palette",
            show=False,
            tooltip="Command palette (also ctrl+p)",
        ),
        *(
            # The tab labels already show these keys; the footer keeps its room for actions.
            Binding(
                key,
                f"show_pane('{pane}')",
                title,
                id=f"pane.{pane}",
                show=False,
                tooltip=f"Show the {title} pane",
            )
            for pane, title, key in PANES
        ),
        Binding(
            "d",
            "doctor",
            "Doctor",
            id="doctor",
            tooltip="What this machine gives rigdeck, and how to fix what is missing",
        ),
    ]

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        sampler_factory: Callable[[], TelemetrySampler] | None = None,
        state: AppState | None = None,
        clock_free: bool = False,
        simulate: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        # The cloud pane runs on the project's simulated Vast account; every screen says so.
        self.simulate = simulate
        super().__init__()
        self._sampler_factory = sampler_factory or self._default_sampler
        # Built now (cheap: NVML starts in the worker) so the first reading, taken when the
        # screen mounts, has a real interval for CPU%.
        self._sampler: TelemetrySampler | None = self._sampler_factory()
        self._statusbar_shown: tuple[object, ...] | None = None
        self.state = state or AppState()
        interval = self.settings.telemetry.refresh_s
        self.history = History(int(self.settings.telemetry.history_minutes * 60 / interval))
        self.latest: Snapshot | None = None
        self._last_process_scan = -PROCESS_REFRESH_S
        self.running_label = "nothing"
        # Snapshot tests freeze the status bar: no uptime or clock that changes between runs.
        self._clock_free = clock_free
        self._chat_energy: Any = None  # meters the chat pane's runs; made on the first one

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("rigdeck", id="statusbar")
        if self.simulate:
            yield Static(SIMULATED_BANNER, id="simulated-banner")
        with TabbedContent(initial="telemetry", id="panes"):
            for pane, title, key in PANES:
                with TabPane(f"{key} {title}", id=pane):
                    if pane == "telemetry":
                        yield TelemetryPane(id="telemetry-pane")
                    elif pane in LAZY_PANES:
                        pass  # mounted after the first frame: see _ensure_pane
                    else:
                        yield Static(PLACEHOLDERS[pane], classes="placeholder")
        yield Footer()

    def on_mount(self) -> None:
        self._load_themes()
        if self.is_headless:
            # Tests and screenshots want every pane at once; only a terminal waits on start-up.
            for pane in LAZY_PANES:
                self._ensure_pane(pane)
        if self.settings.ui.keymap:
            self.set_keymap(dict(self.settings.ui.keymap))
        for warning in self.settings.warnings:
            self.notify(warning, title="config", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.query_one("#processes").focus()
        self._start_telemetry()

    # -- themes ------------------------------------------------------------------------------
    def _load_themes(self) -> None:
        specs = builtin_themes()
        mine, warnings = user_themes(config_dir() / "themes")
        for warning in warnings:
            self.notify(warning, title="theme", severity="warning", timeout=10)
        for spec in [*specs, *mine]:
            self.register_theme(to_textual_theme(spec))
        wanted = self.settings.ui.theme or self.state.get("theme") or default_theme_name()
        if wanted not in self.available_themes:
            self.notify(f"unknown theme {wanted!r}; using rigdeck-dark", severity="warning")
            wanted = "rigdeck-dark"
        self.theme = wanted

    def _remember_theme(self, theme: Theme) -> None:
        self.state.set("theme", theme.name)

    # -- telemetry loop ----------------------------------------------------------------------
    def _default_sampler(self) -> TelemetrySampler:
        dirs = [*self.settings.models.dirs, *self.settings.telemetry.watch_dirs]
        return TelemetrySampler(watched=default_watched_paths([Path(d) for d in dirs]))

    def _start_telemetry(self) -> None:
        """Draw a host-only reading into the first frame; the full reading (NVML start, the
        process scan) starts in a worker once that frame is painted, so it never delays it."""
        if self._sampler is not None:
            snap = self._sampler.first_reading()
            # Not recorded in the history: it has no GPUs and its CPU% is rigdeck's own start.
            self.latest = snap
            self._update_statusbar(snap)
            if self._active_pane() == "telemetry":
                self.query_one(TelemetryPane).show_snapshot(snap, self.history)
        self.call_after_refresh(self._after_first_frame)

    def _after_first_frame(self) -> None:
        # What start-up built lives as long as the app. Freezing it keeps the cyclic collector
        # from walking it on every full collection (80 ms with all panes mounted, felt as a
        # stall and seen as an idle-CPU spike); garbage without cycles is still freed at once.
        # Not for headless runs (tests, screenshots): many apps in one process would pile up.
        if not self.is_headless:
            gc.freeze()
            self._preload_panes()
        self._sample()

    # -- panes built after the first frame ---------------------------------------------------
    @work(thread=True, exclusive=True, group="preload", exit_on_error=False)
    def _preload_panes(self) -> None:
        # Their modules import the Hub client, llama.cpp glue and Markdown (about half a second):
        # importing them here keeps that off the first frame and off the event loop.
        for pane in LAZY_PANES:
            _pane_class(pane)
        self.call_from_thread(self._mount_lazy_panes)

    def _mount_lazy_panes(self) -> None:
        for pane in LAZY_PANES:
            self._ensure_pane(pane)

    def _ensure_pane(self, pane: str) -> Widget:
        """The pane's widget, mounted into its tab now if it was not yet."""
        found = self.query(f"#{pane}-pane")
        if found:
            first: Widget = found.first(Widget)
            return first
        widget: Widget = _pane_class(pane)(id=f"{pane}-pane")
        self.query_one(f"TabPane#{pane}", TabPane).mount(widget)
        return widget

    def _pane(self, pane: str) -> Any | None:
        found = self.query(f"#{pane}-pane")
        return found.first() if found else None

    def _sample(self) -> None:
        """Start one reading. Runs on the event loop: only the worker below leaves it."""
        # The host process scan is the costliest read; do it only as often as the table redraws,
        # and only while the table is on screen.
        now = time.monotonic()
        scan = (
            self._active_pane() == "telemetry"
            and now - self._last_process_scan >= PROCESS_REFRESH_S
        )
        if scan:
            self._last_process_scan = now
        self._read_machine(HOST_PROCESS_ROWS if scan else 0)

    @work(thread=True, exclusive=True, group="telemetry", exit_on_error=False)
    def _read_machine(self, host_processes: int) -> None:
        if self._sampler is None:
            self._sampler = self._sampler_factory()  # NVML init happens here, off the loop
        self.post_message(SnapshotReady(self._sampler.sample(host_processes=host_processes)))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snap = message.snapshot
        self.latest = snap
        self.history.record(snap)
        self._update_statusbar(snap)
        active = self._active_pane()
        if active == "telemetry":
            self.query_one(TelemetryPane).show_snapshot(snap, self.history)
        elif active == "models":
            models = self._pane("models")
            if models is not None:
                models.show_snapshot(snap)
        elif active == "economics":
            economics = self._pane("economics")
            if economics is not None:
                economics.show_snapshot(snap)
        if self._chat_energy is not None:
            self._chat_energy.add(snap)
        # The next reading is scheduled only after this one landed: a slow NVML never piles up.
        self.set_timer(self.settings.telemetry.refresh_s, self._sample)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        if isinstance(error, RigdeckError):
            message = str(error)
        else:
            message = f"{type(error).__name__}: {error}"
        self.notify(message, title=event.worker.group or "error", severity="error", timeout=8)
        if event.worker.group == "telemetry":
            self.set_timer(max(self.settings.telemetry.refresh_s, 2.0), self._sample)

    def _update_statusbar(self, snap: Snapshot) -> None:
        uptime = "" if self._clock_free else f"  up {format_duration(snap.uptime_s)}"
        host = "host" if self._clock_free else snap.hostname
        if snap.gpus:
            gpus = f"{len(snap.gpus)} GPU"
        else:
            gpus = "GPU …" if snap.gpu_status == GPU_PENDING else "no GPU"
        paused = self.query_one(TelemetryPane).paused
        line = f"  {host}{uptime}  {gpus}  running: {self.running_label}"
        if (line, paused) == self._statusbar_shown:
            return  # the same words: no redraw
        self._statusbar_shown = (line, paused)
        self.query_one("#statusbar", Static).update(
            Content.assemble(
                ("rigdeck", "bold"), line, ("  ⏸ paused" if paused else "", "$warning")
            ),
            layout=False,
        )

    def _active_pane(self) -> str:
        try:
            return self.query_one("#panes", TabbedContent).active
        except Exception:
            return ""

    @on(TabbedContent.TabActivated)
    def _pane_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "telemetry":
            pane = self.query_one(TelemetryPane)
            if self.latest is not None:
                pane.show_snapshot(self.latest, self.history)
            self.query_one("#processes").focus()
        elif event.pane.id in LAZY_PANES:
            lazy: Any = self._ensure_pane(event.pane.id)
            if event.pane.id in ("models", "economics") and self.latest is not None:
                lazy.show_snapshot(self.latest)

    # Handlers by name: the pane classes are imported only after the first frame.
    def on_models_pane_run_requested(self, message: Any) -> None:
        self.action_show_pane("chat")
        chat: Any = self._ensure_pane("chat")
        chat.start_model(message.path, message.placement, message.label)

    def on_chat_pane_running_changed(self, message: Any) -> None:
        self.running_label = message.label
        self._meter_chat(message.label)
        if self.latest is not None:
            self._update_statusbar(self.latest)

    def _meter_chat(self, label: str) -> None:
        """Each stretch the chat pane runs a model is one metered run in the energy log."""
        from rigdeck.tui.panes.economics.chat_energy import ChatEnergy, chat_run_id, record_run

        if self._chat_energy is None:
            self._chat_energy = ChatEnergy(self.settings.economics)
        done = self._chat_energy.running_changed(label, chat_run_id(self._pane("chat")))
        if done is not None:
            body = partial(record_run, done, self.settings.economics.currency)
            self.run_worker(body, thread=True, group="energy", exit_on_error=False)

    # -- actions -----------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        if pane in LAZY_PANES:
            self._ensure_pane(pane)
        # Move focus first: a focused widget in the pane being hidden would pull its tab back,
        # and the next key (typed at once) must reach the pane just shown.
        self.screen.set_focus(None)
        self.query_one("#panes", TabbedContent).active = pane
        widget = self._pane(pane)
        if widget is not None and hasattr(widget, "focus_default"):
            widget.focus_default()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.binding_rows()))

    def binding_rows(self) -> list[tuple[str, str, str, str]]:
        keymap = dict(self.settings.ui.keymap)
        rows = []
        sources: list[tuple[str, Iterable[Binding | tuple[Any, ...]]]] = [
            ("everywhere", self.BINDINGS),
            (
                "everywhere",
                [Binding("ctrl+p", "command_palette", "Command palette", id="palette.ctrl")],
            ),
            ("telemetry", TelemetryPane.BINDINGS),
            ("models", _pane_class("models").BINDINGS),
            ("chat", _pane_class("chat").BINDINGS),
            ("cloud", _pane_class("cloud").BINDINGS),
            ("economics", _pane_class("economics").BINDINGS),
        ]
        for where, bindings in sources:
            for binding in bindings:
                if not isinstance(binding, Binding):
                    continue
                keys = keymap.get(binding.id or "", binding.key)
                label = binding.description or binding.tooltip or binding.action
                rows.append((self._pretty_keys(keys), label, where, binding.id or ""))
        return rows

    @staticmethod
    def _pretty_keys(keys: str) -> str:
        names = {"question_mark": "?", "colon": ":"}
        return " / ".join(names.get(k, k) for k in keys.split(","))

    def action_doctor(self) -> None:
        screen = DoctorScreen()
        self.push_screen(screen)
        self._run_doctor(screen)

    @work(thread=True, exclusive=True, group="doctor", exit_on_error=False)
    def _run_doctor(self, screen: DoctorScreen) -> None:
        from rigdeck.core.doctor import run_checks  # only when asked: keeps start-up short

        nvml = self._sampler.nvml if self._sampler is not None else None
        checks = run_checks(self.settings, nvml=nvml)
        self.call_from_thread(screen.show_checks, checks)

    def action_toggle_pause(self) -> None:
        self.query_one(TelemetryPane).action_toggle_pause()

    @on(TelemetryPane.PauseChanged)
    def _pause_changed(self) -> None:
        if self.latest is not None:
            self._update_statusbar(self.latest)

    @on(TelemetryPane.SignalRequested)
    def _confirm_signal(self, message: TelemetryPane.SignalRequested) -> None:
        request = message.request
        if self.settings.telemetry.read_only:
            self.notify("read-only mode: signals are disabled", severity="warning")
            return
        question = f"Send SIG{request.signal} to pid {request.pid}?\n{request.command[:160]}"

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.notify(send_signal(request.pid, request.signal))
            except RigdeckError as exc:
                self.notify(str(exc), severity="error")

        self.push_screen(ConfirmScreen(question), answered)

    # -- palette -----------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for pane, title, key in PANES:
            yield SystemCommand(
                f"Show {title}",
                f"Switch to the {title} pane (key {key})",
                partial(self.action_show_pane, pane),
            )
        cloud = self._pane("cloud")
        if cloud is not None:
            yield from cloud.system_commands()
        for name in sorted(self.available_themes):
            if name.startswith("rigdeck") or name not in _TEXTUAL_BUILTIN:
                yield SystemCommand(
                    f"Theme: {name}",
                    "Switch theme (remembered)",
                    partial(setattr, self, "theme", name),
                )
        yield SystemCommand(
            "Pause / resume telemetry",
            "Freeze the telemetry view (key p)",
            self.action_toggle_pause,
        )
        yield SystemCommand("Doctor", "What this machine gives rigdeck (key d)", self.action_doctor)
        yield SystemCommand("Keys", "Every key binding (key ?)", self.action_help)
        yield SystemCommand(
            "Save screenshot",
            "Save an SVG of the screen to the current folder",
            self.action_save_svg,
        )
        yield SystemCommand("Quit", "Quit rigdeck (key q)", self.action_quit)

    def action_save_svg(self) -> None:
        path = self.save_screenshot(path=os.getcwd())
        self.notify(f"saved {path}")

    def on_unmount(self) -> None:
        if self._chat_energy is not None and (done := self._chat_energy.finish()) is not None:
            from rigdeck.tui.panes.economics.chat_energy import record_run

            try:
                record_run(done, self.settings.economics.currency)
            except RigdeckError:
                pass  # quitting must not fail for a record of energy
        if self._sampler is not None:
            self._sampler.close()


_TEXTUAL_BUILTIN = {
    "textual-dark",
    "textual-light",
    "nord",
    "gruvbox",
    "catppuccin-mocha",
    "dracula",
    "tokyo-night",
    "monokai",
    "flexoki",
    "catppuccin-latte",
    "solarized-light",
    "textual-ansi",
}
