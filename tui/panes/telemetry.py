"""The telemetry pane: CPU, memory, GPUs, disks, network, processes and the bottleneck line.

It renders Snapshots the app hands it; it never reads hardware itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive

from rigdeck.core.telemetry.history import History
from rigdeck.core.telemetry.snapshot import GPU_PENDING, GpuProcess, GpuStats, Snapshot
from rigdeck.tui.widgets.line_panel import Cells, GraphLine, LinePanel, MeterLine, TextRow
from rigdeck.tui.widgets.process_list import Column, ProcessList
from rigdeck.tui.widgets.text_line import TextLine
from rigdeck.tui.words import rate as format_rate
from rigdeck.tui.words import size as format_bytes
from rigdeck.tui.words import size_pair

SORT_KEYS: tuple[tuple[str, str], ...] = (
    ("memory", "GPU/host memory"),
    ("cpu", "CPU%"),
    ("pid", "pid"),
)
_CORE_BLOCKS = " ▁▂▃▄▅▆▇█"
HOST_PROCESS_ROWS = 30
# The host process scan is the costliest read per tick; a process list that moves every few
# seconds is what nvtop and btop users read anyway.
PROCESS_REFRESH_S = 3.0
PROCESS_COLUMNS = (
    Column("PID", "right"),
    Column("USER", max_width=10),
    Column("GPU"),
    Column("GPU MEM", "right"),
    Column("CPU%", "right"),
    Column("RSS", "right"),
    Column("COMMAND"),
)


def process_cells(p: GpuProcess) -> tuple[str, ...]:
    return (
        str(p.pid),
        p.user or "?",
        "-" if p.gpu_index is None else str(p.gpu_index),
        format_bytes(p.gpu_memory) if p.gpu_memory is not None else "-",
        "N/A" if p.cpu_percent is None else f"{p.cpu_percent:.0f}",
        format_bytes(p.rss),
        p.command[:200],
    )


def meter(label: str, fraction: float | None, text: str) -> MeterLine:
    """A meter line with its fraction clamped to 0..1 (a power draw can pass its limit)."""
    return MeterLine(label, None if fraction is None else min(max(fraction, 0.0), 1.0), text)


# What a GPU card shows before its first reading: empty bars and graphs.
_GPU_EMPTY = (
    Cells((MeterLine("util", None, ""), MeterLine("vram", None, ""), MeterLine("pwr", None, ""))),
    Cells((GraphLine(()), GraphLine(()), GraphLine(()))),
)


def _no_gpu_text(status: str) -> str:
    return "Reading GPUs…" if status == GPU_PENDING else f"No GPU readings: {status}"


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
    """

    def __init__(self, index: int) -> None:
        super().__init__(id=f"gpu-{index}")
        self.index = index

    def compose(self) -> ComposeResult:
        i = self.index
        self._title = TextLine(classes="gpu-title", id=f"gpu-{i}-title")
        # Meters on one line, their histories under them: one widget for both rows.
        self._gauges = LinePanel(_GPU_EMPTY, id=f"gpu-{i}-gauges")
        yield self._title
        yield self._gauges

    def show(self, gpu: GpuStats, history: History) -> None:
        i = self.index
        if gpu.lost:
            self._title.show_markup(
                f"[b]GPU {i}[/b] {gpu.name} [$error]lost: fell off the bus (check dmesg)[/]"
            )
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
        self._title.show_markup("  ".join(parts))
        util = gpu.util_percent
        mem_frac = (
            gpu.memory_used / gpu.memory_total
            if gpu.memory_used is not None and gpu.memory_total
            else None
        )
        if gpu.power_w is not None:
            limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
            power = meter(
                "pwr",
                gpu.power_w / gpu.power_limit_w if gpu.power_limit_w else None,
                f"{gpu.power_w:.0f}{limit}W",
            )
        else:
            power = meter("pwr", None, "N/A")
        self._gauges.set_lines(
            (
                Cells(
                    (
                        meter(
                            "util",
                            None if util is None else util / 100,
                            "N/A" if util is None else f"{util:.0f}%",
                        ),
                        meter("vram", mem_frac, size_pair(gpu.memory_used, gpu.memory_total)),
                        power,
                    )
                ),
                Cells(
                    tuple(
                        GraphLine(tuple(history.series(f"gpu{i}.{key}")))
                        for key in ("util", "mem", "power")
                    )
                ),
            )
        )


