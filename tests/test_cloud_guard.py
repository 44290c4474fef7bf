"""The budget guard on the simulator's clock: caps, idle GPUs, budgets, outbid, detached."""

# ruff: noqa: F811  (pytest fixtures are imported by name and taken as arguments)
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from support.cloud_money import (
    FAST,
    assert_in_agreement,
    bid_offer,
    live_ids,
    make_ledger,
    on_demand_offer,
    request,
    sim_clock,
)
from support.vast_sim import TEST_API_KEY, boot, provider, sim  # noqa: F401

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.guard import (
    decide,
    find_guard,
    guard_tick,
    run_guard,
    seconds_to_next_cap,
    spawn_guard,
)
from rigdeck.core.cloud.guard_process import guard_pid_path, hold_guard_lock
from rigdeck.core.cloud.ledger import Caps
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.config import CloudSettings

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def ledger(tmp_path):
    return make_ledger(tmp_path)


def _rent(provider, ledger, sim, caps=None, offer=None, bid=None):
    offer = offer or on_demand_offer(provider)
    caps = caps or Caps()
    return actions.rent(
        provider, ledger, request(offer, bid=bid), caps=caps, clock=sim_clock(sim), find=FAST
    )


def _tick(provider, ledger, sim, settings):
    return guard_tick(provider, ledger, settings, sim_clock(sim)())


def _hours_to(usd: float, row) -> float:
    return usd / (row.dph + row.storage_dph)


def test_a_crossed_dollar_cap_stops_within_one_tick(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=0.5))
    settings = CloudSettings(on_cap="stop")
    boot(sim)
    assert [a for a in _tick(provider, ledger, sim, settings) if a.rule == "max_usd"] == []
    sim.advance(_hours_to(0.51, row) * 3600)
    done = _tick(provider, ledger, sim, settings)
    assert [(a.rule, a.action, a.instance_id, a.ok) for a in done] == [
        ("max_usd", "stop", row.id, True)
    ]
    assert sim.instance(row.id)["actual_status"] == "stopped"
    guard_event = ledger.events(kinds=["guard"])[-1]
    assert guard_event.action == "stop" and "max_usd" in guard_event.detail
    assert "cap $0.50" in guard_event.detail
    # Stopped, the storage still bills: said once, never a second stop.
    again = _tick(provider, ledger, sim, settings)
    assert [(a.action, a.rule) for a in again] == [("warn", "max_usd")]
    assert "storage still bills" in again[0].reason
    assert _tick(provider, ledger, sim, settings) == []


def test_a_crossed_dollar_cap_destroys_when_configured(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=0.5))
    sim.advance(_hours_to(0.6, row) * 3600)
    done = _tick(provider, ledger, sim, CloudSettings(on_cap="destroy"))
    assert [(a.rule, a.action, a.ok) for a in done] == [("max_usd", "destroy", True)]
    closed = ledger.instance(row.id)
    assert closed is not None and closed.state == "destroyed"
    assert "guard: max_usd" in (closed.closed_reason or "")
    assert live_ids(sim) == set()
    assert_in_agreement(ledger, sim)


def test_warns_once_at_80_percent_of_a_cap(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    settings = CloudSettings(max_usd=1.0, on_cap="destroy")  # the default cap applies to it
    sim.advance(_hours_to(0.85, row) * 3600)
    done = _tick(provider, ledger, sim, settings)
    assert [(a.rule, a.action) for a in done] == [("max_usd", "warn")]
    assert "85% of cap $1.00" in done[0].reason
    assert _tick(provider, ledger, sim, settings) == []
    assert live_ids(sim) == {row.id}


def test_the_hours_cap(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_hours=2))
    sim.advance(2 * 3600 + 5)
    done = _tick(provider, ledger, sim, CloudSettings(on_cap="stop"))
    assert [(a.rule, a.action, a.instance_id) for a in done] == [("max_hours", "stop", row.id)]


def test_idle_gpus_are_stopped_after_idle_minutes(sim, provider, ledger):
    idle = _rent(provider, ledger, sim)
    busy = _rent(provider, ledger, sim)
    settings = CloudSettings(idle_minutes=30, on_cap="stop")
    boot(sim)
    sim.set_gpu_util(idle.id, 0.9)
    sim.set_gpu_util(busy.id, 0.9)
    assert _tick(provider, ledger, sim, settings) == []
    sim.set_gpu_util(idle.id, 0.0)
    sim.advance(20 * 60)
    assert _tick(provider, ledger, sim, settings) == []  # idle 20 of 30 minutes
    sim.advance(11 * 60)
    done = _tick(provider, ledger, sim, settings)
    assert [(a.rule, a.action, a.instance_id) for a in done] == [("idle", "stop", idle.id)]
    assert "idle 31 min" in done[0].reason
    assert sim.instance(busy.id)["actual_status"] == "running"


