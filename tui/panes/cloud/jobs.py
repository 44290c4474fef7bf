"""The jobs list: every job, newest first, with its state, where it runs, how long and what $."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from textual.widgets import DataTable

from rigdeck.core.cloud.jobs.lifecycle import Job
from rigdeck.tui import words

JOB_COLUMNS = ("JOB", "STATE", "ON", "ELAPSED", "$", "EXIT")


def elapsed_s(job: Job, now: datetime) -> float | None:
    if job.started_at is None:
        return None
    end = job.ended_at or now
    return max(0.0, (end - job.started_at).total_seconds())


def job_cells(job: Job, usd: float, now: datetime) -> list[str]:
    took = elapsed_s(job, now)
    return [
        job.id,
        job.state if job.attempt <= 1 else f"{job.state} (try {job.attempt})",
        "here" if job.local else (str(job.target) if job.target is not None else "-"),
        "-" if took is None else words.duration(took),
        "-" if job.local else words.money(usd),
        "-" if job.exit_code is None else str(job.exit_code),
    ]


class JobsTable(DataTable[str]):
    DEFAULT_CSS = """
    JobsTable { height: auto; max-height: 8; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self.jobs: list[Job] = []

    def on_mount(self) -> None:
        for name in JOB_COLUMNS:
            self.add_column(name, key=name)

    def show(self, jobs: Sequence[Job], usd: Mapping[str, float], now: datetime) -> None:
        """Redraw, keeping the cursor on the same job."""
        keep = self.selected_job()
        self.jobs = list(jobs)
        self.clear()
        for job in self.jobs:
            self.add_row(*job_cells(job, usd.get(job.id, job.usd), now), key=job.id)
        if keep is not None:
            for n, job in enumerate(self.jobs):
                if job.id == keep.id:
                    self.move_cursor(row=n, animate=False)
                    break

    def selected_job(self) -> Job | None:
        if not self.jobs or self.cursor_row < 0 or self.cursor_row >= len(self.jobs):
            return None
        return self.jobs[self.cursor_row]
