"""The actions behind `rigdeck cloud up/jobs/logs/pull/sync/ssh/finish` (imported on first use).

Progress goes to stderr (nothing with --json), log lines and JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rigdeck.core.cloud import actions as cloud_actions
from rigdeck.core.cloud.artifacts import ArtifactFile
from rigdeck.core.cloud.budgets import reached_for
from rigdeck.core.cloud.jobs.context import JobContext, JobError, JobEvent
from rigdeck.core.cloud.jobs.finish import FinishResult, finish, pull
from rigdeck.core.cloud.jobs.follow import FollowOutcome, JobFollower, StreamState
from rigdeck.core.cloud.jobs.lifecycle import Job, JobStore
from rigdeck.core.cloud.jobs.logs import LogStream
from rigdeck.core.cloud.jobs.resume import continue_job
from rigdeck.core.cloud.jobs.runner import sync_job
from rigdeck.core.cloud.jobs.spec import JobSpec, load_spec
from rigdeck.core.cloud.jobs.steps import caps_for, choose_offer, job_usd, rent_request
from rigdeck.core.cloud.jobs.targets import close_target, job_paths, open_target
from rigdeck.core.cloud.jobs.up import up
from rigdeck.core.cloud.ledger import Ledger, iso
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.cloud.spend import summarize
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.config import Settings
from rigdeck.tui import cli_cloud_views as views
from rigdeck.tui import words
from rigdeck.tui.cli_cloud_jobs import jobs_store_path
from rigdeck.tui.cloud_context import CloudSession, ledger_path, open_session, start_guard

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


# -- plumbing -------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _say(text: str) -> None:
    _console(stderr=True).print(text, markup=False)


def _refuse(message: str) -> int:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold yellow]rigdeck: {escape(message)}[/]")
    return EXIT_NO


def _error(message: str) -> int:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]rigdeck: {escape(message)}[/]")
    return EXIT_ERROR


def _ask(lines: list[str], question: str) -> bool:
    for line in lines:
        _say(line)
    _console(stderr=True).print(f"{question} [y/N] ", end="", markup=False)
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in {"y", "yes"}


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2), flush=True)


def _simulated(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "cloud_simulate", False) or getattr(args, "simulate", False))


class _Progress:
    """Job events as short lines on stderr; sync progress at most once a second."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._last_progress = 0.0

    def __call__(self, event: JobEvent) -> None:
        if self.quiet:
            return
        if event.kind == "sync_progress":
            now = time.monotonic()
            if now - self._last_progress < 1.0 and event.data.get("percent") != 100:
                return
            self._last_progress = now
            done = int(event.data.get("bytes_done", 0))
            rate = float(event.data.get("rate_bytes_per_s", 0.0))
            _say(f"  sync {event.data.get('percent')}%  {words.size(done)}  {words.rate(rate)}")
        elif event.kind == "sync_plan":
            files, size = event.data["files"], int(event.data["bytes"])
            _say(f"sync: {files} files, {words.size(size)} to send")
        elif event.kind == "phase":
            _say(f"  ready: {event.message}")
        elif event.kind in ("state", "started", "rented", "checkpoint", "preempted"):
            _say(f"{event.kind if event.kind != 'state' else 'job'}: {event.message}")
        elif event.kind in ("reconnecting", "reconnected", "destroyed", "note", "artifacts"):
            _say(f"{event.kind.replace('_', ' ')}: {event.message}")


def _context(
    args: argparse.Namespace, settings: Settings, *, cloud: bool, quiet: bool = True
) -> tuple[JobContext, CloudSession | None]:
    simulate = _simulated(args)
    session = open_session(settings, simulate=simulate) if cloud else None
    ledger = session.ledger if session is not None else Ledger(ledger_path(simulate))
    ctx = JobContext(
        store=JobStore(jobs_store_path(simulate)),
        provider=session.provider if session is not None else None,
        ledger=ledger,
        cloud=settings.cloud,
        ssh_user=settings.cloud.ssh_user,
        on_event=_Progress(quiet),
    )
    return ctx, session


