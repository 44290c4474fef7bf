"""The economics pane with Pilot: this machine's $/h with its sources, the ledger's spend of a
simulated rental, budget alerts as notifications, the upgrade table and its unlocks, the
comparison re-run from one key, key 5 in the app, the chat pane's runs metered into the energy
log, and layout snapshots at 80x24 and 160x48."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import vast_sim
from support.cloud_money import FAST, request, sim_clock
from support.fixed_snapshot import FixedSampler, gpu_box, no_gpu_box
from support.vast_sim import TEST_API_KEY, make_provider
from textual.app import App, ComposeResult
from textual.theme import Theme
from textual.widgets import DataTable, Footer, Static

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.ledger import (
    Caps,
    Ledger,
    LedgerInstance,
    StateChange,
    default_ledger_path,
)
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.config import Settings, load_settings
from rigdeck.core.economics.energy_log import EnergyLog
from rigdeck.core.economics.figures import Figure
from rigdeck.core.economics.power import CpuPackagePower, RunEnergy
from rigdeck.core.state import AppState
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.core.themes import builtin_themes
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.economics import EconomicsPane
from rigdeck.tui.panes.economics.chat_energy import ChatEnergy, record_run

sim = vast_sim.sim
FIXED_NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)


def make_settings(tmp_path: Path, text: str = "") -> Settings:
    path = tmp_path / "rigdeck.toml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path, env={}, overrides={"telemetry.refresh_s": 60.0})
    return replace(settings, warnings=())


class EconomicsHost(App[None]):
    """The economics pane alone, fed one reading as the app feeds it; notifications kept."""

    def __init__(
        self,
        settings: Settings,
        snapshot: Snapshot,
        *,
        clock: Any = None,
        rapl_root: Path,
        simulate: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.snapshot = snapshot
        self.simulate = simulate
        self.notices: list[tuple[str, str]] = []
        self._clock = clock
        self._rapl_root = rapl_root

    def compose(self) -> ComposeResult:
        kwargs = {"clock": self._clock} if self._clock is not None else {}
        yield EconomicsPane(id="economics-pane", rapl=CpuPackagePower(self._rapl_root), **kwargs)
        yield Footer()

    def on_mount(self) -> None:
        for spec in builtin_themes():
            theme = Theme(name=spec.name, dark=spec.dark, variables=dict(spec.variables),
                          **spec.colours)  # fmt: skip
            self.register_theme(theme)
        self.theme = "rigdeck-dark"
        self.query_one(EconomicsPane).show_snapshot(self.snapshot)
        self.query_one(EconomicsPane).focus_default()

    def notify(self, message: str, *, title: str = "", severity: str = "information",
               **kw: Any) -> None:  # fmt: skip
        self.notices.append((title, message))
        super().notify(message, title=title, severity=severity, **kw)  # type: ignore[arg-type]


def host(tmp_path: Path, text: str = "", snap: Snapshot | None = None, **kw: Any) -> EconomicsHost:
    return EconomicsHost(
        make_settings(tmp_path, text), snap or gpu_box(), rapl_root=tmp_path / "no-rapl", **kw
    )


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    app = pilot.app
    for _ in range(30):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            await pilot.pause()
            if not any(w.is_running for w in app.workers):
                return


def text_of(app: App[None], selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def simulated_rental(sim: Simulator, hours: float = 1.0, *, project: str = "") -> float:
    """A rental on ``sim`` that ended in the past (as the ledger reads it): the sim's charges."""
    provider = make_provider(sim)
    ledger = Ledger(default_ledger_path())
    clock = sim_clock(sim)
    offer = provider.search_offers("num_gpus=1", limit=5)[0]
    row = actions.rent(
        provider, ledger, request(offer), caps=Caps(), project=project, clock=clock, find=FAST
    )
    sim.advance(60.0)
    reconcile(provider, ledger, clock=clock)
    sim.advance(hours * 3600)
    actions.destroy(provider, ledger, row.id, clock=clock)
    return sim.charges(row.id)


class PastClock:
    def __init__(self, ago: float) -> None:
        self.at = time.time() - ago

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def past_sim():
    with Simulator(clock=PastClock(3 * 3600), seed=0, api_key=TEST_API_KEY) as simulator:
        yield simulator


# -- this machine ---------------------------------------------------------------------------------
async def test_rate_shows_gpu_watts_measured_and_the_rest_configured(tmp_path):
    app = host(tmp_path, "[economics]\nsystem_watts = 60\n")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        rate = text_of(app, "#econ-rate")
        assert "This machine" in rate and "/h" in rate
        assert "GPUs 301 W measured" in rate  # the fixture card's NVML reading
        assert "rest 60 W user" in rate  # no RAPL here: the configured watts, labelled
        assert "left on all month" in rate


