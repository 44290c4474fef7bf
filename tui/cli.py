"""The `rigdeck` entry point: no subcommand starts the app; subcommands print rich text or JSON.

Every failure a user can cause ends as one red line on stderr and exit code 2 (1 where the
answer is a plain "no", such as a model that does not fit). Set RIGDECK_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rigdeck.core.errors import RigdeckError

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str) -> int:
    _console(stderr=True).print(f"[bold red]rigdeck: {message}[/]", markup=True)
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rigdeck",
        description="A keyboard-driven terminal workstation assistant for ML developers.",
    )
    parser.add_argument("--config", metavar="PATH", help="config file (default: user config dir)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--theme", help="theme name for this run")
    parser.add_argument("--refresh", type=float, metavar="S", help="telemetry refresh seconds")
    parser.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help="never signal processes (shared sessions)",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="cloud on the project's simulated Vast account (no key, no money)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    tel = sub.add_parser("telemetry", help="print a hardware snapshot (or a live line)")
    mode = tel.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="one snapshot as JSON")
    mode.add_argument("--watch", action="store_true", help="a compact live line per interval")
    tel.add_argument("--count", type=int, default=0, help="with --watch: stop after N lines")

    doc = sub.add_parser("doctor", help="what this machine gives rigdeck, and how to fix it")
    doc.add_argument("--json", action="store_true")

    shot = sub.add_parser("screenshot", help="save an SVG of the app (for docs and bug reports)")
    shot.add_argument("path", help="where to write the .svg")
    shot.add_argument("--size", default="120x36", help="COLSxROWS (default 120x36)")
    shot.add_argument("--pane", default="telemetry", help="which pane to show")

    from rigdeck.tui import cli_cloud, cli_cost, cli_fit, cli_run

    cli_fit.add_parsers(sub)
    cli_run.add_parsers(sub)
    cli_cloud.add_parsers(sub)
    cli_cost.add_parsers(sub)
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from rigdeck.core.config import load_settings

    overrides = {
        "ui.theme": args.theme,
        "telemetry.refresh_s": args.refresh,
        "telemetry.read_only": args.read_only,
    }
    return load_settings(args.config, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except RigdeckError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("RIGDECK_DEBUG"):
            raise
        return fail(f"internal error: {type(exc).__name__}: {exc} (RIGDECK_DEBUG=1 for details)")


def _dispatch(args: argparse.Namespace) -> int:
    if args.version:
        from importlib.metadata import version

        print(version("rigdeck"))
        return EXIT_OK
    settings = _settings(args)
    if args.command is None:
        from rigdeck.tui.app import RigdeckApp

        RigdeckApp(settings, simulate=args.simulate).run()
        return EXIT_OK
    if args.command != "screenshot":
        for warning in settings.warnings:
            _console(stderr=True).print(f"[yellow]rigdeck: {warning}[/]")
    from rigdeck.tui import cli_cloud, cli_cost, cli_fit, cli_run

    handler = {
        "telemetry": cmd_telemetry,
        "doctor": cmd_doctor,
        "screenshot": cmd_screenshot,
        **cli_fit.HANDLERS,
        **cli_run.HANDLERS,
        **cli_cloud.HANDLERS,
        **cli_cost.HANDLERS,
    }[args.command]
    return handler(args, settings)


# -- telemetry ---------------------------------------------------------------------------------
def snapshot_json(snapshot: Any) -> dict[str, Any]:
    data = asdict(snapshot)
    return data


def cmd_telemetry(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.telemetry.sampler import TelemetrySampler, default_watched_paths

    watched = default_watched_paths([*settings.models.dirs, *settings.telemetry.watch_dirs])
    sampler = TelemetrySampler(watched=watched)
    try:
        if args.json:
            sampler.sample()
            # A short second reading gives real CPU% and rates instead of first-sample blanks.
            time.sleep(0.25)
            print(json.dumps(snapshot_json(sampler.sample()), indent=2))
            return EXIT_OK
        if args.watch:
            n = 0
            sampler.sample()
            while args.count <= 0 or n < args.count:
                time.sleep(settings.telemetry.refresh_s)
                print(watch_line(sampler.sample()), flush=True)
                n += 1
            return EXIT_OK
        _print_snapshot(sampler.sample())
        return EXIT_OK
    finally:
        sampler.close()


def watch_line(snap: Any) -> str:
    from rigdeck.tui import words

    mem = snap.memory
    parts = [
        snap.taken_at[11:19],
        f"cpu {snap.cpu.percent:3.0f}%",
        f"ram {words.size_pair(mem.used, mem.total)}",
    ]
    for gpu in snap.gpus:
        util = "N/A" if gpu.util_percent is None else f"{gpu.util_percent:.0f}%"
        memory = words.size_pair(gpu.memory_used, gpu.memory_total)
        power = "" if gpu.power_w is None else f" {gpu.power_w:.0f}W"
        parts.append(f"gpu{gpu.index} {util} {memory}{power}")
    if not snap.gpus:
        parts.append("no GPU")
    parts.append(f"| {snap.diagnosis.headline}")
    return "  ".join(parts)


def _print_snapshot(snap: Any) -> None:
    from rigdeck.core.units import format_bytes

    console = _console()
    console.print(f"[bold]{snap.hostname}[/]  {snap.cpu.model}")
    console.print(watch_line(snap))
    for disk in snap.disks:
        console.print(
            f"disk {disk.mount} ({', '.join(disk.labels)}): "
            f"{format_bytes(disk.free)} free of {format_bytes(disk.total)}"
        )
    if not snap.gpus:
        console.print(f"GPU: {snap.gpu_status}")


# -- doctor ------------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.doctor import run_checks

    checks = run_checks(settings)
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=2))
        return EXIT_OK
    console = _console()
    marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "missing": "[red]✗[/]"}
    for check in checks:
        console.print(f"{marks.get(check.status, '?')} [bold]{check.name}[/]: {check.detail}")
        if check.fix:
            console.print(f"    [dim]fix: {check.fix}[/]")
    return EXIT_OK


# -- screenshot --------------------------------------------------------------------------------
def cmd_screenshot(args: argparse.Namespace, settings: Any) -> int:
    import asyncio
    from pathlib import Path

    from rigdeck.tui.app import RigdeckApp

    try:
        cols, rows = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise RigdeckError(f"--size {args.size!r}: expected COLSxROWS, e.g. 120x36") from None
    target = Path(args.path)

    async def shoot() -> None:
        app = RigdeckApp(settings)
        async with app.run_test(size=(cols, rows)) as pilot:
            app.action_show_pane(args.pane)
            # Two readings: the first primes CPU% and rates, the second is worth showing.
            for _ in range(2):
                await app.workers.wait_for_complete()
                await pilot.pause()
                app._sample()
            await app.workers.wait_for_complete()
            await pilot.pause()
            target.write_text(app.export_screenshot(title="rigdeck"), encoding="utf-8")

    asyncio.run(shoot())
    print(target)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
