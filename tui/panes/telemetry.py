"""The telemetry pane: CPU, memory, GPUs, disks, network, processes and the bottleneck line.

It renders Snapshots the app hands it; it never reads hardware itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Sparkline, Static

from rigdeck.core.telemetry.history import History
from rigdeck.core.telemetry.snapshot import GpuProcess, GpuStats, Snapshot
from rigdeck.core.units import format_bytes, format_rate
from rigdeck.tui.widgets.meter import Meter

SORT_KEYS: tuple[tuple[str, str], ...] = (
    ("memory", "GPU/host memory"),
    ("cpu", "CPU%"),
    ("pid", "pid"),
)
_CORE_BLOCKS = " ▁▂▃▄▅▆▇█"
HOST_PROCESS_ROWS = 30
# Rebuilding the process table is the most expensive draw per tick; a process list that moves
# every few seconds is what nvtop and btop users read anyway.
PROCESS_REFRESH_S = 3.0


def _gb(n: int | None) -> str:
    return "N/A" if n is None else f"{n / 1024**3:.1f}"


def core_strip(per_core: tuple[float, ...]) -> str:
    """One block per core: a 64-core box still fits on one line."""
    return "".join(_CORE_BLOCKS[min(int(p / 100 * 8 + 0.5), 8)] for p in per_core)


@dataclass(frozen=True)
class SignalRequest:
    pid: int
    command: str
    signal: str


class GpuCard(Vertical):
    """Utilisation, memory and power of one GPU, with their histories."""

    DEFAULT_CSS = """
    GpuCard { height: auto; }
    GpuCard .gpu-title { height: 1; }
    GpuCard Sparkline { height: 1; }
    """

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}")
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static(classes="gpu-title", id=f"gpu-{self.index}-title")
        with Horizontal(classes="meter-row"):
            yield Meter("util", id=f"gpu-{self.index}-util")
            yield Meter("vram", id=f"gpu-{self.index}-mem")
            yield Meter("pwr", id=f"gpu-{self.index}-power")
        with Horizontal(classes="meter-row"):
            yield Sparkline([], id=f"gpu-{self.index}-util-hist", summary_function=max)
            yield Sparkline([], id=f"gpu-{self.index}-mem-hist", summary_function=max)
            yield Sparkline([], id=f"gpu-{self.index}-power-hist", summary_function=max)

    def show(self, gpu: GpuStats, history: History) -> None:
        i = self.index
        title = self.query_one(f"#gpu-{i}-title", Static)
        if gpu.lost:
            title.update(Content.from_markup(
                f"[b]GPU {i}[/b] {gpu.name} [$error]lost: fell off the bus (check dmesg)[/]"
            ))
            return
        parts = [f"[b]GPU {i}[/b] {gpu.name}"]
        if gpu.temperature_c is not None:
            parts.append(f"{gpu.temperature_c:.0f}°C")
        if gpu.throttle_reasons:
            parts.append(f"[$warning]throttled: {', '.join(gpu.throttle_reasons)}[/]")
        if gpu.fan_percent is not None:
            parts.append(f"fan {gpu.fan_percent:.0f}%")
        if gpu.sm_clock_mhz is not None:
            parts.append(f"sm {gpu.sm_clock_mhz} MHz")
        if gpu.mem_clock_mhz is not None:
            parts.append(f"mem {gpu.mem_clock_mhz} MHz")
        if gpu.pcie_rx_bps is not None or gpu.pcie_tx_bps is not None:
            parts.append(f"pcie ↓{format_rate(gpu.pcie_rx_bps)} ↑{format_rate(gpu.pcie_tx_bps)}")
        title.update(Content.from_markup("  ".join(parts)))
        util = gpu.util_percent
        self.query_one(f"#gpu-{i}-util", Meter).set(
            None if util is None else util / 100, "N/A" if util is None else f"{util:.0f}%"
        )
        mem_frac = (
            gpu.memory_used / gpu.memory_total
            if gpu.memory_used is not None and gpu.memory_total
            else None
        )
        self.query_one(f"#gpu-{i}-mem", Meter).set(
            mem_frac, f"{_gb(gpu.memory_used)}/{_gb(gpu.memory_total)}G"
        )
        if gpu.power_w is not None:
            frac = gpu.power_w / gpu.power_limit_w if gpu.power_limit_w else None
            limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
            self.query_one(f"#gpu-{i}-power", Meter).set(frac, f"{gpu.power_w:.0f}{limit}W")
        else:
            self.query_one(f"#gpu-{i}-power", Meter).set(None, "N/A")
        for key in ("util", "mem", "power"):
            self.query_one(f"#gpu-{i}-{key}-hist", Sparkline).data = history.series(
                f"gpu{i}.{key}"
            )


class TelemetryPane(Vertical):
    """Live hardware view. Keys: p pause, s sort, k/K signal the selected process."""

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause", id="telemetry.pause",
                tooltip="Freeze the view (readings go on in the background)"),
        Binding("s", "cycle_sort", "Sort", id="telemetry.sort",
                tooltip="Sort processes by memory, CPU% or pid"),
        Binding("k", "signal('TERM')", "SIGTERM", id="telemetry.term",
                tooltip="Ask the selected process to stop (SIGTERM), after confirmation"),
        Binding("K", "signal('KILL')", "SIGKILL", id="telemetry.kill",
                tooltip="Kill the selected process (SIGKILL), after confirmation"),
    ]

    paused: reactive[bool] = reactive(False)
    """When true, new snapshots are not drawn (the view is frozen)."""
    sort_index: reactive[int] = reactive(0)

    class PauseChanged(Message):
        """The view was frozen or resumed (the status bar says so)."""

    class SignalRequested(Message):
        def __init__(self, request: SignalRequest) -> None:
            super().__init__()
            self.request = request

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._snapshot: Snapshot | None = None
        self._history: History | None = None
        self._gpu_count = -1
        self._rows: list[GpuProcess] = []
        self._rows_drawn_at: float | None = None

    def compose(self) -> ComposeResult:
        yield Static("Reading the machine…", id="diagnosis")
        with Horizontal(id="host-row"):
            with Vertical(id="cpu-box", classes="box"):
                yield Meter("CPU", id="cpu-meter")
                yield Static(id="cpu-cores")
                yield Sparkline([], id="cpu-hist", summary_function=max)
            with Vertical(id="mem-box", classes="box"):
                yield Meter("RAM", id="ram-meter")
                yield Meter("swap", id="swap-meter")
                yield Sparkline([], id="ram-hist", summary_function=max)
        yield Vertical(id="gpu-box", classes="box")
        yield Static(id="io-line")
        table: DataTable[str] = DataTable(id="processes", cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#processes", DataTable)
        table.add_columns("PID", "USER", "GPU", "GPU MEM", "CPU%", "RSS", "COMMAND")
        self.query_one("#gpu-box").border_title = "GPUs"
        self.query_one("#cpu-box").border_title = "CPU"
        self.query_one("#mem-box").border_title = "Memory"

    # -- rendering -------------------------------------------------------------------------
    def show_snapshot(self, snapshot: Snapshot, history: History) -> None:
        """Keep the latest reading; draw it only when visible and not paused."""
        self._snapshot = snapshot
        self._history = history
        if not self.paused:
            self.refresh_view()

    def refresh_view(self) -> None:
        snap, history = self._snapshot, self._history
        if snap is None or history is None:
            return
        limit = snap.diagnosis.limit
        style = "$success" if limit == "none" else "$warning"
        self.query_one("#diagnosis", Static).update(
            Content.assemble(("● ", style), snap.diagnosis.headline)
        )
        self._show_host(snap, history)
        self._show_gpus(snap, history)
        self._show_io(snap)
        due = self._rows_drawn_at is None or snap.monotonic - self._rows_drawn_at >= (
            PROCESS_REFRESH_S
        )
        if due or not self._rows:
            self._show_processes(snap)

    def _show_host(self, snap: Snapshot, history: History) -> None:
        cpu = snap.cpu
        freq = f" {cpu.freq_mhz / 1000:.1f}GHz" if cpu.freq_mhz else ""
        load = f" load {cpu.load_avg[0]:.1f}" if cpu.load_avg else ""
        self.query_one("#cpu-meter", Meter).set(cpu.percent / 100, f"{cpu.percent:3.0f}%{freq}")
        self.query_one("#cpu-cores", Static).update(
            Content(f"{cpu.logical_cores} cores {core_strip(cpu.per_core)}{load}"), layout=False
        )
        self.query_one("#cpu-hist", Sparkline).data = history.series("cpu")
        mem = snap.memory
        self.query_one("#ram-meter", Meter).set(
            mem.used / mem.total if mem.total else None, f"{_gb(mem.used)}/{_gb(mem.total)}G"
        )
        self.query_one("#swap-meter", Meter).set(
            mem.swap_used / mem.swap_total if mem.swap_total else None,
            f"{_gb(mem.swap_used)}/{_gb(mem.swap_total)}G" if mem.swap_total else "none",
        )
        self.query_one("#ram-hist", Sparkline).data = history.series("ram")

    def _show_gpus(self, snap: Snapshot, history: History) -> None:
        box = self.query_one("#gpu-box", Vertical)
        if len(snap.gpus) != self._gpu_count:
            # GPUs appear or vanish only when the driver changes: rebuild the cards then.
            self._gpu_count = len(snap.gpus)
            box.remove_children()
            if snap.gpus:
                box.mount_all([GpuCard(g.index) for g in snap.gpus])
            else:
                box.mount(Static(Content(f"No GPU readings: {snap.gpu_status}"), id="no-gpu"))
            self.call_after_refresh(self._show_gpus, snap, history)
            return
        for gpu in snap.gpus:
            cards = box.query(f"#gpu-{gpu.index}").results(GpuCard)
            for card in cards:
                card.show(gpu, history)

    def _show_io(self, snap: Snapshot) -> None:
        disks = "  ".join(
            f"{d.mount} ({', '.join(d.labels)}) {format_bytes(d.free)} free"
            for d in snap.disks
        )
        io = snap.disk_io
        net = snap.network
        self.query_one("#io-line", Static).update(
            Content(
                f"disk {disks}  r {format_rate(io.read_bps)} w {format_rate(io.write_bps)}  │  "
                f"net ↓{format_rate(net.rx_bps)} ↑{format_rate(net.tx_bps)}"
            ),
            layout=False,
        )

    def _show_processes(self, snap: Snapshot) -> None:
        rows = [p for g in snap.gpus for p in g.processes] or list(snap.host_processes)
        key, _ = SORT_KEYS[self.sort_index]
        if key == "memory":
            rows.sort(key=lambda p: -((p.gpu_memory or 0) * 1024 + (p.rss or 0) // 1024**2))
        elif key == "cpu":
            rows.sort(key=lambda p: -(p.cpu_percent or 0.0))
        else:
            rows.sort(key=lambda p: p.pid)
        self._rows_drawn_at = snap.monotonic
        table = self.query_one("#processes", DataTable)
        selected = self._rows[table.cursor_row].pid if 0 <= table.cursor_row < len(
            self._rows
        ) else None
        self._rows = rows
        table.border_title = (
            "GPU processes" if any(g.processes for g in snap.gpus) else
            ("Processes (no GPU process: largest host processes)")
        ) + f" — sorted by {SORT_KEYS[self.sort_index][1]}"
        table.clear()
        for p in rows:
            table.add_row(
                str(p.pid),
                (p.user or "?")[:10],
                "-" if p.gpu_index is None else str(p.gpu_index),
                format_bytes(p.gpu_memory) if p.gpu_memory is not None else "-",
                "N/A" if p.cpu_percent is None else f"{p.cpu_percent:.0f}",
                format_bytes(p.rss),
                p.command[:200],
                key=f"{p.gpu_index}:{p.pid}",
            )
        if selected is not None:
            for i, p in enumerate(rows):
                if p.pid == selected:
                    table.move_cursor(row=i, animate=False)
                    break

    # -- actions ---------------------------------------------------------------------------
    def watch_paused(self, paused: bool) -> None:
        self.set_class(paused, "-paused")
        self.post_message(self.PauseChanged())
        if not paused:
            self.refresh_view()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.notify("view paused (p resumes)" if self.paused else "view live", timeout=2)

    def action_cycle_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORT_KEYS)
        if self._snapshot is not None:
            self._show_processes(self._snapshot)

    def selected_process(self) -> GpuProcess | None:
        table = self.query_one("#processes", DataTable)
        if 0 <= table.cursor_row < len(self._rows):
            return self._rows[table.cursor_row]
        return None

    def action_signal(self, name: str) -> None:
        proc = self.selected_process()
        if proc is None:
            self.notify("no process selected", severity="warning")
            return
        self.post_message(self.SignalRequested(SignalRequest(proc.pid, proc.command, name)))

    @on(DataTable.RowSelected, "#processes")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