async def test_no_gpu_box_still_has_a_cost(tmp_path):
    app = host(tmp_path, snap=no_gpu_box())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        rate = text_of(app, "#econ-rate")
        assert "GPUs 0 W measured" in rate and "rest 80 W default" in rate


# -- the ledger -----------------------------------------------------------------------------------
async def test_simulated_rental_spend_matches_the_simulators_charges(tmp_path, past_sim):
    charged = simulated_rental(past_sim, 1.0, project="thesis")
    app = host(tmp_path, f'[cloud]\napi_url = "{past_sim.url}"\n')
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        spend = text_of(app, "#econ-spend")
        shown = float(re.search(r"in all \$([\d,.]+)", spend).group(1).replace(",", ""))
        assert shown == pytest.approx(charged, rel=0.02, abs=0.005)
        assert "(ledger" in spend and "0 open" in spend
        chart = text_of(app, "#econ-chart")
        assert "cloud $ per day this month" in chart


async def test_budget_over_and_warn_arrive_as_notifications_once(tmp_path, past_sim):
    charged = simulated_rental(past_sim, 1.0)
    text = (
        f'[cloud]\napi_url = "{past_sim.url}"\n'
        f"monthly_budget_usd = {charged * 0.95!r}\ndaily_budget_usd = {charged * 1.1!r}\n"
    )
    app = host(tmp_path, text)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        budget = [m for t, m in app.notices if t == "budget"]
        today = datetime.now(UTC).date()
        started = datetime.fromtimestamp(past_sim.now() - 3660, UTC).date()
        if started == today:  # the rental fell inside today and this month
            assert any(m.startswith("OVER BUDGET: all projects this month") for m in budget)
            assert any(m.startswith("80% of budget: all projects today") for m in budget)
        await pilot.press("r")
        await settle(pilot)
        assert [m for t, m in app.notices if t == "budget"] == budget  # said once