class TelemetryPane(Vertical):
    """Live hardware view. Keys: p pause, s sort, k/K signal the selected process."""

    BINDINGS = [
        Binding(
            "p",
            "toggle_pause",
            "Pause",
            id="telemetry.pause",
            tooltip="Freeze the view (readings go on in the background)",
        ),
        Binding(
            "s",
            "cycle_sort",
            "Sort",
            id="telemetry.sort",
            tooltip="Sort processes by memory, CPU% or pid",
        ),
        Binding(
            "k",
            "signal('TERM')",
            "SIGTERM",
            id="telemetry.term",
            tooltip="Ask the selected process to stop (SIGTERM), after confirmation",
        ),
        Binding(
            "K",
            "signal('KILL')",
            "SIGKILL",
            id="telemetry.kill",
            tooltip="Kill the selected process (SIGKILL), after confirmation",
        ),
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
        self._gpu_key: tuple[int, str] | None = None
        self._rows: list[GpuProcess] = []
        self._rows_from: tuple[GpuProcess, ...] | None = None
        self._rows_drawn_at: float | None = None
        self._diagnosis_lines = 1
        # Kept as attributes: a query per widget per tick costs more than drawing the figures.
        self._diagnosis = TextLine("Reading the machine…", id="diagnosis")
        self._cpu_panel = LinePanel(
            (MeterLine("CPU", None, ""), TextRow(""), GraphLine(())), id="cpu-panel"
        )
        self._mem_panel = LinePanel(
            (MeterLine("RAM", None, ""), MeterLine("swap", None, ""), GraphLine(())),
            id="mem-panel",
        )
        self._gpu_box = Vertical(id="gpu-box", classes="box")
        self._io_line = TextLine(id="io-line")
        self._processes = ProcessList(PROCESS_COLUMNS, id="processes")
        self._no_gpu: TextLine | None = None

    def compose(self) -> ComposeResult:
        yield self._diagnosis
        with Horizontal(id="host-row"):
            with Vertical(id="cpu-box", classes="box"):
                yield self._cpu_panel
            with Vertical(id="mem-box", classes="box"):
                yield self._mem_panel
        yield self._gpu_box
        yield self._io_line
        yield self._processes

    def on_mount(self) -> None:
        self._gpu_box.border_title = "GPUs"
        self.query_one("#cpu-box").border_title = "CPU"
        self.query_one("#mem-box").border_title = "Memory"

    @property
    def process_list(self) -> ProcessList:
        return self._processes

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
        self._show_diagnosis(snap)
        self._show_host(snap, history)
        self._show_gpus(snap, history)
        self._show_io(snap)
        self._show_processes(snap)

    def _show_diagnosis(self, snap: Snapshot) -> None:
        headline = snap.diagnosis.headline
        style = "$success" if snap.diagnosis.limit == "none" else "$warning"
        # The line may wrap to a second row: relayout only when its height changes.
        width = self._diagnosis.content_region.width or self.size.width
        lines = 1 if len(headline) + 2 <= max(width, 1) else 2
        self._diagnosis.show(
            Content.assemble(("● ", style), headline),
            key=(style, headline),
            layout=lines != self._diagnosis_lines,
        )
        self._diagnosis_lines = lines

    def _show_host(self, snap: Snapshot, history: History) -> None:
        cpu = snap.cpu
        freq = f" {cpu.freq_mhz / 1000:.1f}GHz" if cpu.freq_mhz else ""
        load = f" load {cpu.load_avg[0]:.1f}" if cpu.load_avg else ""
        self._cpu_panel.set_lines(
            (
                meter("CPU", cpu.percent / 100, f"{cpu.percent:3.0f}%{freq}"),
                TextRow(f"{cpu.logical_cores} cores {core_strip(cpu.per_core)}{load}"),
                GraphLine(tuple(history.series("cpu"))),
            )
        )
        mem = snap.memory
        self._mem_panel.set_lines(
            (
                meter(
                    "RAM",
                    mem.used / mem.total if mem.total else None,
                    size_pair(mem.used, mem.total),
                ),
                meter(
                    "swap",
                    mem.swap_used / mem.swap_total if mem.swap_total else None,
                    size_pair(mem.swap_used, mem.swap_total) if mem.swap_total else "none",
                ),
                GraphLine(tuple(history.series("ram"))),
            )
        )

    def _show_gpus(self, snap: Snapshot, history: History) -> None:
        box = self._gpu_box
        key = (len(snap.gpus), "" if snap.gpus else snap.gpu_status)
        if key != self._gpu_key:
            # GPUs appear or vanish only when the driver changes: rebuild the cards then.
            rebuild = self._gpu_key is None or key[0] != self._gpu_key[0]
            self._gpu_key = key
            if not snap.gpus and not rebuild and self._no_gpu is not None:
                self._no_gpu.show(_no_gpu_text(snap.gpu_status), layout=True)
                return
            box.remove_children()
            self._no_gpu = None
            if snap.gpus:
                box.mount_all([GpuCard(g.index) for g in snap.gpus])
                self.call_after_refresh(self._show_gpus, snap, history)
            else:
                self._no_gpu = TextLine(_no_gpu_text(snap.gpu_status), id="no-gpu")
                box.mount(self._no_gpu)
            return
        for card in box.children:
            if isinstance(card, GpuCard) and card.index < len(snap.gpus):
                card.show(snap.gpus[card.index], history)

    def _show_io(self, snap: Snapshot) -> None:
        disks = "  ".join(
            f"{d.mount} ({', '.join(d.labels)}) {format_bytes(d.free)} free" for d in snap.disks
        )
        io = snap.disk_io
        net = snap.network
        self._io_line.show(
            f"disk {disks}  r {format_rate(io.read_bps)} w {format_rate(io.write_bps)}  │  "
            f"net ↓{format_rate(net.rx_bps)} ↑{format_rate(net.tx_bps)}"
        )

    def _show_processes(self, snap: Snapshot, *, force: bool = False) -> None:
        gpu_rows = tuple(p for g in snap.gpus for p in g.processes)
        if gpu_rows:
            source = gpu_rows
        elif snap.host_processes:
            source = snap.host_processes
        elif self._rows_from and self._rows_from[0].gpu_index is None:
            source = self._rows_from  # host processes come every few readings: keep the last
        else:
            source = ()
        if not force and source == self._rows_from:
            return
        if not force and gpu_rows and self._rows_from and self._rows_drawn_at is not None:
            # NVML lists GPU processes every tick with fresh CPU% and RSS; the same processes
            # are redrawn at the host list's pace, a new or gone one at once.
            same = {p.pid for p in gpu_rows} == {p.pid for p in self._rows_from}
            if same and snap.monotonic - self._rows_drawn_at < PROCESS_REFRESH_S:
                return
        self._rows_from = source
        self._rows_drawn_at = snap.monotonic
        rows = list(source)
        key, label = SORT_KEYS[self.sort_index]
        if key == "memory":
            rows.sort(key=lambda p: -((p.gpu_memory or 0) * 1024 + (p.rss or 0) // 1024**2))
        elif key == "cpu":
            rows.sort(key=lambda p: -(p.cpu_percent or 0.0))
        else:
            rows.sort(key=lambda p: p.pid)
        self._rows = rows
        title = (
            "GPU processes" if gpu_rows else "Processes (no GPU process: largest host processes)"
        ) + f" — sorted by {label}"
        table = self._processes
        if table.border_title != title:
            table.border_title = title
        table.set_rows([process_cells(p) for p in rows], [(p.gpu_index, p.pid) for p in rows])

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
            self._show_processes(self._snapshot, force=True)

    def selected_process(self) -> GpuProcess | None:
        row = self._processes.cursor_row
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def action_signal(self, name: str) -> None:
        proc = self.selected_process()
        if proc is None:
            self.notify("no process selected", severity="warning")
            return
        self.post_message(self.SignalRequested(SignalRequest(proc.pid, proc.command, name)))
