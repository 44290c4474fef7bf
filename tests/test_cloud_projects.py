"""Project tags and per-project budgets: `rigdeck cloud rent --project`, a job spec's project,
``[cloud.projects.TAG]`` budgets in `rigdeck cost` and the guard, the job column a job finds its
instance by (a tag set or not), and a ledger from before that column."""

# ruff: noqa: F811  (pytest fixtures are imported by name and taken as arguments)
from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cloud_jobs import job_rig
from support.cloud_money import FAST, make_ledger, on_demand_offer, request, sim_clock
from support.vast_sim import TEST_API_KEY, make_provider, provider, sim  # noqa: F401

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.guard import guard_tick, seconds_to_next_cap
from rigdeck.core.cloud.jobs.finish import finish
from rigdeck.core.cloud.jobs.follow import follow
from rigdeck.core.cloud.jobs.resume import continue_job, rented_for
from rigdeck.core.cloud.jobs.spec import JobSpecError, load_spec
from rigdeck.core.cloud.jobs.steps import job_usd
from rigdeck.core.cloud.jobs.up import up
from rigdeck.core.cloud.ledger import Caps, Ledger, default_ledger_path, job_of
from rigdeck.core.cloud.ledger_schema import SCHEMA
from rigdeck.core.cloud.reconcile import reconcile
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.config import CloudSettings, ProjectBudget, documented_project_keys, load_settings
from rigdeck.tui.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "sample_configs" / "rigdeck.toml"
JOB_ID = "tiny-gpt-20260310-120000-ab12"


class PastClock:
    """A simulator clock standing still ``ago`` seconds before the test began."""

    def __init__(self, ago: float) -> None:
        self.at = time.time() - ago

    def __call__(self) -> float:
        return self.at


def cli(capsys, config: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    assert TEST_API_KEY not in out + err
    return code, out, err


def config_file(tmp_path: Path, sim: Simulator, text: str = "") -> Path:
    path = tmp_path / "rigdeck.toml"
    path.write_text(f'[cloud]\napi_url = "{sim.url}"\n{text}', encoding="utf-8")
    return path


# -- rigdeck cloud rent --project, rigdeck cost -------------------------------------------------
def test_a_rental_tagged_with_a_project_is_costed_under_it_with_its_budget_and_an_80_warning(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)
    # The rental starts after today's UTC midnight and is over before `cost` reads the ledger, so
    # today, this month and its whole life hold the same, fixed dollars.
    since_midnight = time.time() % 86400
    with Simulator(
        clock=PastClock(min(600.0, since_midnight / 2)), seed=0, api_key=TEST_API_KEY
    ) as s:
        config = config_file(tmp_path, s)
        offer = on_demand_offer(make_provider(s))
        code, out, err = cli(capsys, config, "cloud", "rent", str(offer.id), "--yes",
                             "--no-guard", "--project", "thesis", "--json")  # fmt: skip
        assert code == 0, err
        rented = json.loads(out)
        assert rented["project"] == "thesis"
        code, _, err = cli(capsys, config, "cloud", "down", str(rented["instance"]), "--yes")
        assert code == 0, err
    row = Ledger(default_ledger_path()).instance(rented["instance"])
    assert row is not None and row.project == "thesis" and row.job == "" and not row.open
    spent = row.usd
    assert spent > 0

    config.write_text(
        config.read_text(encoding="utf-8")
        + f"\n[cloud.projects.thesis]\ndaily_budget_usd = {spent / 0.85!r}\n"
        f"monthly_budget_usd = {spent * 10!r}\n\n[cloud.projects.idle-one]\n"
        "monthly_budget_usd = 7.0\n",
        encoding="utf-8",
    )
    code, out, err = cli(capsys, config, "cost", "--json")
    assert code == 0, err
    data = json.loads(out)
    mine = data["cloud"]["by_project"]["thesis"]
    assert mine["day_usd"]["value"] == pytest.approx(spent, rel=1e-6)
    assert mine["month_usd"]["value"] == pytest.approx(spent, rel=1e-6)
    assert mine["day_usd"]["source"] == "ledger"
    budget = data["budget"]["by_project"]["thesis"]
    assert budget["daily_usd"] == pytest.approx(spent / 0.85)
    assert budget["day_fraction"] == pytest.approx(0.85, rel=1e-4)
    assert budget["month_fraction"] == pytest.approx(0.1, rel=1e-4)
    # A project with a budget and nothing spent yet shows at 0%.
    assert data["budget"]["by_project"]["idle-one"]["month_fraction"] == 0.0
    assert [(a["scope"], a["period"], a["level"]) for a in data["budget"]["alerts"]] == [
        ("thesis", "day", "warn")
    ]
    code, out, _ = cli(capsys, config, "cost")
    assert code == 0
    assert "80% of budget: project thesis today" in out
    assert "project thesis: today" in out and "(85%)" in out
    assert "project idle-one: today $0.00, this month $0.00 (budget: this month" in out


def test_a_bad_project_tag_on_the_command_line_is_one_line_exit_2(
    capsys, tmp_path, sim, monkeypatch
):
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)
    code, out, err = cli(
        capsys, config_file(tmp_path, sim), "cloud", "rent", "1", "--yes", "--project", "my thesis"
    )
    assert code == 2 and out == ""
    assert "--project 'my thesis': not a project tag" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sim.create_count == 0


