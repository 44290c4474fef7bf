"""The cloud ledger (SQLite, shared by processes) and the spend formulas, with fixed inputs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from rigdeck.core.cloud.ledger import (
    Caps,
    Ledger,
    LedgerError,
    LedgerInstance,
    StateChange,
    default_ledger_path,
)
from rigdeck.core.cloud.spend import (
    burn_dph,
    check_against_credit,
    summarize,
    usd_between,
    usd_by_day,
    usd_by_month,
)
from rigdeck.core.config import data_dir
from rigdeck.tui.cli_cloud_views import ledger_json

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def inst(id: int = 1, *, created: datetime = T0, **kw: object) -> LedgerInstance:
    base: dict[str, object] = dict(
        label=f"rigdeck-{id}", source="rigdeck", state="running", dph=1.0, storage_dph=0.1
    )
    base.update(kw)
    return LedgerInstance(id=id, created_at=created, **base)  # type: ignore[arg-type]


def change(at: datetime, state: str, dph: float = 1.0, storage: float = 0.1, id: int = 1):
    return StateChange(id, at, state, dph, storage)


# -- spend formulas ----------------------------------------------------------------------------


def test_storage_is_billed_from_creation_and_gpu_only_while_running():
    i = inst()
    steps = [change(T0, "loading"), change(T0 + H, "running"), change(T0 + 3 * H, "stopped")]
    # loading bills the machine too (the provider charges from creation); 3 h GPU + 5 h storage.
    assert usd_between(i, steps, end=T0 + 5 * H) == pytest.approx(3 * 1.0 + 5 * 0.1)


def test_a_stopped_instance_still_pays_storage_until_destroyed():
    i = inst()
    steps = [change(T0, "running"), change(T0 + H, "stopped")]
    assert burn_dph(i, steps) == pytest.approx(0.1)
    ten_hours_later = usd_between(i, steps, end=T0 + 11 * H)
    assert ten_hours_later == pytest.approx(1.0 + 11 * 0.1)
    closed = inst(closed_at=T0 + 2 * H, state="destroyed")
    assert usd_between(closed, steps, end=T0 + 11 * H) == pytest.approx(1.0 + 2 * 0.1)
    assert burn_dph(closed, steps) == 0.0


def test_billing_is_by_the_second():
    i = inst(dph=3.6, storage_dph=0.0)
    steps = [change(T0, "running", dph=3.6, storage=0.0)]
    assert usd_between(i, steps, end=T0 + timedelta(seconds=1)) == pytest.approx(0.001)


def test_an_instance_first_seen_late_pays_storage_from_its_creation():
    i = inst(source="unaccounted", state="stopped")
    steps = [change(T0 + 5 * H, "stopped")]
    assert usd_between(i, steps, end=T0 + 6 * H) == pytest.approx(6 * 0.1)


def test_a_price_change_applies_from_its_time():
    i = inst(interruptible=True)
    steps = [change(T0, "running", dph=0.5), change(T0 + H, "running", dph=0.8)]
    assert usd_between(i, steps, end=T0 + 2 * H) == pytest.approx(0.5 + 0.8 + 0.2)


def test_day_and_month_boundaries_are_utc_calendar():
    start = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    i = inst(created=start, dph=1.0, storage_dph=0.0)
    steps = [change(start, "running", storage=0.0)]
    now = start + 2 * H  # 01:00 on 1 February
    days = usd_by_day([i], {1: steps}, start=start, end=now)
    assert days == {date(2026, 1, 31): pytest.approx(1.0), date(2026, 2, 1): pytest.approx(1.0)}
    months = usd_by_month([i], {1: steps}, start=start, end=now)
    assert months == {(2026, 1): pytest.approx(1.0), (2026, 2): pytest.approx(1.0)}
    summary = summarize([i], {1: steps}, now)
    assert summary.total_usd == pytest.approx(2.0)
    assert summary.today_usd == pytest.approx(1.0)
    assert summary.month_usd == pytest.approx(1.0)
    december = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    j = inst(2, created=december, storage_dph=0.0)
    months = usd_by_month(
        [j], {2: [change(december, "running", storage=0.0, id=2)]}, start=december, end=december + H
    )
    assert months == {(2026, 12): pytest.approx(0.5), (2027, 1): pytest.approx(0.5)}


def test_summary_by_project_and_burn_rate():
    a = inst(1, project="llm")
    b = inst(2, project="llm", state="stopped")
    c = inst(3, project="")
    changes = {
        1: [change(T0, "running")],
        2: [change(T0, "stopped", id=2)],
        3: [change(T0, "running", id=3)],
    }
    s = summarize([a, b, c], changes, T0 + 2 * H)
    assert s.by_project["llm"] == pytest.approx(2.2 + 0.2)
    assert s.by_project[""] == pytest.approx(2.2)
    assert s.burn_dph == pytest.approx(1.1 + 0.1 + 1.1)


def test_credit_balance_deltas_are_checked_against_the_ledger():
    i = inst()
    steps = [change(T0, "running")]
    readings = [(T0 + H, 100.0), (T0 + 3 * H, 97.8)]
    check = check_against_credit(readings, [i], {1: steps})
    assert check is not None
    assert check.ledger_usd == pytest.approx(2.2)
    assert check.agrees()
    off = check_against_credit([(T0 + H, 100.0), (T0 + 3 * H, 90.0)], [i], {1: steps})
    assert off is not None and not off.agrees()
    assert check_against_credit(readings[:1], [i], {1: steps}) is None


# -- the ledger file ---------------------------------------------------------------------------


def test_default_path_is_under_the_data_dir_in_wal_mode():
    ledger = Ledger()
    assert ledger.path == default_ledger_path() == data_dir() / "cloud" / "ledger.sqlite3"
    with sqlite3.connect(ledger.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_instances_round_trip_with_their_first_billing_step(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    row = inst(7, caps=Caps(max_usd=5.0, idle_minutes=30), project="p", bid=0.3, offer_id=42)
    with ledger.write() as tx:
        tx.put_instance(row)
    assert ledger.instance(7) == row
    assert ledger.instances(open_only=True) == [row]
    assert ledger.state_changes() == {7: [StateChange(7, T0, "running", 1.0, 0.1)]}
    with ledger.write() as tx:
        tx.close(7, at=T0 + H, state="destroyed", reason="destroyed by rigdeck")
    closed = ledger.instance(7)
    assert closed is not None and not closed.open and closed.closed_at == T0 + H
    assert ledger.instances(open_only=True) == []


def test_events_are_append_only_and_an_intent_has_one_outcome(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    seq = ledger.intent("rent", at=T0, label="rigdeck-a", data={"offer_id": 1}, cli="vastai x")
    assert ledger.has_open()  # a rent with no outcome may be billing
    assert [r.label for r in ledger.rent_intents(unanswered_only=True)] == ["rigdeck-a"]
    first = ledger.outcome(seq, at=T0 + H, ok=True, instance_id=9, detail="created")
    second = ledger.outcome(seq, at=T0 + H, ok=False, detail="a late, conflicting answer")
    assert first is not None and second is None
    assert ledger.rent_intents(unanswered_only=True) == []
    (intent,) = ledger.rent_intents()
    assert intent.outcome_ok is True and intent.instance_id == 9
    events = ledger.events()
    assert [(e.kind, e.action, e.ok) for e in events] == [
        ("intent", "rent", None),
        ("outcome", "rent", True),
    ]
    assert events[0].at == T0 and events[0].cli == "vastai x" and events[1].label == "rigdeck-a"
    with sqlite3.connect(ledger.path) as conn, pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE events SET detail = 'rewritten'")
    with sqlite3.connect(ledger.path) as conn, pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM events")
    assert len(ledger.events()) == 2


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    with pytest.raises(RuntimeError), ledger.write() as tx:
        tx.put_instance(inst(1))
        tx.observed("adopt", at=T0, instance_id=1)
        raise RuntimeError("crash halfway")
    assert ledger.instances() == [] and ledger.events() == []


def test_naive_times_are_refused(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    with pytest.raises(ValueError):
        ledger.intent("stop", at=datetime(2026, 1, 1))


def test_an_unwritable_ledger_says_where(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LedgerError, match="cannot open the cloud ledger"):
        Ledger(blocker / "ledger.sqlite3")


_WRITER = """
import sys
from datetime import UTC, datetime
from rigdeck.core.cloud.ledger import Ledger
ledger = Ledger(__import__("pathlib").Path(sys.argv[1]))
for n in range(150):
    seq = ledger.intent("stop", at=datetime.now(UTC), instance_id=n, detail=sys.argv[2])
    ledger.outcome(seq, at=datetime.now(UTC), ok=True)
