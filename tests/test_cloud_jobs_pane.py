"""The cloud pane's jobs view, driven by keys: the jobs list, the selected job's live log with
its loss chart, follow, wrap, search, and "stream ended" when the job is done. The job is a
real --local job (the same runner script as on a rented machine)."""

from __future__ import annotations

from pathlib import Path

from support.cloud_app import cloud_app, cloud_ready, until
from support.cloud_jobs import FAST
from support.vast_sim import provider, sim  # noqa: F401
from textual.widgets import Static

from rigdeck.core.cloud.jobs.context import JobContext
from rigdeck.core.cloud.jobs.lifecycle import JobStore
from rigdeck.core.cloud.jobs.spec import load_spec
from rigdeck.core.cloud.jobs.up import up
from rigdeck.tui.panes.cloud.job_log import JobLogView
from rigdeck.tui.panes.cloud.jobs import JobsTable
from rigdeck.tui.panes.cloud.jobs_panel import JobsPanel
from rigdeck.tui.widgets.loss_chart import LossChart

SIZE = (120, 40)
STEPS = 40


def _local_job(tmp_path: Path) -> tuple[JobContext, str]:
    folder = tmp_path / "proj"
    folder.mkdir()
    command = (
        f'i=1; while [ $i -le {STEPS} ]; do echo \\"step $i loss 2.$((100 - i))\\"; '
        'i=$((i+1)); sleep 0.03; done; echo \\"needle in the log\\"'
    )
    (folder / "lines.toml").write_text(f'name = "lines"\n[run]\ncommand = "{command}"\n')
    ctx = JobContext(
        store=JobStore(tmp_path / "jobs.sqlite3"),
        local_jobs_root=tmp_path / "local-jobs",
        home_root=tmp_path / "home",
        timings=FAST,
    )
    job = up(ctx, load_spec(folder / "lines.toml"), local=True)
    return ctx, job.id


def status(view: JobLogView) -> str:
    return str(view.query_one("#job-log-status", Static).render())


async def test_jobs_view_follows_the_log_charts_it_and_says_when_it_ended(tmp_path, provider):  # noqa: F811
    ctx, job_id = _local_job(tmp_path)
    app = cloud_app(tmp_path, provider)
    app.job_context = ctx  # type: ignore[attr-defined]
    async with app.run_test(size=SIZE) as pilot:
        await cloud_ready(pilot)
        await pilot.press("j")
        panel = app.query_one(JobsPanel)
        view = panel.query_one(JobLogView)
        await until(pilot, lambda: panel.lists >= 1, what="jobs listed")
        table = panel.query_one(JobsTable)
        await until(pilot, lambda: table.has_focus, what="the jobs list focused")
        assert [j.id for j in table.jobs] == [job_id]
        assert str(table.get_cell(job_id, "STATE")) == "running"

        await until(pilot, lambda: view.stream_state == "ended", timeout=30, what="ended")
        assert "stream ended" in status(view) and "exit code 0" in status(view)
        numbered = [line for line in view.visible_lines() if line.startswith("step ")]
        assert numbered == [f"step {i} loss 2.{100 - i}" for i in range(1, STEPS + 1)]
        # The chart: one point per step, drawn in batches, not once per line.
        chart = view.query_one(LossChart)
        assert [s for s, _ in chart.points] == list(range(1, STEPS + 1))
        assert "step" in str(chart.render())
        assert view.flushes < STEPS and chart.draws < STEPS

        await pilot.press("f")
        assert not view.follow and "follow off" in status(view)
        await pilot.press("f", "w")
        assert view.follow and view.wrap and "wrap on" in status(view)

        await pilot.press("slash", *"needle", "enter")
        assert view.visible_lines() == ["needle in the log"]
        assert "search 'needle': 1 lines" in status(view)
        await pilot.press("escape")
        assert len(view.visible_lines()) > STEPS and "search" not in status(view)

        await until(pilot, lambda: str(table.get_cell(job_id, "EXIT")) == "0", what="exit")


async def test_the_log_view_says_reconnecting_instead_of_freezing(tmp_path, provider):  # noqa: F811
    ctx, _job_id = _local_job(tmp_path)
    app = cloud_app(tmp_path, provider)
    app.job_context = ctx  # type: ignore[attr-defined]
    async with app.run_test(size=SIZE) as pilot:
        await cloud_ready(pilot)
        await pilot.press("j")
        view = app.query_one(JobLogView)
        await until(pilot, lambda: view.stream_state in ("streaming", "ended"), what="stream")
        view.set_stream_state("reconnecting", "link to instance 7 dropped while reading")
        await pilot.pause()
        text = status(view)
        assert "reconnecting" in text and "link to instance 7 dropped" in text
        await pilot.press("j")  # back to the offers view
        assert not app.query_one("#cloud-pane").has_class("-jobs")