def test_monthly_budget_warns_at_80_percent_then_acts(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    sim.advance(3600)
    reconcile(provider, ledger, clock=sim_clock(sim))
    spent = ledger.instance(row.id).usd
    settings = CloudSettings(monthly_budget_usd=spent / 0.85, on_cap="stop")
    done = _tick(provider, ledger, sim, settings)
    assert [(a.rule, a.action, a.instance_id) for a in done] == [("monthly_budget", "warn", None)]
    assert "85% of budget" in done[0].reason
    assert _tick(provider, ledger, sim, settings) == []  # once a month
    sim.advance(0.3 * 3600)
    done = _tick(provider, ledger, sim, settings)
    assert [(a.rule, a.action, a.instance_id) for a in done] == [("monthly_budget", "stop", row.id)]


def test_unaccounted_instances_are_warned_about_never_touched(sim, provider, ledger):
    outside = provider.rent(request(on_demand_offer(provider), label="by-hand"))
    sim.advance(10 * 3600)
    settings = CloudSettings(max_usd=0.01, monthly_budget_usd=0.01, on_cap="destroy")
    done = _tick(provider, ledger, sim, settings)
    assert ("unaccounted", "warn", outside) in [(a.rule, a.action, a.instance_id) for a in done]
    assert all(a.action == "warn" for a in done)
    assert live_ids(sim) == {outside}


def test_an_outbid_instance_is_reported_at_the_next_tick(sim, provider, ledger):
    offer = bid_offer(provider)
    row = _rent(provider, ledger, sim, offer=offer, bid=round(offer.interruptible_min_bid * 1.2, 4))
    boot(sim)
    settings = CloudSettings()
    assert _tick(provider, ledger, sim, settings) == []
    sim.outbid(row.id)
    (report,) = _tick(provider, ledger, sim, settings)
    assert (report.rule, report.action, report.instance_id) == ("outbid", "report", row.id)
    assert "stopped, storage still billing" in report.reason


def test_run_guard_acts_in_the_first_tick_after_a_cap_is_crossed(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=0.5))
    settings = CloudSettings(on_cap="destroy", poll_s=0.2)
    ticks: list[list] = []
    crossed_at: list[int] = []
    stop = threading.Event()

    def on_tick(done):
        ticks.append(done)
        if len(ticks) == 2:
            sim.advance(_hours_to(0.6, row) * 3600)  # crossed between tick 2 and tick 3
            crossed_at.append(len(ticks))

    runner = threading.Thread(
        target=run_guard,
        args=(lambda: provider, ledger.path, settings),
        kwargs={"stop_event": stop, "clock": sim_clock(sim), "on_tick": on_tick},
    )
    runner.start()
    runner.join(timeout=60)
    stop.set()
    assert not runner.is_alive()
    acted = [n for n, done in enumerate(ticks, 1) if any(a.action == "destroy" for a in done)]
    assert acted == [crossed_at[0] + 1]
    assert live_ids(sim) == set()  # and with nothing open, run_guard returned by itself


def test_decide_is_pure_over_values(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=1.0))
    now = sim_clock(sim)()
    rows, steps = ledger.instances(), ledger.state_changes()
    assert decide(rows, steps, CloudSettings(), now, set()) == []
    later = now.replace(year=now.year + 1)
    (d,) = decide(rows, steps, CloudSettings(on_cap="warn"), later, set())
    assert (d.rule, d.do, d.instance_id) == ("max_usd", "warn", row.id)
    assert decide(rows, steps, CloudSettings(on_cap="warn"), later, {(row.id, d.key)}) == []
    destroying = [replace(rows[0], state="destroying")]
    assert decide(destroying, steps, CloudSettings(on_cap="stop"), later, set()) == []


def test_the_guard_sees_a_billing_crossing_coming(sim, provider, ledger):
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=1.0, max_hours=48))
    now = sim_clock(sim)()
    rows, steps = ledger.instances(), ledger.state_changes()
    ahead = seconds_to_next_cap(rows, steps, CloudSettings(), now)
    rate = row.dph + row.storage_dph
    assert ahead == pytest.approx((1.0 - ledger.instance(row.id).usd) / rate * 3600, rel=0.01)
    stopped = [replace(rows[0], state="stopped")]
    stopped_steps = {row.id: [replace(steps[row.id][0], state="stopped")]}
    # Stopped, only storage bills: the $ cap is far off, the 48 h cap comes first.
    assert seconds_to_next_cap(stopped, stopped_steps, CloudSettings(), now) == pytest.approx(
        48 * 3600 - (now - row.created_at).total_seconds()
    )
    assert seconds_to_next_cap([], {}, CloudSettings(), now) is None


def test_the_detached_guard_is_found_again_acts_and_exits_by_itself(
    sim, provider, ledger, tmp_path
):
    config = tmp_path / "rigdeck.toml"
    config.write_text('[cloud]\npoll_s = 2.0\non_cap = "destroy"\n', encoding="utf-8")
    row = _rent(provider, ledger, sim, caps=Caps(max_usd=0.0001))  # crossed in ~3 s of billing
    env = dict(os.environ, VSIM_URL=sim.url, VSIM_KEY=TEST_API_KEY)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *sys.path])
    pid = spawn_guard(
        ledger_path=ledger.path,
        config_path=config,
        factory="support.cloud_guard_factory:provider",
        env=env,
    )
    try:
        assert find_guard() == pid
        assert spawn_guard(ledger_path=ledger.path, config_path=config, env=env) == pid
        proc = psutil.Process(pid)
        assert "rigdeck.core.cloud.guard" in " ".join(proc.cmdline())
        assert proc.ppid() != os.getpid() or os.getsid(pid) != os.getsid(0)  # own session
        deadline = time.monotonic() + 60
        while find_guard() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert find_guard() is None, "the guard did not exit once nothing was open"
        closed = ledger.instance(row.id)
        assert closed is not None and closed.state == "destroyed"
        assert any(e.kind == "guard" and e.action == "destroy" for e in ledger.events())
        assert live_ids(sim) == set()
        assert not guard_pid_path().exists()
    finally:
        if psutil.pid_exists(pid) and find_guard() == pid:
            os.kill(pid, 9)


def test_one_guard_lock_at_a_time_and_a_stale_pid_file_is_ignored():
    path = guard_pid_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("999999\n")  # left by a guard that crashed: nobody holds its lock
    assert find_guard() is None
    lock = hold_guard_lock()
    assert lock is not None
    try:
        assert find_guard() == os.getpid()
        assert hold_guard_lock(wait_s=0.2) is None  # a second guard stands down
    finally:
        lock.release()
    assert find_guard() is None and not path.exists()
