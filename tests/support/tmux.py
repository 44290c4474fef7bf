"""Drive a real terminal program through tmux: start it detached at a fixed size, send keys, read
the screen back as text, and wait on what the screen shows.

Each `TmuxPane` gets its own tmux server (its own socket and a generated config file, both in a
temp dir), so a test neither sees nor disturbs a user's tmux, and close() leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# status off: the pane gets every row of the requested size, with no tmux status line in captures.
# escape-time 0: tmux would otherwise hold a lone Escape for 500 ms, waiting for a sequence.
# remain-on-exit: the pane stays after its program ends, so its exit status can be read.
# default-terminal: a 256-colour terminfo every distribution ships, the same for every program.
TMUX_CONF = """\
set -g status off
set -s escape-time 0
set -g remain-on-exit on
set -g default-terminal tmux-256color
set -g history-limit 0
"""

Matcher = str | re.Pattern[str] | Callable[[str], bool]


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


def isolated_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `base` (default: ours) with every per-user location moved under `home`.

    Drops RIGDECK_* (a developer's own overrides would change what the program shows) and TMUX
    (a test started inside tmux must not talk to the developer's server).
    """
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("RIGDECK_", "TMUX", "XDG_", "HF_"))
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    return env


class TmuxPane:
    """One program in one detached tmux pane of ``size`` (columns, rows)."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        size: tuple[int, int],
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.size = size
        self.env = dict(env)
        self.cwd = cwd
        # The socket lives in our own short temp dir (a unix socket path must stay under ~100
        # bytes), so nothing is left in the shared tmux socket dir after close().
        self._conf_dir = Path(tempfile.mkdtemp(prefix="tmux-e2e-"))
        self.socket = str(self._conf_dir / "sock")
        self._conf = self._conf_dir / "tmux.conf"
        self._conf.write_text(TMUX_CONF, encoding="utf-8")
        self._status = self._conf_dir / "exit-status"
        self.target = "main"

    # -- plumbing ----------------------------------------------------------------------------
    def tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.socket, "-f", str(self._conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> TmuxPane:
        cols, rows = self.size
        # A small shell waits for the program and writes its exit status to a file: tmux's own
        # pane_dead_status is unreliable (tmux 3.3 sometimes never reaps a pane's program and
        # leaves the status empty). The program still owns the terminal: sh never reads it.
        self.tmux(
            "new-session",
            "-d",
            "-s",
            self.target,
            "-x",
            str(cols),
            "-y",
            str(rows),
            *(["-c", str(self.cwd)] if self.cwd else []),
            "/bin/sh",
            "-c",
            '"$@"; echo $? > "$0"',
            str(self._status),
            *self.command,
        )
        return self

    def close(self) -> None:
        self.tmux("kill-server", check=False)
        shutil.rmtree(self._conf_dir, ignore_errors=True)

    def __enter__(self) -> TmuxPane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading and typing ------------------------------------------------------------------
    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target)

    def send_keys(self, *keys: str) -> None:
        """tmux key names: "q", "?", "Escape", "Enter", "C-p"."""
        for key in keys:
            self.tmux("send-keys", "-t", self.target, key)

    def pane_dead(self) -> bool:
        return self.tmux("list-panes", "-t", self.target, "-F", "#{pane_dead}").strip() == "1"

    def exit_status(self) -> int | None:
        """The program's exit status, None while it runs."""
        try:
            return int(self._status.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None  # not written yet, or half written this very moment

    def wait_for(self, matcher: Matcher, *, timeout: float = 15.0, what: str = "") -> str:
        """Poll the screen until ``matcher`` holds and return that screen.

        A deadline, not a sleep: fast machines go on at once, slow ones get the whole budget,
        and a timeout reports the last screen and whether the program died.
        """
        test = _as_predicate(matcher)
        deadline = time.monotonic() + timeout
        screen = ""
        while True:
            screen = self.capture()
            if test(screen):
                return screen
            if time.monotonic() >= deadline:
                status = self.exit_status()
                state = "program still running" if status is None else f"program exited {status}"
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what or matcher!r} "
                    f"({state}); last screen:\n{screen}"
                )
            time.sleep(0.05)

    def wait_dead(self, *, timeout: float = 10.0) -> int:
        """Wait until the program has exited and its pane is dead; return its exit status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.exit_status()
            if status is not None and self.pane_dead():
                return status
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"program still running {timeout:.0f}s after it was asked to quit; "
                    f"last screen:\n{self.capture()}"
                )
            time.sleep(0.05)


def _as_predicate(matcher: Matcher) -> Callable[[str], bool]:
    if isinstance(matcher, str):
        return lambda screen: matcher in screen
    if isinstance(matcher, re.Pattern):
        return lambda screen: matcher.search(screen) is not None
    return matcher