def test_a_rent_over_its_projects_budget_is_refused_while_other_rents_go_ahead(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)
    # Instances start a minute in the past: the first has spent its project's budget at once.
    with Simulator(clock=PastClock(60.0), seed=0, api_key=TEST_API_KEY) as s:
        offer = on_demand_offer(make_provider(s))
        config = config_file(tmp_path, s, "\n[cloud.projects.thesis]\ndaily_budget_usd = 1e-6\n")
        rent = ["cloud", "rent", str(offer.id), "--yes", "--no-guard", "--json"]
        assert cli(capsys, config, *rent, "--project", "thesis")[0] == 0
        code, _, err = cli(capsys, config, *rent, "--project", "thesis")
        assert code == 1
        assert "over budget: project thesis" in err and "[cloud.projects.thesis]" in err
        assert cli(capsys, config, *rent, "--project", "other")[0] == 0
        assert cli(capsys, config, *rent)[0] == 0  # untagged: the total's budgets only
        assert s.create_count == 3


# -- the guard ----------------------------------------------------------------------------------
def _rent(provider, ledger, sim, project: str):
    return actions.rent(
        provider, ledger, request(on_demand_offer(provider)), caps=Caps(), project=project,
        clock=sim_clock(sim), find=FAST,
    )  # fmt: skip


def _tick(provider, ledger, sim, settings):
    return [
        (a.rule, a.action, a.instance_id)
        for a in guard_tick(provider, ledger, settings, sim_clock(sim)())
    ]


@pytest.mark.parametrize("on_budget", ["warn", "stop"])
def test_the_guard_warns_at_80_then_alerts_and_stops_only_that_project_when_told(
    tmp_path, sim, provider, on_budget
):
    ledger = make_ledger(tmp_path)
    mine = _rent(provider, ledger, sim, "thesis")
    theirs = _rent(provider, ledger, sim, "other")
    sim.advance(3600)
    reconcile(provider, ledger, clock=sim_clock(sim))
    spent = ledger.instance(mine.id).usd
    settings = CloudSettings(
        on_cap="destroy",  # the total's rule; a project's budget never destroys
        projects={"thesis": ProjectBudget(monthly_budget_usd=spent / 0.85, on_budget=on_budget)},
    )
    assert _tick(provider, ledger, sim, settings) == [("project_monthly_budget", "warn", None)]
    warned = ledger.events(kinds=["guard"])[-1]
    assert warned.detail.startswith("project_monthly_budget: project thesis: $")
    assert "85% of budget" in warned.detail
    assert _tick(provider, ledger, sim, settings) == []  # once a month
    now = sim_clock(sim)()
    ahead = seconds_to_next_cap(ledger.instances(), ledger.state_changes(), settings, now)
    assert ahead is not None and 0 < ahead < 3600  # it wakes for the crossing

    sim.advance(0.3 * 3600)
    done = _tick(provider, ledger, sim, settings)
    if on_budget == "stop":
        assert done == [("project_monthly_budget", "stop", mine.id)]
        assert sim.instance(mine.id)["actual_status"] == "stopped"
    else:
        assert done == [("project_monthly_budget", "warn", None)]
        assert sim.instance(mine.id)["actual_status"] == "running"
        assert "budget $" in ledger.events(kinds=["guard"])[-1].detail
    assert sim.instance(theirs.id)["actual_status"] == "running"
    assert {r.id for r in ledger.instances(open_only=True)} == {mine.id, theirs.id}


