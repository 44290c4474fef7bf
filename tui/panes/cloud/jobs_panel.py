"""The cloud pane's jobs view: the jobs list above, the selected job's live log and loss chart
below. The list is read in a worker and read again only after the last read landed; the log is
streamed by a watch-only follower (it reads, it never rents, pulls or changes a job: the process
that started the job does that).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from rigdeck.core.cloud.jobs.context import JobContext
from rigdeck.core.cloud.jobs.follow import JobFollower, StreamState
from rigdeck.core.cloud.jobs.lifecycle import Job, JobStore
from rigdeck.core.cloud.jobs.logs import LogStream
from rigdeck.core.cloud.jobs.steps import job_usd
from rigdeck.core.cloud.ledger import Ledger
from rigdeck.core.errors import RigdeckError
from rigdeck.tui.cli_cloud_jobs import jobs_store_path
from rigdeck.tui.cloud_context import ledger_path
from rigdeck.tui.panes.cloud.job_log import JobLogView
from rigdeck.tui.panes.cloud.jobs import JobsTable

LIST_EVERY_S = 2.0


class JobsPanel(Vertical):
    DEFAULT_CSS = """
    JobsPanel { height: 1fr; }
    JobsPanel #jobs-hint { height: 1; color: $text-muted; padding: 0 1; }
    """

    BINDINGS = [
        Binding("f", "toggle_follow", "Follow", id="cloud.jobs.follow",
                tooltip="Keep the log scrolled to its newest line, or hold it where it is"),
        Binding("w", "toggle_wrap", "Wrap", id="cloud.jobs.wrap",
                tooltip="Wrap long log lines, or cut them at the edge"),
        Binding("slash", "search_log", "Search log", id="cloud.jobs.search",
                tooltip="Show only the log lines holding a text (escape shows all again)"),
    ]  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx: JobContext | None = None
        self.lists = 0
        """Job list reads drawn (tests wait on it)."""
        self.following: str | None = None
        self._follow_cancel: threading.Event | None = None
        self._list_busy = False

    def compose(self) -> ComposeResult:
        yield Static(
            "jobs: rigdeck cloud up SPEC.toml [--local] · f follow · w wrap · / search",
            id="jobs-hint",
        )
        yield JobsTable(id="jobs-table")
        yield JobLogView(id="jobs-log")

    def on_mount(self) -> None:
        self.ctx = self._make_context()
        self.refresh_jobs()

    def on_unmount(self) -> None:
        if self._follow_cancel is not None:
            self._follow_cancel.set()

    def _make_context(self) -> JobContext:
        app: Any = self.app
        given = getattr(app, "job_context", None)
        if isinstance(given, JobContext):
            return given
        simulate = bool(getattr(app, "simulate", False))
        settings = app.settings
        return JobContext(
            store=JobStore(jobs_store_path(simulate)),
            ledger=Ledger(ledger_path(simulate)),
            cloud=settings.cloud,
            ssh_user=settings.cloud.ssh_user,
        )

    def _follow_context(self) -> JobContext:
        """The context with the pane's provider, once the pane has connected."""
        assert self.ctx is not None
        ctx = replace(self.ctx, cancel=threading.Event(), on_event=None)
        controller = getattr(self.parent, "controller", None)
        session = getattr(controller, "session", None)
        if ctx.provider is None and session is not None:
            ctx = replace(ctx, provider=session.provider, ledger=session.ledger)
        return ctx

    # -- the list -------------------------------------------------------------------------------
    def refresh_jobs(self) -> None:
        if self._list_busy or self.ctx is None:
            return
        self._list_busy = True
        self._list_worker(self.ctx)

    @work(thread=True, exclusive=True, group="cloud-jobs-list", exit_on_error=False)
    def _list_worker(self, ctx: JobContext) -> None:
        try:
            jobs = ctx.store.list()
            usd = {j.id: (j.usd if j.ended else job_usd(ctx, j)) for j in jobs}
        except RigdeckError as exc:
            self.app.call_from_thread(self._list_failed, str(exc))
            return
        self.app.call_from_thread(self._show_jobs, jobs, usd)

    def _list_failed(self, message: str) -> None:
        self._list_busy = False
        self.query_one("#jobs-hint", Static).update(Content(f"jobs: {message}"))
        self.set_timer(LIST_EVERY_S, self.refresh_jobs)

    def _show_jobs(self, jobs: list[Job], usd: dict[str, float]) -> None:
        self._list_busy = False
        self.lists += 1
        table = self.query_one(JobsTable)
        table.show(jobs, usd, datetime.now(UTC))
        if self.following is None and jobs:
            self.follow_job(jobs[0])
        self.set_timer(LIST_EVERY_S, self.refresh_jobs)

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        job = self.query_one(JobsTable).selected_job()
        if job is not None and job.id != self.following:
            self.follow_job(job)

    # -- the log --------------------------------------------------------------------------------
    def follow_job(self, job: Job) -> None:
        if self._follow_cancel is not None:
            self._follow_cancel.set()
        ctx = self._follow_context()
        self._follow_cancel = ctx.cancel
        self.following = job.id
        self.query_one(JobLogView).start(job.id)
        self._follow_worker(ctx, job)

    @work(thread=True, exclusive=True, group="cloud-jobs-follow", exit_on_error=False)
    def _follow_worker(self, ctx: JobContext, job: Job) -> None:
        view = self.query_one(JobLogView)

        def state(value: StreamState | str, why: str) -> None:
            if not ctx.cancel.is_set():
                self.app.call_from_thread(view.set_stream_state, value, why)

        copy = ctx.job_home(job.id) / "job.log"
        try:
            if job.state == "destroyed" and not job.local:
                # The instance is gone; its log lives on in the copy made at finish.
                stream = LogStream()
                if copy.exists():
                    view.feed(stream.feed(copy.read_bytes()))
                    view.feed(stream.finish())
                state("ended", f"{job.state}; the log kept here" if copy.exists() else job.state)
                return
            state("streaming", "")
            JobFollower(ctx, job, on_lines=view.feed, on_state=state, watch_only=True).run()
        except RigdeckError as exc:
            state("ended", str(exc))

    # -- keys -----------------------------------------------------------------------------------
    def action_toggle_follow(self) -> None:
        self.query_one(JobLogView).toggle_follow()

    def action_toggle_wrap(self) -> None:
        self.query_one(JobLogView).toggle_wrap()

    def action_search_log(self) -> None:
        self.query_one(JobLogView).open_search()

    def focus_default(self) -> None:
        self.query_one(JobsTable).focus()
