"""Idle CPU and time to first frame of rigdeck's telemetry pane, side by side with btop and glances.

    python bench/telemetry.py [--seconds 30] [--skip-others]

A report, not a test: it prints figures, the targets and PASS/FAIL, and always exits 0.

How it measures, and why:
- Every program runs in its own session of one private tmux server at 120x40, in a throwaway
  HOME, so no user config (rigdeck's, btop's) changes what is measured, and btop's habit of
  rewriting its config file on exit never touches the user's.
- Idle CPU: all programs run at the same time over the same window, so background load on a
  shared machine hits them alike. CPU is the user+system time of the program's whole process tree
  (reaped children included) divided by wall time, in % of one core, after a warm-up. The window
  is also cut into slices whose spread shows how noisy the machine was.
- Time to first frame: from just before the session is created until the screen (polled with
  capture-pane) first shows a CPU reading. Rounds are interleaved (rigdeck, btop, glances,
  rigdeck, ...) so a burst of background load does not land on one program only; best of 3.
  The figure includes creating a tmux window (a few ms), the same for every program.
  "First paint" (anything on screen) is printed next to it: the gap between the two is the time
  spent waiting for the first reading.
- Refresh: rigdeck at its default (1 s); btop at update_ms = 1000 (its config file: btop 1.2
  has no flag for it); glances with -t 1, in its default curses mode.
- Bytecode: rigdeck runs with a private, pre-warmed bytecode cache (PYTHONPYCACHEPREFIX), as an
  installed copy has; an editable checkout under PYTHONDONTWRITEBYTECODE would otherwise compile
  its own sources on every start, which no user pays.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.tmux import isolated_env

SIZE = (120, 40)
WARMUP_S = 5.0
SLICE_S = 5.0
ROUNDS = 3
FRAME_TIMEOUT_S = 20.0
# Polling capture-pane spawns a tmux client each time; 20 ms keeps the resolution well under the
# 0.7 s target without the poller eating a noticeable share of a 2-core machine.
POLL_S = 0.02

IDLE_MARGIN_PP = 1.0
FIRST_FRAME_TARGET_S = 0.7

TMUX_CONF = """\
set -g status off
set -s escape-time 0
set -g default-terminal tmux-256color
set -g history-limit 0
"""


@dataclass
class Tool:
    name: str
    argv: list[str]
    # The first meaningful frame: the CPU line with a figure, not the splash or an empty bar.
    frame: re.Pattern[str]
    note: str = ""
    # Extra variables for this program's session only (tmux new-session -e).
    env: dict[str, str] = field(default_factory=dict)
    # Run once, untimed, before any measurement (fills caches the program would have anyway).
    warm: list[str] | None = None


@dataclass
class Result:
    frames: list[float | None] = field(default_factory=list)
    paints: list[float | None] = field(default_factory=list)
    idle_pct: float | None = None
    slices: list[float] = field(default_factory=list)
    error: str = ""


def rigdeck_binary() -> str | None:
    beside = Path(sys.executable).parent / "rigdeck"
    return str(beside) if beside.exists() else shutil.which("rigdeck")


def script_interpreter(script: str) -> str:
    """The Python a console script runs under, from its #! line."""
    with open(script, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    return first[2:].strip().split()[0] if first.startswith("#!") else sys.executable


def tools(skip_others: bool, home: Path) -> tuple[list[Tool], list[str]]:
    found: list[Tool] = []
    missing: list[str] = []
    binary = rigdeck_binary()
    if binary is None:
        missing.append("rigdeck (install the project: pip install -e .)")
    else:
        # An empty PYTHONDONTWRITEBYTECODE turns it off (Python reads only non-empty values).
        pyc = {"PYTHONPYCACHEPREFIX": str(home / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
        # "CPU  ████░░░░  37% 2.4GHz": before the first reading the bar says N/A instead.
        found.append(
            Tool(
                "rigdeck",
                [binary],
                re.compile(r"CPU\s+[█░]+\s+\d+%"),
                "default refresh (1 s)",
                env=pyc,
                warm=[script_interpreter(binary), "-c", "import rigdeck.tui.cli, rigdeck.tui.app"],
            )
        )
    if skip_others:
        return found, missing
    if shutil.which("btop"):
        # "│CPU ■■■■■■■■■■  58%││" in the CPU box. btop's first frame already has this line
        # (at 0% until its second reading): a complete screen, as rigdeck's first reading is.
        found.append(Tool("btop", ["btop"], re.compile(r"\bCPU\b[^\n]*?\d+%"), "update_ms = 1000"))
    else:
        missing.append("btop (apt-get install -y btop)")
    if shutil.which("glances"):
        # "CPU  [ 98.1%]" in the quick-look block, or "CPU      98.1%" in the summary line.
        found.append(
            Tool(
                "glances",
                ["glances", "-t", "1", "--disable-check-update"],
                re.compile(r"\bCPU\s+\[?\s*\d+(\.\d+)?%"),
                "-t 1, curses",
            )
        )
    else:
        missing.append("glances (apt-get install -y glances)")
    return found, missing


class Tmux:
    """A private tmux server: one session per measured program."""

    def __init__(self, home: Path) -> None:
        self.home = home
        # The socket in our temp dir: nothing is left in the shared tmux socket dir afterwards.
        self.socket = str(home / "tmux.sock")
        self.conf = home / "tmux.conf"
        self.conf.write_text(TMUX_CONF, encoding="utf-8")
        self.env = bench_env(home)
        # A keep-alive session holds the server up between programs, so starting a program
        # never includes starting the tmux server.
        self.run(
            "new-session", "-d", "-s", "keepalive", "-x", str(SIZE[0]), "-y", str(SIZE[1]), "cat"
        )

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, "-f", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, session: str, tool: Tool) -> int:
        extra = [arg for k, v in tool.env.items() for arg in ("-e", f"{k}={v}")]
        # Several arguments make tmux exec the program without a shell: the pane pid is its pid.
        self.run(
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            str(SIZE[0]),
            "-y",
            str(SIZE[1]),
            "-c",
            str(self.home),
            *extra,
            *tool.argv,
        )
        return int(self.run("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0])

    def capture(self, session: str) -> str:
        return self.run("capture-pane", "-p", "-t", session, check=False)

    def stop(self, session: str, pid: int) -> None:
        procs = tree(pid)
        self.run("kill-session", "-t", session, check=False)
        # Wait for the whole tree to go, so its teardown does not bill the next measurement.
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass

    def close(self) -> None:
        self.run("kill-server", check=False)


def bench_env(home: Path) -> dict[str, str]:
    # The same isolation the tmux tests use, so the bench sees what a new user sees.
    env = isolated_env(home)
    env["COLORTERM"] = "truecolor"
    btop_conf = home / ".config" / "btop" / "btop.conf"
    btop_conf.parent.mkdir(parents=True, exist_ok=True)
    btop_conf.write_text("update_ms = 1000\n", encoding="utf-8")
    return env


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_s(pid: int) -> float:
    """User+system seconds of a process tree, counting children it already reaped.

    A live process's children_* cover only its reaped (dead) descendants, so summing them over
    the live tree never counts a second twice.
    """
    total = 0.0
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def first_frame(tmux: Tmux, tool: Tool, session: str) -> tuple[float | None, float | None]:
    """(first paint, first meaningful frame) in seconds from spawn; None: never seen."""
    t0 = time.monotonic()
    pid = tmux.start(session, tool)
    paint: float | None = None
    try:
        deadline = t0 + FRAME_TIMEOUT_S
        while time.monotonic() < deadline:
            screen = tmux.capture(session)
            now = time.monotonic() - t0
            if paint is None and screen.strip():
                paint = now
            if tool.frame.search(screen):
                return paint, now
            time.sleep(POLL_S)
        return paint, None
    finally:
        tmux.stop(session, pid)


def idle_cpu(tmux: Tmux, chosen: list[Tool], results: dict[str, Result], seconds: float) -> None:
    pids: dict[str, int] = {}
    for tool in chosen:
        pids[tool.name] = tmux.start(f"idle-{tool.name}", tool)
    try:
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        waiting = {t.name: t for t in chosen}
        while waiting and time.monotonic() < deadline:
            for name, tool in list(waiting.items()):
                if tool.frame.search(tmux.capture(f"idle-{name}")):
                    del waiting[name]
            time.sleep(0.1)
        for name in waiting:
            results[name].error = "never showed its CPU line"
        time.sleep(WARMUP_S)

        start_wall = time.monotonic()
        start = {n: tree_cpu_s(p) for n, p in pids.items()}
        last_wall, last = start_wall, dict(start)
        while (now := time.monotonic()) < start_wall + seconds:
            time.sleep(min(SLICE_S, start_wall + seconds - now))
            wall = time.monotonic()
            cpu = {n: tree_cpu_s(p) for n, p in pids.items()}
            for name in pids:
                results[name].slices.append(100 * (cpu[name] - last[name]) / (wall - last_wall))
            last_wall, last = wall, cpu
        for name in pids:
            results[name].idle_pct = 100 * (last[name] - start[name]) / (last_wall - start_wall)
    finally:
        for name, pid in pids.items():
            tmux.stop(f"idle-{name}", pid)


def report(chosen: list[Tool], results: dict[str, Result], seconds: float) -> None:
    print(
        f"\nIdle CPU on the telemetry view, {SIZE[0]}x{SIZE[1]}, {seconds:.0f} s after a "
        f"{WARMUP_S:.0f} s warm-up, all running at once (% of one core)"
    )
    print(
        f"  {'program':<9} {'mean':>7}   {'slices of ' + str(int(SLICE_S)) + ' s (min..max)':<26}"
        " refresh"
    )
    for tool in chosen:
        r = results[tool.name]
        if r.idle_pct is None:
            print(f"  {tool.name:<9} {'-':>7}   {r.error}")
            continue
        spread = f"{min(r.slices):.1f}..{max(r.slices):.1f}" if r.slices else "-"
        print(f"  {tool.name:<9} {r.idle_pct:6.2f}%   {spread:<26} {tool.note}")

    print(f"\nTime to first frame (spawn until the CPU line shows), best of {ROUNDS}")
    print(f"  {'program':<9} {'frame':>9}   {'first paint':>11}   runs (frame)")
    for tool in chosen:
        r = results[tool.name]
        seen = [f for f in r.frames if f is not None]
        painted = [f for f in r.paints if f is not None]
        runs = " ".join("timeout" if f is None else f"{f:.3f}" for f in r.frames)
        best = f"{min(seen):.3f} s" if seen else "never"
        paint = f"{min(painted):.3f} s" if painted else "never"
        print(f"  {tool.name:<9} {best:>9}   {paint:>11}   {runs}")

    print("\nTargets")
    mine = results.get("rigdeck", Result())
    btop = results.get("btop")
    if btop is None or btop.idle_pct is None or mine.idle_pct is None:
        print(f"  idle CPU <= btop + {IDLE_MARGIN_PP:.0f} pp: n/a (no btop figure to compare)")
    else:
        limit = btop.idle_pct + IDLE_MARGIN_PP
        verdict = "PASS" if mine.idle_pct <= limit else "FAIL"
        print(
            f"  idle CPU <= btop + {IDLE_MARGIN_PP:.0f} pp: rigdeck {mine.idle_pct:.2f}% vs "
            f"limit {limit:.2f}%  {verdict}"
        )
    seen = [f for f in mine.frames if f is not None]
    if seen:
        verdict = "PASS" if min(seen) < FIRST_FRAME_TARGET_S else "FAIL"
        print(f"  first frame < {FIRST_FRAME_TARGET_S} s: rigdeck {min(seen):.3f} s  {verdict}")
    else:
        print(f"  first frame < {FIRST_FRAME_TARGET_S} s: rigdeck never drew one  FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="length of the idle CPU window (default 30)"
    )
    parser.add_argument(
        "--skip-others", action="store_true", help="measure rigdeck alone (no btop, no glances)"
    )
    args = parser.parse_args(argv)

    if shutil.which("tmux") is None:
        print("tmux is not installed (apt-get install -y tmux): nothing measured")
        return 0
    home = Path(tempfile.mkdtemp(prefix="rigdeck-bench-"))
    try:
        return run_bench(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_bench(args: argparse.Namespace, home: Path) -> int:
    chosen, missing = tools(args.skip_others, home)
    for what in missing:
        print(f"missing: {what}; measuring without it")
    if not chosen:
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} logical cores, load average {load} at start; "
        f"programs: {', '.join(t.name for t in chosen)}"
    )

    results = {t.name: Result() for t in chosen}
    tmux = Tmux(home)
    try:
        for tool in chosen:
            if tool.warm:
                subprocess.run(
                    tool.warm,
                    env={**tmux.env, **tool.env},
                    cwd=home,
                    capture_output=True,
                    timeout=120,
                )
        for round_no in range(ROUNDS):
            for tool in chosen:
                paint, took = first_frame(tmux, tool, f"frame-{tool.name}-{round_no}")
                results[tool.name].paints.append(paint)
                results[tool.name].frames.append(took)
                shown = "timeout" if took is None else f"{took:.3f} s"
                print(f"  first frame, round {round_no + 1}: {tool.name:<8} {shown}", flush=True)
        print(f"  idle CPU: measuring for {args.seconds:.0f} s ...", flush=True)
        idle_cpu(tmux, chosen, results, args.seconds)
    finally:
        tmux.close()
    report(chosen, results, args.seconds)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load} at the end; spread in the slices shows the machine's noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
