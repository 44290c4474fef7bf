"""Ledger-wrapped provider actions and reconcile against the simulator, through the real SDK.

Every fault test ends with the ledger and the provider in agreement: each instance that bills is
open in the ledger, exactly once, and nothing the ledger holds open is gone.
"""

# ruff: noqa: F811  (pytest fixtures are imported by name and taken as arguments)
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cloud_money import (
    FAST,
    assert_in_agreement,
    bid_offer,
    live_ids,
    make_ledger,
    on_demand_offer,
    open_ids,
    request,
    sim_clock,
)
from support.vast_sim import CREATE_TIMEOUT_S, TEST_API_KEY, boot, provider, sim  # noqa: F401

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.actions import Backoff
from rigdeck.core.cloud.ledger import Caps
from rigdeck.core.cloud.provider import CloudError, CreateUncertain, ProviderUnavailable, new_label
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.spend import burn_dph, check_against_credit

CHILD = Path(__file__).parent / "support" / "cloud_rent_child.py"


@pytest.fixture
def ledger(tmp_path):
    return make_ledger(tmp_path)


def _rent(provider, ledger, sim, **kw):
    offer = kw.pop("offer", None) or on_demand_offer(provider)
    return actions.rent(
        provider, ledger, request(offer, **kw), caps=Caps(max_usd=5), clock=sim_clock(sim),
        find=FAST,
    )  # fmt: skip


