"""Job states: the allowed moves, refusals that say what is allowed, and the SQLite store."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime

import pytest

from rigdeck.core.cloud.jobs.lifecycle import (
    JOB_STATES,
    TRANSITIONS,
    Job,
    JobNotFound,
    JobStateError,
    JobStore,
    default_jobs_path,
    new_job_id,
    transition,
)
from rigdeck.core.config import data_dir

T0 = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def job(name: str = "tiny-gpt", **kw) -> Job:
    return Job(
        id=kw.pop("id", new_job_id(name, at=T0)),
        name=name,
        spec_path="/p/tiny-gpt.toml",
        state="requested",
        created_at=T0,
        **kw,
    )


def test_every_state_has_its_moves_and_destroyed_ends_everything():
    assert set(TRANSITIONS) == set(JOB_STATES)
    assert TRANSITIONS["destroyed"] == frozenset()
    for state in JOB_STATES:
        if state != "destroyed":
            assert "destroyed" in TRANSITIONS[state], state


def test_a_rented_run_walks_through_its_states_with_times_set():
    j = job()
    for to in ("provisioning", "syncing", "running"):
        j = transition(j, to, at=T0)
    assert j.started_at == T0 and j.ended_at is None
    j = transition(j, "preempted")
    j = transition(j, "recovering")
    assert j.attempt == 2
    for to in ("provisioning", "syncing", "running", "collecting"):
        j = transition(j, to)
    assert j.started_at == T0  # the first start is kept across a recovery
    j = transition(j, "done", exit_code=0)
    assert j.ended and j.exit_code == 0 and j.ended_at is not None
    j = transition(j, "destroyed")
    assert j.state == "destroyed"


def test_a_local_run_skips_renting():
    j = transition(transition(job(target="local"), "running"), "failed", exit_code=3)
    assert j.local and j.state == "failed" and j.exit_code == 3


@pytest.mark.parametrize(
    ("path", "to"),
    [((), "syncing"), (("provisioning", "syncing", "running", "done"), "running"), ((), "done")],
)
def test_illegal_moves_are_refused_naming_what_is_allowed(path, to):
    j = job()
    for step in path:
        j = transition(j, step)
    with pytest.raises(JobStateError) as info:
        transition(j, to)
    message = str(info.value)
    assert f"from {j.state} to {to}" in message and j.id in message
    for allowed in TRANSITIONS[j.state]:
        assert allowed in message


def test_destroyed_is_final():
    j = transition(job(), "destroyed")
    for to in JOB_STATES:
        with pytest.raises(JobStateError):
            transition(j, to)


def test_job_ids_sort_by_time_and_are_unique():
    ids = {new_job_id("t", at=T0) for _ in range(50)}
    assert len(ids) > 40
    assert all(i.startswith("t-20261202-160000-") for i in ids)


def test_store_defaults_to_the_data_dir_in_wal_mode(tmp_path):
    store = JobStore()
    assert store.path == default_jobs_path() == data_dir() / "cloud" / "jobs.sqlite3"
    assert store.path.exists()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_round_trips_and_moves_are_checked_against_the_stored_state(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    j = store.add(job(target=12345, remote_dir="/workspace/t", job_dir="/workspace/.rigdeck/x"))
    assert store.get(j.id) == j
    moved = store.move(j.id, "provisioning")
    assert store.get(j.id) == moved and moved.state == "provisioning"
    with pytest.raises(JobStateError):
        store.move(j.id, "done")
    assert store.get(j.id).state == "provisioning"  # a refused move changes nothing
    store.update(j.id, usd=0.42, log_offset=1234)
    again = JobStore(tmp_path / "jobs.sqlite3").get(j.id)
    assert again.usd == 0.42 and again.log_offset == 1234 and again.target == 12345
    with pytest.raises(JobStateError):
        store.update(j.id, state="done")


def test_two_writers_cannot_both_take_the_same_move(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    j = store.add(job(target="local"))
    store.move(j.id, "running")
    results: list[str] = []

    def finish(to: str) -> None:
        try:
            JobStore(store.path).move(j.id, to)
            results.append(to)
        except JobStateError:
            results.append("refused")

    threads = [threading.Thread(target=finish, args=(to,)) for to in ("done", "failed")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results.count("refused") == 1
    assert store.get(j.id).state in ("done", "failed")


def test_resolve_by_id_prefix_or_name_and_list_active(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    a = store.add(job("tiny-gpt", id="tiny-gpt-20261202-160000-aaaa"))
    b = store.add(
        Job(
            id="tiny-gpt-20261202-170000-bbbb",
            name="tiny-gpt",
            spec_path="/p",
            state="requested",
            created_at=datetime(2026, 12, 2, 17, tzinfo=UTC),
        )
    )
    store.add(job("other", id="other-20261202-160000-cccc"))
    assert store.resolve("tiny-gpt") == b  # a name: its newest job
    assert store.resolve("tiny-gpt-20261202-16") == a
    assert store.resolve(b.id) == b
    with pytest.raises(JobNotFound, match="several"):
        store.resolve("tiny-gpt-2026")
    with pytest.raises(JobNotFound, match="rigdeck cloud jobs"):
        store.resolve("nothing")
    store.move(a.id, "destroyed")
    assert [j.id for j in store.list(active_only=True)] == [b.id, "other-20261202-160000-cccc"]
    assert store.list()[0].id == b.id