def _job(
    args: argparse.Namespace, settings: Settings, *, quiet: bool = True
) -> tuple[Job, JobContext]:
    """The job the user named, with a context that can reach its machine."""
    store = JobStore(jobs_store_path(_simulated(args)))
    job = store.resolve(args.job)
    ctx, _ = _context(args, settings, cloud=not job.local, quiet=quiet)
    return job, ctx


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    handler = {
        "up": _up,
        "jobs": _jobs,
        "logs": _logs,
        "pull": _pull,
        "sync": _sync,
        "ssh": _ssh,
        "finish": _finish,
        "resume": _resume,
    }[args.cloud_command]
    return handler(args, settings)


# -- JSON -------------------------------------------------------------------------------------
def job_json(job: Job, usd: float) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state,
        "instance": job.target,
        "exit_code": job.exit_code,
        "usd": round(usd, 6),
        "remote_dir": job.remote_dir,
        "started_at": iso(job.started_at) if job.started_at else None,
        "created_at": iso(job.created_at),
        "attempt": job.attempt,
        "error": job.error,
    }


def file_json(f: ArtifactFile) -> dict[str, Any]:
    return {"path": f.path, "bytes": f.bytes, "sha256": f.sha256, "verified": f.verified}


def up_json(job: Job) -> dict[str, Any]:
    return {"job": job.id, "instance": job.target, "state": job.state, "remote_dir": job.remote_dir}


def finish_json(result: FinishResult) -> dict[str, Any]:
    return {
        "job": result.job.id,
        "state": result.job.state,
        "exit_code": result.exit_code,
        "duration_s": None if result.duration_s is None else round(result.duration_s, 3),
        "usd": round(result.usd, 6),
        "action": result.action,
        "log": str(result.log_path),
        "files": [file_json(f) for f in result.files],
    }


# -- up ---------------------------------------------------------------------------------------
def _up(args: argparse.Namespace, settings: Settings) -> int:
    spec = load_spec(args.spec)  # a broken spec stops here: nothing rented
    quiet = bool(args.json)
    meter = None
    if args.local:
        ctx, _ = _context(args, settings, cloud=False, quiet=quiet)
        if args.follow:
            # A rehearsal followed to its end is metered like `rigdeck run`: its kWh and $ are
            # what `rigdeck cost job` reads for "here".
            from rigdeck.tui.cli_cost import start_meter

            meter = start_meter(settings)
        job = up(ctx, spec, local=True)
    else:
        if settings.telemetry.read_only:
            return _refuse("read-only mode: renting is disabled (--local runs the job here)")
        ctx, session = _context(args, settings, cloud=True, quiet=quiet)
        assert session is not None
        if session.simulated:
            return _refuse(
                "the simulated account has no machines to SSH into; run the job here with "
                "--local, or add a Vast API key"
            )
        offer = choose_offer(ctx, spec, offer_id=args.offer)
        refused = _confirm_rent(args, settings, ctx, session, spec, offer)
        if refused is not None:
            return refused
        job = up(ctx, spec, offer=offer)
        if not args.no_guard:
            start_guard(session, args.config)
    if args.follow:
        try:
            return _follow_then_finish(args, ctx, job)
        finally:
            if meter is not None:
                from rigdeck.tui.cli_cost import record_energy

                record_energy(meter, "job", job.id, spec.name, settings)
    if args.json:
        _print_json(up_json(job))
    else:
        where = "this machine" if job.local else f"instance {job.target}"
        _say(f"job {job.id} {job.state} on {where} in {job.remote_dir}")
        _say(f"follow it: rigdeck cloud logs {job.id} --follow")
    return EXIT_OK


def _confirm_rent(
    args: argparse.Namespace,
    settings: Settings,
    ctx: JobContext,
    session: CloudSession,
    spec: JobSpec,
    offer: Offer,
) -> int | None:
    cloud = settings.cloud
    ledger = session.ledger
    rows, steps, now = ledger.instances(), ledger.state_changes(), datetime.now(UTC)
    summary = summarize(rows, steps, now)
    over = reached_for(rows, steps, cloud, now, spec.project)
    if over:
        return _refuse(views.over_budget_words(over[0]))
    if args.yes:
        return None
    request = rent_request(ctx, spec, offer)
    caps = caps_for(ctx, spec)
    lines = views.rent_lines(
        offer,
        disk_gb=request.disk_gb,
        bid=request.bid,
        max_usd=caps.max_usd,
        max_hours=caps.max_hours,
        month_usd=summary.month_usd,
        monthly_budget=cloud.monthly_budget_usd,
        cli=cloud_actions.cli_rent(request),
        project=spec.project,
    )
    lines.append(
        f"Job: {spec.name}, then {spec.budget.on_finish} once its artifacts are verified here"
    )
    if not _ask(lines, "Rent it and start the job?"):
        return _refuse("not rented")
    return None