def test_rent_writes_the_intent_first_and_the_outcome_after(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    assert sim.create_count == 1
    assert row.source == "rigdeck" and row.caps.max_usd == 5
    (truth,) = sim.instances()
    assert truth["id"] == row.id and truth["label"] == row.label
    intent, outcome = ledger.events()
    assert (intent.kind, intent.action, intent.label) == ("intent", "rent", row.label)
    assert intent.cli is not None and intent.cli.startswith("vastai create instance")
    assert f"--label {row.label}" in intent.cli and TEST_API_KEY not in intent.cli
    assert (outcome.kind, outcome.ok, outcome.intent_seq) == ("outcome", True, intent.seq)
    assert outcome.instance_id == row.id and intent.at <= outcome.at
    assert_in_agreement(ledger, sim)


def test_a_label_is_never_sent_twice(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    with pytest.raises(CloudError, match="already used"):
        _rent(provider, ledger, sim, label=row.label)
    assert sim.create_count == 1
    assert_in_agreement(ledger, sim)


def test_429_and_502_storms_end_in_agreement(sim, provider, ledger):
    sim.rate_limit(1, retry_after=0.1, op="show")
    sim.storm(2, status=502, op="show")
    row = _rent(provider, ledger, sim)
    assert row.gpu_name  # the read after the create got through the storm
    # A storm longer than the provider's retries: reconcile raises and changes nothing.
    sim.storm(6, status=502, op="list")
    before = ledger.events()
    with pytest.raises(ProviderUnavailable):
        reconcile(provider, ledger, clock=sim_clock(sim))
    assert ledger.events() == before
    sim.clear_faults()
    sim.storm(2, status=502, op="list")
    sim.rate_limit(1, retry_after=0.1, op="list")
    reconcile(provider, ledger, clock=sim_clock(sim))
    # A create answered 429 was refused before anything happened: recorded as failed.
    sim.rate_limit(1, retry_after=60, op="create")
    with pytest.raises(ProviderUnavailable):
        _rent(provider, ledger, sim)
    # A 502 on create may or may not have created: found by label or closed as never created.
    sim.storm(1, status=502, op="create")
    with pytest.raises(CreateUncertain):
        _rent(provider, ledger, sim)
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert len(report.never_created) == 1
    assert open_ids(ledger) == {row.id}
    assert_in_agreement(ledger, sim)
    failed = [e for e in ledger.events() if e.kind == "outcome" and not e.ok]
    assert len(failed) == 2


def test_a_create_answered_never_is_adopted_not_resent(sim, provider, ledger):
    sim.create_never()
    row = _rent(provider, ledger, sim)
    assert row.source == "adopted"
    assert sim.create_count == 1
    assert_in_agreement(ledger, sim)
    outcome = ledger.events(kinds=["outcome"])[-1]
    assert outcome.ok and "found by its label" in outcome.detail


def test_a_create_answered_late_is_adopted_exactly_once(sim, provider, ledger):
    sim.create_late(CREATE_TIMEOUT_S + 1.5)
    row = _rent(provider, ledger, sim)
    assert row.source == "adopted" and sim.create_count == 1
    assert reconcile(provider, ledger, clock=sim_clock(sim)).adopted == ()
    assert_in_agreement(ledger, sim)


def test_killed_between_create_and_outcome_then_reconcile_adopts(sim, provider, ledger, tmp_path):
    marker = tmp_path / "created"
    label = new_label()
    offer = on_demand_offer(provider)
    child = subprocess.Popen(
        [sys.executable, str(CHILD), sim.url, TEST_API_KEY, str(ledger.path), label,
         str(offer.id), str(marker), str(sim.now())],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.stderr.read().decode()[-2000:] if child.stderr else ""
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    created = int(marker.read_text())
    # The intent was committed before the create; the outcome never came.
    (pending,) = ledger.rent_intents(unanswered_only=True)
    assert pending.label == label and ledger.instances() == []
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert [i.id for i in report.adopted] == [created]
    adopted = ledger.instance(created)
    assert adopted is not None and adopted.source == "adopted" and adopted.project == "crash-test"
    assert adopted.caps.max_usd == 5.0
    assert sim.create_count == 1
    assert ledger.rent_intents(unanswered_only=True) == []
    assert_in_agreement(ledger, sim)
    assert reconcile(provider, ledger, clock=sim_clock(sim)).adopted == ()


def test_destroy_failing_twice_then_succeeding(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    sim.fail_destroy(2, status=502)
    done = actions.destroy(provider, ledger, row.id, clock=sim_clock(sim), backoff=FAST)
    assert done.state == "destroyed" and not done.open
    tries = [e for e in ledger.events(instance_id=row.id) if e.action == "destroy"]
    assert [e.kind for e in tries] == ["intent", "observed", "observed", "outcome"]
    assert tries[-1].ok and "3 tries" in tries[-1].detail
    assert live_ids(sim) == set()
    assert_in_agreement(ledger, sim)


def test_a_destroy_that_never_confirms_stays_destroying_until_reconcile(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    sim.fail_destroy(50, status=500)
    with pytest.raises(CloudError, match="not confirmed destroyed after 3 tries"):
        actions.destroy(
            provider, ledger, row.id, clock=sim_clock(sim), backoff=Backoff(3, 0.05, 2, 0.2)
        )
    held = ledger.instance(row.id)
    assert held is not None and held.state == "destroying" and held.open
    assert live_ids(sim) == {row.id}  # still billing, and the ledger says so
    sim.clear_faults()
    first = reconcile(provider, ledger, clock=sim_clock(sim))
    assert first.destroy_retried == (row.id,)
    reconcile(provider, ledger, clock=sim_clock(sim))
    gone = ledger.instance(row.id)
    assert gone is not None and gone.state == "destroyed"
    assert_in_agreement(ledger, sim)


def test_an_instance_that_never_becomes_ready(sim, provider, ledger):
    sim.never_ready(msg="Error: image pull failed")
    row = _rent(provider, ledger, sim)
    boot(sim)
    with pytest.raises(CloudError, match=r"still loading .*image pull failed.* bills"):
        actions.wait_running(
            provider, ledger, row.id, timeout_s=0.3, poll_s=0.1, clock=sim_clock(sim)
        )
    held = ledger.instance(row.id)
    truth = sim.instance(row.id)
    assert held is not None and truth is not None
    assert held.state == "loading" == truth["actual_status"]
    actions.destroy(provider, ledger, row.id, clock=sim_clock(sim), backoff=FAST)
    assert_in_agreement(ledger, sim)


def test_a_ready_instance_is_waited_for(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    boot(sim)
    ready = actions.wait_running(provider, ledger, row.id, timeout_s=10, clock=sim_clock(sim))
    assert ready.state == "running"


def test_outbid_is_seen_and_storage_still_bills(sim, provider, ledger):
    offer = bid_offer(provider)
    assert offer.interruptible_min_bid is not None
    row = _rent(provider, ledger, sim, offer=offer, bid=round(offer.interruptible_min_bid * 1.2, 4))
    boot(sim)
    reconcile(provider, ledger, clock=sim_clock(sim))
    sim.outbid(row.id)
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert [i.id for i in report.outbid] == [row.id]
    held = ledger.instance(row.id)
    assert held is not None and held.outbid and held.state == "stopped" and held.open
    steps = ledger.state_changes([row.id])[row.id]
    assert burn_dph(held, steps) == pytest.approx(held.storage_dph)
    event = ledger.events(instance_id=row.id)[-1]
    assert "outbid: stopped, storage still billing" in event.detail
    assert reconcile(provider, ledger, clock=sim_clock(sim)).outbid == ()  # said once
    # A higher bid brings it back.
    actions.change_bid(provider, ledger, row.id, round(offer.interruptible_min_bid * 3, 4))
    boot(sim)
    reconcile(provider, ledger, clock=sim_clock(sim))
    back = ledger.instance(row.id)
    assert back is not None and back.state == "running" and not back.outbid


def test_stop_and_start_follow_the_provider(sim, provider, ledger):
    row = _rent(provider, ledger, sim)
    boot(sim)
    stopped = actions.stop(provider, ledger, row.id, clock=sim_clock(sim))
    assert stopped.state == "stopped" == sim.instance(row.id)["actual_status"]
    started = actions.start(provider, ledger, row.id, clock=sim_clock(sim))
    assert started.state == sim.instance(row.id)["actual_status"]
    kinds = [(e.kind, e.action) for e in ledger.events(instance_id=row.id)][-4:]
    assert kinds == [
        ("intent", "stop"),
        ("outcome", "stop"),
        ("intent", "start"),
        ("outcome", "start"),
    ]
    assert ledger.events(instance_id=row.id)[-4].cli == f"vastai stop instance {row.id}"


def test_spend_matches_the_providers_charges_and_balance(sim, provider, ledger):
    clock = sim_clock(sim)
    row = _rent(provider, ledger, sim)
    reconcile(provider, ledger, clock=clock)
    sim.advance(3600)
    actions.stop(provider, ledger, row.id, clock=clock)
    sim.advance(7200)
    reconcile(provider, ledger, clock=clock)
    held = ledger.instance(row.id)
    assert held is not None
    assert held.usd == pytest.approx(sim.charges(row.id), rel=1e-3)
    assert held.usd > row.storage_dph * 3  # storage kept billing while stopped
    check = check_against_credit(ledger.credits(), ledger.instances(), ledger.state_changes())
    assert check is not None and check.provider_usd > 0 and check.agrees()


def test_reconcile_flags_unknown_instances_and_never_destroys_them(sim, provider, ledger):
    offer = on_demand_offer(provider)
    outside = provider.rent(request(offer, label="made-by-hand"))
    mine = _rent(provider, ledger, sim)
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert [i.id for i in report.unaccounted] == [outside]
    flagged = ledger.instance(outside)
    assert flagged is not None and flagged.source == "unaccounted" and flagged.open
    assert (
        "unaccounted: created outside rigdeck or lost"
        in ledger.events(instance_id=outside)[-1].detail
    )
    assert reconcile(provider, ledger, clock=sim_clock(sim)).unaccounted == ()  # flagged once
    assert live_ids(sim) == {outside, mine.id}
    # Gone at the provider without rigdeck: closed as gone.
    provider.destroy(outside)
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert [i.id for i in report.closed] == [outside]
    closed = ledger.instance(outside)
    assert closed is not None and closed.state == "gone" and not closed.open
    assert_in_agreement(ledger, sim)


def test_an_intended_rent_that_never_happened_closes_as_never_created(sim, provider, ledger):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    now = datetime.fromtimestamp(sim.now(), UTC)
    ledger.intent(
        "rent", at=now - timedelta(seconds=5), label="rigdeck-lost",
        data={"pid": int(dead.stdout), "host": os.uname().nodename, "offer_id": 1},
    )  # fmt: skip
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert report.never_created == ("rigdeck-lost",)
    assert not ledger.has_open()
    outcome = ledger.events(kinds=["outcome"])[-1]
    assert not outcome.ok and "never created" in outcome.detail


def test_a_rent_in_flight_in_another_process_is_left_alone(sim, provider, ledger):
    now = datetime.fromtimestamp(sim.now(), UTC)
    ledger.intent(
        "rent", at=now, label="rigdeck-inflight",
        data={"pid": os.getppid(), "host": os.uname().nodename},
    )  # fmt: skip
    assert reconcile(provider, ledger, clock=sim_clock(sim)).never_created == ()
    assert ledger.has_open()


def test_reconcile_reads_every_page(sim, provider, ledger):
    offer = on_demand_offer(provider)
    made = {provider.rent(request(offer)) for _ in range(60)}  # three pages of 25
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert report.listed == 60 and {i.id for i in report.unaccounted} == made
    assert open_ids(ledger) == made


def test_two_instances_with_one_intended_label_adopt_exactly_one(sim, provider, ledger):
    offer = on_demand_offer(provider)
    first = provider.rent(request(offer, label="rigdeck-dup"))
    second = provider.rent(request(offer, label="rigdeck-dup"))  # a create that was re-sent
    ledger.intent(
        "rent", at=datetime.fromtimestamp(sim.now(), UTC), label="rigdeck-dup",
        data={"pid": None, "offer_id": offer.id},
    )  # fmt: skip
    report = reconcile(provider, ledger, clock=sim_clock(sim))
    assert [i.id for i in report.adopted] == [min(first, second)]
    assert [i.id for i in report.unaccounted] == [max(first, second)]
    why = ledger.events(instance_id=max(first, second))[-1].detail
    assert "a second instance labelled rigdeck-dup" in why
    assert open_ids(ledger) == live_ids(sim)