"""


def test_processes_share_the_ledger_without_losing_a_write(tmp_path):
    path = tmp_path / "shared.sqlite3"
    Ledger(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"w{n}"], stderr=subprocess.PIPE
        )
        for n in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    events = Ledger(path).events()
    assert len(events) == 3 * 150 * 2
    outcomes = [e for e in events if e.kind == "outcome"]
    assert len({e.intent_seq for e in outcomes}) == 450


def test_ledger_json_has_the_documented_shape(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    seq = ledger.intent("rent", at=T0, label="rigdeck-1", cli="vastai create instance 5")
    with ledger.write() as tx:
        tx.put_instance(inst(1, project="llm"))
        tx.outcome(seq, at=T0, ok=True, instance_id=1, detail="created instance 1")
        tx.put_instance(inst(2, source="unaccounted", label=None))
        tx.state_change(StateChange(1, T0 + H, "stopped", 1.0, 0.1))
        tx.record_credit(T0, 50.0)
        tx.record_credit(T0 + 2 * H, 50.0 - 1.2 - 2.2)
    now = T0 + 2 * H
    rows, steps = ledger.instances(), ledger.state_changes()
    credit = check_against_credit(ledger.credits(), rows, steps)
    data = ledger_json(rows, steps, summarize(rows, steps, now), ledger.events(), credit)
    json.dumps(data)  # plain JSON all the way down
    assert {"instances", "total_usd", "month_usd", "events"} <= data.keys()
    first, second = data["instances"]
    assert first["id"] == 1 and first["usd_so_far"] == pytest.approx(1.2)
    assert first["state"] == "running" and first["source"] == "rigdeck"
    assert second["source"] == "unaccounted"
    assert data["total_usd"] == pytest.approx(1.2 + 2.2)
    assert data["by_project"] == {"llm": pytest.approx(1.2), "": pytest.approx(2.2)}
    assert data["credit_check"]["agrees"]
    assert [(e["kind"], e["action"], e["cli"]) for e in data["events"]] == [
        ("intent", "rent", "vastai create instance 5"),
        ("outcome", "rent", None),
    ]
    assert datetime.fromisoformat(data["events"][0]["at"]) == T0  # UTC ISO-8601