# -- jobs: the tag from the spec, the instance found by the job column --------------------------
class Crash(BaseException):
    """rigdeck killed at this point (nothing after it runs, no handler sees it)."""


def test_a_job_tagged_with_a_project_is_found_again_after_a_crash_between_rent_and_store(
    tmp_path, monkeypatch
):
    with job_rig(tmp_path) as rig:
        spec = rig.spec('mkdir -p out && echo "step 1 loss 1.5" | tee out/log.txt', name="tagged")
        spec.path.write_text('project = "thesis"\n' + spec.path.read_text())
        spec = load_spec(spec.path)
        assert spec.project == "thesis"
        store_update = rig.store.update

        def crash_before_the_store_hears(job_id, **changes):
            if "target" in changes:
                raise Crash("rented, not yet in the jobs store")
            return store_update(job_id, **changes)

        monkeypatch.setattr(rig.store, "update", crash_before_the_store_hears)
        with pytest.raises(Crash):
            up(rig.ctx, spec)
        monkeypatch.setattr(rig.store, "update", store_update)
        (job,) = rig.store.list()
        assert job.state == "provisioning" and job.target is None
        (row,) = rig.ledger.instances()
        assert (row.project, row.job) == ("thesis", job.id)
        assert rented_for(rig.ctx, job) == row.id

        job = continue_job(rig.ctx, job)
        assert job.state == "running" and job.target == row.id
        result = finish(rig.ctx, follow(rig.ctx, job).job)
        assert result.job.exit_code == 0 and result.action == "destroyed"
        assert rig.sim.create_count == 1  # the instance rented before the crash was the one used
        assert job_usd(rig.ctx, result.job) > 0