async def test_nothing_rented_reads_zero_from_the_ledger_and_says_no_budget(tmp_path):
    app = host(tmp_path, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        spend = text_of(app, "#econ-spend")
        assert "this month $0.00" in spend and "(ledger 12:00 UTC)" in spend
        assert "no budget set" in spend
        assert "no cloud spend this month yet" in text_of(app, "#econ-chart")


# -- upgrades -------------------------------------------------------------------------------------
UPGRADES = (
    "[economics]\nmonthly_cloud_usd = 60\n"
    'upgrades = { "ram +96G" = "250", "gpu RTX 4090" = "1800" }\n'
)


async def test_upgrade_table_from_config_with_months_and_band(tmp_path):
    app = host(tmp_path, UPGRADES)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.query_one("#econ-upgrades", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        labels = [r[0] for r in rows]
        assert labels == ["RTX 4090", "+96 GB RAM"]
        ram = rows[1]
        assert ram[1] == "$250.00" and ram[2].endswith("months")
        assert "months" in ram[3] and "(user)" in ram[4]


async def test_unlocks_key_fits_the_selected_upgrade(tmp_path):
    app = host(tmp_path, UPGRADES)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("down", "u")  # the RAM row
        await settle(pilot)
        detail = text_of(app, "#econ-detail")
        assert detail.startswith("+96 GB RAM")
        assert "runs" in detail or "none of" in detail


async def test_no_upgrades_says_where_to_add_them(tmp_path):
    app = host(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "[economics] upgrades" in text_of(app, "#econ-upgrades-title")


# -- comparisons ----------------------------------------------------------------------------------
async def test_compare_key_reruns_each_specs_comparison(tmp_path, sim, capsys):
    from test_cost_cli import finished_local_job, seed_bench, write_spec

    from rigdeck.core.economics.history import ComparisonHistory
    from rigdeck.tui.cli import main

    seed_bench(0.5)
    spec = write_spec(tmp_path)
    finished_local_job(spec, 900.0)
    config = tmp_path / "rigdeck.toml"
    config.write_text(f'[cloud]\napi_url = "{sim.url}"\n', encoding="utf-8")
    assert main(["--config", str(config), "cost", "job", str(spec), "--json"]) == 0
    capsys.readouterr()
    app = host(tmp_path, f'[cloud]\napi_url = "{sim.url}"\n')
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        jobs = app.query_one("#econ-jobs", DataTable)
        rows = [jobs.get_row_at(i) for i in range(jobs.row_count)]
        assert [r[1].split(" vs ")[0] for r in rows] == ["train.toml", "job train done"]
        assert rows[0][1].startswith("train.toml vs 1x")  # compared just now: newest first
        assert rows[1][2] == "15m 0s" and rows[1][3] == "not metered"
        await pilot.press("c")
        await settle(pilot)
        (key,) = ComparisonHistory().specs()
        assert len(ComparisonHistory().history(key)) == 2
        assert text_of(app, "#econ-detail").startswith("train.toml: here")


# -- in the app -----------------------------------------------------------------------------------
async def test_key_5_shows_the_economics_pane(tmp_path):
    app = RigdeckApp(
        make_settings(tmp_path),
        sampler_factory=lambda: FixedSampler(gpu_box()),
        state=AppState(tmp_path / "state.json"),
        clock_free=True,
    )
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert app.query_one("#panes").active == "economics"
        assert "This machine" in text_of(app, "#econ-rate")
        ids = {row[3] for row in app.binding_rows()}
        assert {"economics.reload", "economics.compare", "economics.unlocks"} <= ids


def test_chat_runs_are_metered_from_snapshots_into_the_energy_log(tmp_path):
    settings = make_settings(tmp_path)
    meter = ChatEnergy(settings.economics, rapl=CpuPackagePower(tmp_path / "no-rapl"))
    assert meter.running_changed("SmolLM2 135M", 41) is None  # nothing ran before
    base = gpu_box()
    for second in (0.0, 1.0, 3.0, 7.0):  # uneven ticks, as a busy loop delivers them
        meter.add(replace(base, monotonic=100.0 + second))
    done = meter.running_changed("nothing", None)
    assert done is not None and done.kind == "chat" and done.ref == 41
    assert done.energy.seconds == pytest.approx(7.0)
    assert done.energy.kwh.value > 0 and done.energy.kwh.source == "default"  # rest configured
    stored = record_run(done, "USD")
    assert EnergyLog().for_ref("chat", 41) == stored
    assert meter.running_changed("SmolLM2 135M at http://127.0.0.1:8080/v1", 42) is None
    meter.add(replace(base, monotonic=200.0))
    meter.add(replace(base, monotonic=202.0))
    served = meter.finish()
    assert served is not None and served.kind == "serve" and served.label == "SmolLM2 135M"


# -- snapshots ------------------------------------------------------------------------------------
def seed_fixed_month() -> None:
    """A month of rentals and two metered runs at fixed times: the same screen on every run."""
    ledger = Ledger(default_ledger_path())
    rentals = [(3, 2.0, 0.40), (8, 5.0, 0.55), (14, 1.0, 1.20), (19, 3.0, 0.40)]
    for n, (day, hours, dph) in enumerate(rentals):
        start = datetime(2026, 1, day, 9, tzinfo=UTC)
        inst = LedgerInstance(
            id=1000 + n, label=f"rigdeck-fixed-{n}", source="rigdeck", state="running",
            created_at=start, gpu_name="RTX 4090", num_gpus=1, dph=dph, storage_dph=0.01,
            project="thesis" if n % 2 else "",
        )  # fmt: skip
        with ledger.write() as tx:
            tx.put_instance(inst)
            tx.state_change(StateChange(inst.id, start, "running", dph, 0.01))
            tx.close(inst.id, at=start + timedelta(hours=hours), state="destroyed", reason="done")
    log = EnergyLog()
    for kind, ref, seconds, kwh, hour in (
        ("bench", 7, 95.0, 0.0081, 10),
        ("chat", 9, 1260.0, 0.052, 11),
    ):
        at = datetime(2026, 1, 20, hour, tzinfo=UTC)
        energy = RunEnergy(
            seconds, Figure(kwh, "default", at), Figure(kwh * 0.3, "default", at),
            Figure(kwh * 3.6e6 / seconds, "default", at),
        )  # fmt: skip
        log.record(kind, ref, "SmolLM2-135M-Instruct-Q8_0.gguf", energy, "USD")


def _snapshot_host(tmp_path: Path) -> EconomicsHost:
    seed_fixed_month()
    text = UPGRADES.replace("[economics]", "[cloud]\nmonthly_budget_usd = 40\n[economics]")
    return host(tmp_path, text, clock=lambda: FIXED_NOW)


def test_economics_snapshot_80x24(snap_compare, tmp_path):
    assert snap_compare(_snapshot_host(tmp_path), terminal_size=(80, 24), run_before=settle)


def test_economics_snapshot_160x48(snap_compare, tmp_path):
    assert snap_compare(_snapshot_host(tmp_path), terminal_size=(160, 48), run_before=settle)