def _follow_then_finish(args: argparse.Namespace, ctx: JobContext, job: Job) -> int:
    outcome = _stream(ctx, job, 0)
    if not outcome.ended:
        return 130
    result = finish(ctx, outcome.job)
    if args.json:
        _print_json({**up_json(result.job), "finish": finish_json(result)})
    else:
        _say(_finish_line(result))
    if result.action == "kept_unverified":
        return _error(result.job.error or "artifacts did not verify; the instance is kept")
    return _exit_code(outcome)


# -- logs -------------------------------------------------------------------------------------
def _print_lines(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _stream_state(state: StreamState, why: str) -> None:
    labels = {"reconnecting": "reconnecting", "streaming": "streaming", "ended": "stream ended"}
    _say(f"[{labels[state]}] {why}")


def _stream(ctx: JobContext, job: Job, start: int) -> FollowOutcome:
    follower = JobFollower(ctx, job, start=start, on_lines=_print_lines, on_state=_stream_state)
    try:
        return follower.run()
    except KeyboardInterrupt:
        ctx.cancel.set()
        _say(f"stopped following; the job keeps running: rigdeck cloud logs {job.id} --follow")
        return FollowOutcome(follower.job, None, False)


def _exit_code(outcome: FollowOutcome) -> int:
    if outcome.exit_code is None:
        return 130 if not outcome.ended else EXIT_ERROR
    return max(0, min(outcome.exit_code, 255))


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    if args.from_byte < 0:
        return _error("--from must be 0 or more")
    job, ctx = _job(args, settings)
    if args.follow:
        if job.ended:
            _dump_log(ctx, job, args.from_byte)
            _stream_state("ended", f"job {job.id} is {job.state}")
            return max(0, min(job.exit_code, 255)) if job.exit_code is not None else EXIT_OK
        return _exit_code(_stream(ctx, job, args.from_byte))
    _dump_log(ctx, job, args.from_byte)
    return EXIT_OK


def _dump_log(ctx: JobContext, job: Job, start: int) -> None:
    """The log from ``start`` to its end now: the machine's, or the copy here once it is gone."""
    copy = ctx.job_home(job.id) / "job.log"
    stream = LogStream(start)
    if job.state == "destroyed" or (not job.local and copy.exists() and job.ended):
        with copy.open("rb") as fh:
            fh.seek(start)
            while data := fh.read(1 << 20):
                _print_lines(stream.feed(data))
        _print_lines(stream.finish())
        return
    target = open_target(ctx, job)
    try:
        paths = job_paths(job)
        while data := target.read_log(paths, stream.offset, 1 << 20):
            _print_lines(stream.feed(data))
        _print_lines(stream.finish())
    finally:
        close_target(target)


# -- pull, sync, ssh --------------------------------------------------------------------------
def _pull(args: argparse.Namespace, settings: Settings) -> int:
    job, ctx = _job(args, settings, quiet=bool(args.json))
    files = pull(ctx, job, to=Path(args.to).expanduser() if args.to else None)
    if args.json:
        _print_json({"files": [file_json(f) for f in files]})
    else:
        for f in files:
            mark = "ok" if f.verified else "MISMATCH"
            _console().print(f"{mark:<8} {words.size(f.bytes):>10}  {f.path}", markup=False)
        _say(f"{sum(f.verified for f in files)} of {len(files)} files verified by sha256")
    bad = [f.path for f in files if not f.verified]
    if bad:
        return _error(f"{len(bad)} file(s) do not match the instance's copy: {', '.join(bad[:3])}")
    return EXIT_OK


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    job, ctx = _job(args, settings, quiet=False)
    summary = sync_job(ctx, job)
    _say(f"synced {summary.files} files ({words.size(summary.bytes)}) to {job.remote_dir}")
    return EXIT_OK


def _ssh(args: argparse.Namespace, settings: Settings) -> int:
    job, ctx = _job(args, settings)
    if job.local:
        raise JobError(f"job {job.id} runs on this machine: cd {job.remote_dir}")
    target = open_target(ctx, job)
    assert isinstance(target, SshJobTarget)
    target.ssh.connect()  # first contact pins the host key that ssh then checks strictly
    target.close()
    command = list(args.remote_command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    # Land in the job's folder: a shell there (-t: a terminal, as plain ssh gives one), or the
    # command run there.
    cd = f"cd {shlex.quote(job.remote_dir)}"
    if command:
        argv = target.ssh.interactive_argv([f"{cd} && {shlex.join(command)}"])
    else:
        argv = target.ssh.interactive_argv([f'{cd} && exec "${{SHELL:-sh}}" -l'])
        argv.insert(1, "-t")
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return EXIT_ERROR  # pragma: no cover - execvp does not return


# -- resume ---------------------------------------------------------------------------------
def _resume(args: argparse.Namespace, settings: Settings) -> int:
    job, ctx = _job(args, settings, quiet=bool(args.json))
    job = continue_job(ctx, job)
    if args.follow and not job.ended and job.state != "collecting":
        return _follow_then_finish(args, ctx, job)
    if args.json:
        _print_json(up_json(job))
    else:
        _say(f"job {job.id}: {job.state}")
    return EXIT_OK


# -- finish -----------------------------------------------------------------------------------
def _finish_line(result: FinishResult) -> str:
    ok = sum(f.verified for f in result.files)
    what = {
        "destroyed": "instance destroyed",
        "stopped": "instance stopped (storage still bills)",
        "kept": "instance kept",
        "kept_unverified": "instance KEPT: not every artifact verified",
        "local": "ran here",
    }[result.action]
    took = "" if result.duration_s is None else f" in {words.duration(result.duration_s)}"
    return (
        f"job {result.job.id}: exit code {result.exit_code}{took}, {words.money(result.usd)}; "
        f"{ok} of {len(result.files)} artifacts verified; {what}; log {result.log_path}"
    )


def _finish(args: argparse.Namespace, settings: Settings) -> int:
    job, ctx = _job(args, settings, quiet=bool(args.json))
    spec = load_spec(job.spec_path)
    on_finish = "destroy" if args.destroy else spec.budget.on_finish
    if isinstance(job.target, int) and on_finish == "destroy" and not args.yes:
        if settings.telemetry.read_only:
            return _refuse("read-only mode: destroying is disabled")
        lines = [
            f"Finish job {job.id}: pull its artifacts, check each by sha256, then destroy "
            f"instance {job.target} (only if every file verified)",
            f"Spent so far: {words.money(job_usd(ctx, job))}",
            f"CLI: {cloud_actions.cli_line('destroy', job.target)}",
        ]
        if not _ask(lines, "Finish and destroy?"):
            return _refuse("not finished")
    result = finish(ctx, job, on_finish=on_finish)
    if args.json:
        _print_json(finish_json(result))
    else:
        _say(_finish_line(result))
    if result.action == "kept_unverified":
        return _error(result.job.error or "artifacts did not verify; the instance is kept")
    return EXIT_OK


# -- jobs -------------------------------------------------------------------------------------
def _jobs(args: argparse.Namespace, settings: Settings) -> int:
    ctx, _ = _context(args, settings, cloud=False)
    rows = ctx.store.list()
    priced = [(j, j.usd if j.ended else job_usd(ctx, j)) for j in rows]
    if args.json:
        _print_json({"jobs": [job_json(j, usd) for j, usd in priced]})
        return EXIT_OK
    if not rows:
        _console().print("no jobs; start one with `rigdeck cloud up SPEC.toml [--local]`")
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for header in ("JOB", "STATE", "ON", "EXIT", "$", "STARTED"):
        table.add_column(header)
    for job, usd in priced:
        table.add_row(
            job.id,
            job.state,
            "here" if job.local else str(job.target or "-"),
            "-" if job.exit_code is None else str(job.exit_code),
            "-" if job.local else words.money(usd),
            job.started_at.strftime("%Y-%m-%d %H:%M:%S") if job.started_at else "-",
        )
    _console().print(table)
    return EXIT_OK
