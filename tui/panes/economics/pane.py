"""The economics pane: this machine's $/h now and idle, cloud spend this month with a chart,
budgets (80% and 100% as notifications), the last runs and comparisons with $ here vs there,
and the upgrade breakeven table from ``[economics] upgrades``.

Every figure carries its source and time. Blocking reads (SQLite, offers, the fit, the torch
bench) run in workers; a snapshot from the app only recomputes the hourly rate, which is
arithmetic on values already read (plus two sysfs reads for RAPL).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.events import Resize
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from rigdeck.core.economics.power import CpuPackagePower, LocalRate, local_rate
from rigdeck.core.economics.report import local_json
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.tui import words_economics as ew
from rigdeck.tui.panes.economics.chart import SpendChart
from rigdeck.tui.panes.economics.data import EconomicsData, load_data

RELOAD_S = 30.0
JOBS_TITLE = "Last runs and comparisons: $ here vs there"
NO_JOBS = "Last runs: none yet; run, bench and chat record theirs, `rigdeck cost job` compares"
UPGRADES_TITLE = "Upgrades: months to pay for itself against the cloud spend"
NO_UPGRADES = (
    'Upgrades: none to weigh; add some to [economics] upgrades, e.g. { "ram +96G" = "250" }'
)
WIDE = 120
IDLE_SAMPLES = 3600


def _now() -> datetime:
    return datetime.now(UTC)


class EconomicsPane(Vertical):
    DEFAULT_CSS = """
    EconomicsPane { height: 1fr; }
    EconomicsPane #econ-rate, EconomicsPane #econ-spend { height: auto; padding: 0 1; }
    EconomicsPane #econ-body { height: 1fr; layout: vertical; }
    EconomicsPane.-wide #econ-body { layout: horizontal; }
    EconomicsPane #econ-chart { height: 7; padding: 0 1; }
    EconomicsPane.-wide #econ-chart { height: 1fr; max-height: 16; width: 1fr; }
    EconomicsPane #econ-tables { height: 1fr; }
    EconomicsPane.-wide #econ-tables { width: 1fr; }
    EconomicsPane .econ-title { height: 1; padding: 0 1; text-style: bold; }
    EconomicsPane DataTable { height: 1fr; }
    EconomicsPane #econ-detail { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [
        Binding("r", "reload", "Reload", id="economics.reload",
                tooltip="Read the ledger, the run energies and the comparisons again"),
        Binding("c", "compare", "Compare again", id="economics.compare",
                tooltip="Re-run every job spec's here-vs-there comparison on today's offers"),
        Binding("u", "unlocks", "Unlocks", id="economics.unlocks",
                tooltip="What the selected upgrade lets this machine run (the fit, before/after)"),
        Binding("b", "bench", "Bench machine", id="economics.bench",
                tooltip="The torch micro-benchmark the comparisons scale by (a few seconds)"),
    ]  # fmt: skip

    def __init__(
        self,
        *,
        id: str | None = None,
        clock: Callable[[], datetime] = _now,
        rapl: CpuPackagePower | None = None,
    ) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._rapl = rapl or CpuPackagePower()
        self._wall_seen: deque[float] = deque(maxlen=IDLE_SAMPLES)
        self._rate: LocalRate | None = None
        self._data: EconomicsData | None = None
        self._loaded_at: datetime | None = None
        self._loading = False
        self._alerted: set[tuple[str, str, str]] = set()

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("this machine: waiting for the first reading…", id="econ-rate")
        yield Static("cloud: reading the ledger…", id="econ-spend")
        with Horizontal(id="econ-body"):
            yield SpendChart(id="econ-chart")
            with Vertical(id="econ-tables"):
                yield Static(JOBS_TITLE, classes="econ-title", id="econ-jobs-title")
                yield DataTable(id="econ-jobs", cursor_type="row", zebra_stripes=True)
                yield Static(UPGRADES_TITLE, classes="econ-title", id="econ-upgrades-title")
                yield DataTable(id="econ-upgrades", cursor_type="row", zebra_stripes=True)
        yield Static("", id="econ-detail")

    def on_mount(self) -> None:
        jobs = self.query_one("#econ-jobs", DataTable)
        jobs.add_columns("when", "what", "time", "here", "there", "basis")
        ups = self.query_one("#econ-upgrades", DataTable)
        ups.add_columns("upgrade", "price", "months", "±30%", "vs cloud/month")
        self.reload()

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")

    def focus_default(self) -> None:
        found = self.query("#econ-upgrades")
        if found:
            found.first().focus()

    @property
    def _settings(self) -> Any:
        return self.app.settings  # type: ignore[attr-defined]

    @property
    def _simulate(self) -> bool:
        return bool(getattr(self.app, "simulate", False))

    # -- this machine, every telemetry tick --------------------------------------------------
    def show_snapshot(self, snap: Snapshot) -> None:
        economics = self._settings.economics
        rate = local_rate(
            snap,
            economics,
            cpu_package_w=self._rapl.watts(),
            observed_wall_watts=tuple(self._wall_seen),
        )
        if rate.watts.source == "measured" and rate.watts.value:
            self._wall_seen.append(rate.watts.value)
        self._rate = rate
        self.query_one("#econ-rate", Static).update(Content(rate_text(rate)))
        stale = self._loaded_at is None or (
            (self._clock() - self._loaded_at).total_seconds() >= RELOAD_S
        )
        if stale and not self._loading:
            self.reload()

    # -- the stores, in a worker --------------------------------------------------------------
    def reload(self) -> None:
        self._loading = True
        self._load()

    @work(thread=True, exclusive=True, group="economics-load", exit_on_error=False)
    def _load(self) -> None:
        data = load_data(self._settings, simulate=self._simulate, now=self._clock())
        self.app.call_from_thread(self._show_data, data)

    def _show_data(self, data: EconomicsData) -> None:
        self._loading = False
        self._data = data
        self._loaded_at = data.spend.at
        self.query_one("#econ-spend", Static).update(
            Content(spend_text(data, simulated=self._simulate))
        )
        self._draw_chart()
        self._fill_jobs(data)
        self._fill_upgrades(data)
        for error in data.errors:
            self.notify(error, title="economics", severity="warning")
        self._notify_alerts(data)

    def _draw_chart(self) -> None:
        if self._data is None or not self.is_mounted:
            return
        label = f"cloud $ per day this month ({ew.source(self._data.spend.total)})"
        self.query_one("#econ-chart", SpendChart).show(self._data.spend.by_day, label)

    def _fill_jobs(self, data: EconomicsData) -> None:
        table = self.query_one("#econ-jobs", DataTable)
        table.clear()
        rows = job_rows(data, self._settings.economics.currency)
        for row in rows:
            table.add_row(*row)
        title = JOBS_TITLE if rows else NO_JOBS
        self.query_one("#econ-jobs-title", Static).update(Content(title))

    def _fill_upgrades(self, data: EconomicsData) -> None:
        table = self.query_one("#econ-upgrades", DataTable)
        table.clear()
        cur = self._settings.economics.currency
        for up in data.upgrades:
            table.add_row(*upgrade_cells(up, cur), key=up.name)
        title = UPGRADES_TITLE if data.upgrades else NO_UPGRADES
        self.query_one("#econ-upgrades-title", Static).update(Content(title))

    def _notify_alerts(self, data: EconomicsData) -> None:
        for alert in data.alerts:
            key = (alert.scope, alert.period, alert.level)
            if key in self._alerted:
                continue
            self._alerted.add(key)
            severity: Literal["error", "warning"] = "error" if alert.level == "over" else "warning"
            self.notify(ew.alert_words(alert.to_json()), title="budget", severity=severity)

    def _detail(self, text: str) -> None:
        self.query_one("#econ-detail", Static).update(Content(text))

    # -- actions -----------------------------------------------------------------------------
    def action_reload(self) -> None:
        self._detail("reading the ledger and the run energies…")
        self.reload()

    def action_compare(self) -> None:
        if self._data is None or not self._data.comparisons:
            self._detail("no comparisons to re-run yet: `rigdeck cost job SPEC` makes the first")
            return
        specs = [(r.spec_key, r.offer_id) for r in self._data.comparisons]
        self._detail(f"comparing {len(specs)} job specs against today's offers…")
        self._compare(specs)

    @work(thread=True, exclusive=True, group="economics-compare", exit_on_error=False)
    def _compare(self, specs: list[tuple[str, int]]) -> None:
        from rigdeck.core.cloud.provider import CloudError
        from rigdeck.tui.cli_cost import job_report

        lines = []
        for spec, offer_id in specs:
            try:
                try:
                    data = job_report(
                        self._settings, spec, offer_id=offer_id, simulate=self._simulate,
                        record=True,
                    )  # fmt: skip
                except CloudError:  # that offer is gone: the spec's best one today
                    data = job_report(
                        self._settings, spec, offer_id=None, simulate=self._simulate, record=True
                    )
            except Exception as exc:  # one spec failing must not hide the others
                lines.append(f"{spec.rsplit('/', 1)[-1]}: {exc}")
                continue
            lines.append(compare_line(data))
        self.app.call_from_thread(self._compared, lines)

    def _compared(self, lines: list[str]) -> None:
        self._detail("\n".join(lines[:3]))
        self.reload()

    def action_unlocks(self) -> None:
        table = self.query_one("#econ-upgrades", DataTable)
        if self._data is None or not self._data.upgrades or table.row_count == 0:
            self._detail("no upgrade selected: add one to [economics] upgrades")
            return
        up = self._data.upgrades[min(table.cursor_row, len(self._data.upgrades) - 1)]
        self._detail(f"fitting local models with {ew.upgrade_words(up.name)}…")
        self._unlocks(up.name, up.price)

    @work(thread=True, exclusive=True, group="economics-unlocks", exit_on_error=False)
    def _unlocks(self, name: str, price: str) -> None:
        from rigdeck.tui.cli_cost import _unlock_models, upgrade_report

        models = _unlock_models([], self._settings)
        data = upgrade_report(
            self._settings, f"{name} @{price}", monthly=None, models=models,
            simulate=self._simulate,
        )  # fmt: skip
        if data["sentences"]:
            text = "\n".join(data["sentences"][:3])
        else:
            text = (
                f"{ew.upgrade_words(name)}: none of {len(models)} local models fits better "
                "or runs 25% faster"
            )
        self.app.call_from_thread(self._detail, text)

    def action_bench(self) -> None:
        self._detail("benchmarking this machine (torch matmul, memory, host to GPU)…")
        self._bench()

    @work(thread=True, exclusive=True, group="economics-bench", exit_on_error=False)
    def _bench(self) -> None:
        from rigdeck.core.economics.machine_bench import load_or_measure
        from rigdeck.core.economics.report import bench_report
        from rigdeck.tui.cli_cost import bench_lines

        lines = bench_lines(bench_report(load_or_measure(refresh=True)))
        self.app.call_from_thread(self._detail, "\n".join(lines[:3]))

    @on(Worker.StateChanged)
    def _worker_done(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "economics-load" and event.state is WorkerState.ERROR:
            self._loading = False
            self._loaded_at = self._clock()  # try again after the usual wait, not every tick
        if event.state is WorkerState.ERROR and event.worker.group.startswith("economics"):
            self._detail(f"{event.worker.error}")


# -- words for the pane's parts (pure: the tests read them too) ---------------------------------
def rate_text(rate: LocalRate) -> str:
    doc = local_json(rate)
    cur = rate.currency
    hourly = ew.per_hour(cur)
    return (
        f"This machine  {ew.figure(rate.usd_per_hour, hourly)} now · idle "
        f"{ew.figure(rate.idle_usd_per_hour, hourly, time=False)}\n"
        f"  {ew.watts(rate.watts.value)} at the wall: GPUs {ew.watts(rate.gpu_watts.value)} "
        f"{ew.source(rate.gpu_watts, with_time=False)}, rest {ew.watts(rate.rest_watts.value)} "
        f"{ew.source(rate.rest_watts, with_time=False)}\n"
        f"  left on all month {ew.amount(doc['idle_usd_per_month']['value'], cur)} · tariff "
        f"{rate.price_per_kwh.value:g} {cur}/kWh ({ew.source(rate.price_per_kwh)})"
    )


def spend_text(data: EconomicsData, *, simulated: bool = False) -> str:
    spend = data.spend
    total = spend.summary.total
    budget = data.budget
    month = ew.amount(total.month.value)
    cap = budget.get("monthly_usd")
    month_words = f"{month} of {ew.amount(cap)} ({budget['month_fraction']:.0%})" if cap else month
    day_cap = budget.get("daily_usd")
    day = ew.amount(total.day.value)
    day_words = f"{day} of {ew.amount(day_cap)}" if day_cap else day
    sim = " · SIMULATED account" if simulated else ""
    lines = [
        f"Cloud  this month {month_words} · in all {ew.amount(spend.total.value)} "
        f"({ew.source(spend.total)}){sim}",
        f"  today {day_words} · {spend.open_instances} open, burning "
        f"{ew.amount(spend.burn_usd_per_hour.value)}/h"
        + ("" if (cap or day_cap) else " · no budget set: [cloud] monthly_budget_usd"),
    ]
    caps = budget.get("by_project", {})
    parts = []
    for tag in sorted(set(spend.summary.by_project) | set(caps)):
        used = spend.summary.by_project.get(tag)
        words = ew.amount(used.month.value if used else 0.0)
        cap_of = caps.get(tag, {})
        if cap_of.get("monthly_usd"):
            words += f" of {ew.amount(cap_of['monthly_usd'])} ({cap_of['month_fraction']:.0%})"
        parts.append(f"{tag} {words}")
    projects = " · ".join(parts)
    if projects:
        lines.append(f"  by project this month: {projects}")
    return "\n".join(lines)


def job_rows(data: EconomicsData, currency: str = "USD") -> list[tuple[str, ...]]:
    """Runs here (their metered energy) and comparisons (here vs there), newest first."""
    rows: list[tuple[str, tuple[str, ...]]] = []
    for run in data.runs:
        rows.append(
            (
                run.at,
                (
                    _when(run.at),
                    f"{run.kind} {run.label.removesuffix('.gguf')}",
                    ew.seconds(run.seconds),
                    f"{ew.amount(run.cost, run.currency)} {run.kwh:.3f} kWh",
                    "-",
                    run.source,
                ),
            )
        )
    for job, record in data.jobs:
        at = (job.ended_at or job.created_at).isoformat()
        seconds = (
            (job.ended_at - job.started_at).total_seconds()
            if job.started_at and job.ended_at
            else None
        )
        if job.local:
            here = "not metered" if record is None else ew.amount(record.cost, record.currency)
            there, basis = "-", "measured" if record is not None else "-"
        else:
            here, there, basis = "-", ew.amount(job.usd), "ledger"
        what = f"job {job.name} {job.state}"
        rows.append((at, (_when(at), what, ew.seconds(seconds), here, there, basis)))
    for comp in data.comparisons:
        result = comp.result
        basis = f"x{comp.speedup or 0:.1f} {comp.basis}"
        rows.append(
            (
                comp.at,
                (
                    _when(comp.at),
                    f"{comp.spec_key.rsplit('/', 1)[-1]} vs {comp.num_gpus}x {comp.gpu_name}",
                    f"{ew.seconds(comp.local_seconds)} / {ew.seconds(comp.cloud_seconds)}",
                    ew.amount(comp.local_usd, currency),
                    ew.amount(comp.cloud_usd),
                    basis + ("" if result.get("cheaper_certain") else " ~"),
                ),
            )
        )
    rows.sort(key=lambda r: r[0], reverse=True)
    return [cells for _, cells in rows]


def _when(at: str) -> str:
    try:
        stamp = datetime.fromisoformat(at)
    except ValueError:
        return at
    return stamp.strftime("%m-%d %H:%M")


def upgrade_cells(up: Any, currency: str) -> tuple[str, ...]:
    if up.report is None:
        return (up.name, up.price, "?", up.error[:40], "")
    rep = up.report
    low, high = rep["band"]
    months = ew.months(rep["breakeven_months"])
    band = ew.band(low, high) if rep["breakeven_months"] is not None else rep["why"][:40]
    cloud = rep["monthly_cloud"]
    return (
        ew.upgrade_words(rep["upgrade"]["label"]),
        ew.amount(rep["upgrade"]["price"], currency),
        months,
        band,
        f"{ew.amount(cloud['value'])} ({ew.SOURCE_WORDS.get(cloud['source'], cloud['source'])})",
    )


def compare_line(data: dict[str, Any]) -> str:
    comp = data["comparison"]
    name = comp["spec"].rsplit("/", 1)[-1]
    here, there = comp["here"]["usd"]["value"], comp["there"]["usd"]["value"]
    return (
        f"{name}: here {ew.amount(here, data['currency'])} vs offer {comp['offer']['id']} "
        f"{ew.amount(there)}; cheaper {comp['cheaper']}, faster {comp['faster']} "
        f"({data['basis']['kind']})"
    )


__all__ = ["EconomicsPane", "job_rows", "rate_text", "spend_text", "upgrade_cells"]