def test_a_bad_project_tag_in_a_job_spec_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('name = "t"\nproject = "my thesis!"\n[run]\ncommand = "true"\n')
    with pytest.raises(JobSpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2:1: project: 'my thesis!' is not a project tag; ")
    path.write_text('name = "t"\n[run]\ncommand = "true"\n')
    assert load_spec(path).project == ""


# -- a ledger from before the job column -------------------------------------------------------
OLD_COLUMNS = (
    "id, label, source, state, created_at, gpu_name, num_gpus, dph, storage_dph, image, disk_gb, "
    "bid, interruptible, offer_id, closed_at, closed_reason, usd, max_usd, max_hours, "
    "idle_minutes, project, gpu_util, busy_at, seen_at, status_message, outbid"
)


def old_ledger(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = SCHEMA.replace(",\n    job TEXT NOT NULL DEFAULT ''", "")
    assert "job TEXT" not in old
    with sqlite3.connect(path) as conn:
        conn.executescript(old)
        for id_, project in ((1, JOB_ID), (2, ""), (3, "llm")):
            conn.execute(
                f"INSERT INTO instances ({OLD_COLUMNS}) VALUES (?, ?, 'rigdeck', 'running', "
                "'2026-03-10T12:00:00.000000+00:00', 'RTX 3090', 1, 0.2, 0.01, 'img', 10, NULL, "
                "0, 7, NULL, NULL, 0, 0, 0, 0, ?, NULL, NULL, NULL, NULL, 0)",
                (id_, f"rigdeck-{id_}", project),
            )


def test_an_old_ledger_gains_the_job_column_and_its_job_ids_move_there(tmp_path):
    path = tmp_path / "cloud" / "ledger.sqlite3"
    old_ledger(path)
    ledger = Ledger(path)
    rows = {r.id: r for r in ledger.instances()}
    assert (rows[1].job, rows[1].project) == (JOB_ID, "")  # the job code's rows
    assert (rows[2].job, rows[2].project) == ("", "")
    assert (rows[3].job, rows[3].project) == ("", "llm")  # not a job id: a tag, kept
    Ledger(path)  # opened again: nothing to migrate, nothing changes
    assert {r.id: (r.job, r.project) for r in Ledger(path).instances()} == {
        i: (r.job, r.project) for i, r in rows.items()
    }
    # A row an older rigdeck writes after the migration still names its job.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE instances SET job = '', project = ? WHERE id = 2", (JOB_ID + "x",))
        conn.execute("UPDATE instances SET job = '', project = ? WHERE id = 1", (JOB_ID,))
    rows = {r.id: r for r in ledger.instances()}
    assert job_of(rows[1]) == JOB_ID
    assert job_of(rows[2]) == "" and job_of(rows[3]) == ""


def test_an_old_rent_intent_adopted_later_keeps_its_job(tmp_path, sim, provider):
    ledger = make_ledger(tmp_path)
    offer = on_demand_offer(provider)
    req = request(offer)
    # What an older rigdeck wrote before a create whose answer it never recorded.
    ledger.intent(
        "rent", at=sim_clock(sim)(), label=req.label,
        data={"offer_id": offer.id, "image": req.image, "disk_gb": req.disk_gb,
              "project": JOB_ID, "pid": 1, "host": "elsewhere"},
    )  # fmt: skip
    made = provider.rent(req)
    reconcile(provider, ledger, clock=sim_clock(sim))
    row = ledger.instance(made)
    assert row is not None and (row.job, row.project) == (JOB_ID, "")


# -- the config ---------------------------------------------------------------------------------
def test_project_budgets_from_the_file_and_bad_ones_are_one_line(tmp_path):
    path = tmp_path / "rigdeck.toml"
    path.write_text(
        "[cloud]\ndaily_budget_usd = 20\n\n[cloud.projects.thesis]\ndaily_budget_usd = 5\n"
        'on_budget = "stop"\n\n[cloud.projects."vision-2"]\nmonthly_budget_usd = 60.5\n'
    )
    projects = load_settings(path, env={}).cloud.projects
    assert projects == {
        "thesis": ProjectBudget(daily_budget_usd=5.0, on_budget="stop"),
        "vision-2": ProjectBudget(monthly_budget_usd=60.5),
    }
    for text, where, words in (
        ("[cloud.projects.thesis]\n\nmonthly_budget_usd = 'lots'\n", ":3:1:",
         "cloud.projects.thesis.monthly_budget_usd: expected a number, got 'lots'"),
        ("[cloud.projects.thesis]\ndaily_budget_usd = -1\n", ":2:1:", "expected 0 (none) or more"),
        ("[cloud.projects.thesis]\non_budget = 'destroy'\n", ":2:1:",
         "on_budget: expected one of warn, stop, got 'destroy'"),
        ("[cloud.projects.thesis]\ndaily = 3\n", ":2:1:",
         "unknown key 'daily' in [cloud.projects.thesis]"),
        ('[cloud.projects."my thesis"]\ndaily_budget_usd = 3\n', ":1:1:",
         "'my thesis' is not a project tag"),
    ):  # fmt: skip
        path.write_text(text)
        settings = load_settings(path, env={})
        (warning,) = settings.warnings
        assert warning.startswith(f"{path}{where}") and words in warning, warning
        assert "\n" not in warning
        assert settings.cloud.projects == {}


def test_the_sample_config_shows_a_project_table_with_every_key():
    text = SAMPLE.read_text(encoding="utf-8")
    assert "# [cloud.projects.thesis]" in text
    for key, doc in documented_project_keys().items():
        assert doc, key
        assert f"\n# {key} = " in text, f"cloud.projects.TAG.{key} is not shown in the sample"
    assert load_settings(SAMPLE, env={}).cloud.projects == {}


def test_budget_uses_count_a_project_inside_the_total():
    from rigdeck.core.cloud.budgets import budget_uses, reached_for
    from rigdeck.core.cloud.ledger import LedgerInstance

    now = datetime(2026, 3, 10, 18, tzinfo=UTC)
    rows = [
        LedgerInstance(1, "a", "rigdeck", "running", datetime(2026, 3, 10, 12, tzinfo=UTC),
                       dph=1.0, project="thesis"),
        LedgerInstance(2, "b", "rigdeck", "running", datetime(2026, 3, 10, 12, tzinfo=UTC),
                       dph=1.0),
    ]  # fmt: skip
    cloud = CloudSettings(
        daily_budget_usd=100.0, projects={"thesis": ProjectBudget(daily_budget_usd=5.0)}
    )
    uses = budget_uses(rows, {}, cloud, now)
    assert [(u.project, u.period, u.spent_usd) for u in uses] == [
        (None, "day", pytest.approx(12.0)),
        ("thesis", "day", pytest.approx(6.0)),
    ]
    assert [u.project for u in reached_for(rows, {}, cloud, now, "thesis")] == ["thesis"]
    assert reached_for(rows, {}, cloud, now, "other") == []
    assert reached_for(rows, {}, cloud, now) == []
