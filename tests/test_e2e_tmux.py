"""End to end: the installed `rigdeck` binary in a real terminal (tmux), driven by keys.

This is the only test that sees what a user sees: the console script entry point, argument
parsing, the real sampler, terminal size handling and a clean exit on `q`. Every wait polls the
screen until a condition holds, with a deadline, so a slow machine is slower, not flaky.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tmux import TmuxPane, isolated_env, tmux_available

pytestmark = pytest.mark.slow

RIGDECK = Path(sys.executable).parent / "rigdeck"

# The CPU meter once a reading has landed: "CPU  ████░░░░  37% 2.4GHz". Before the first reading
# the bar is empty and says N/A, so a percentage proves the sampler ran end to end.
CPU_READING = re.compile(r"CPU\s+[█░]+\s+\d+%")
# Generous: the first start pays for imports on a cold, busy CI machine.
START_TIMEOUT = 30.0
KEY_TIMEOUT = 10.0


def telemetry_shown(screen: str) -> bool:
    return "Telemetry" in screen and CPU_READING.search(screen) is not None


def models_shown(screen: str) -> bool:
    """The Models pane is up: the telemetry meters are gone and the pane's body talks about models.

    Looks below the tab row only (the tabs always say "Models"), and asks for no exact wording so
    the pane can grow from its placeholder into the real browser without breaking this test.
    """
    lines = screen.splitlines()
    tab_row = next((i for i, line in enumerate(lines) if "2 Models" in line), None)
    if tab_row is None or CPU_READING.search(screen):
        return False
    body = "\n".join(lines[tab_row + 1 :])
    return re.search(r"\bmodels?\b", body, re.IGNORECASE) is not None


@pytest.fixture
def user_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def launch(user_home: Path, tmp_path: Path) -> Iterator:
    if not tmux_available():
        pytest.skip("tmux is not installed (apt-get install tmux)")
    assert RIGDECK.exists(), f"{RIGDECK} missing: install the project (pip install -e .)"
    panes: list[TmuxPane] = []

    def start(*args: str, size: tuple[int, int]) -> TmuxPane:
        pane = TmuxPane([str(RIGDECK), *args], size=size, env=isolated_env(user_home), cwd=tmp_path)
        panes.append(pane)
        return pane.start()

    yield start
    for pane in panes:
        pane.close()


@pytest.mark.parametrize("size", [(100, 30), (80, 24)], ids=["100x30", "80x24"])
def test_keys_walk_through_panes_help_and_quit(launch, size: tuple[int, int]) -> None:
    pane: TmuxPane = launch(size=size)
    pane.wait_for(telemetry_shown, timeout=START_TIMEOUT, what="telemetry pane with a CPU reading")

    pane.send_keys("2")
    pane.wait_for(models_shown, timeout=KEY_TIMEOUT, what="Models pane")

    pane.send_keys("1")
    pane.wait_for(telemetry_shown, timeout=KEY_TIMEOUT, what="telemetry pane again")

    pane.send_keys("?")
    screen = pane.wait_for("telemetry.pause", timeout=KEY_TIMEOUT, what="help listing")
    assert "quit" in screen  # the listing shows ids, the names a keymap in the config uses

    pane.send_keys("Escape")
    pane.wait_for(
        lambda s: "telemetry.pause" not in s and telemetry_shown(s),
        timeout=KEY_TIMEOUT,
        what="help closed, telemetry back",
    )

    pane.send_keys("q")
    status = pane.wait_dead(timeout=KEY_TIMEOUT)
    assert status == 0, f"rigdeck exited with {status}; last screen:\n{pane.capture()}"


def test_malformed_config_warns_with_location_and_app_still_runs(launch, tmp_path: Path) -> None:
    # "= = 1" is a TOML syntax error at line 2, column 13 (where the second "=" stands).
    (tmp_path / "bad.toml").write_text("[telemetry]\nrefresh_s = = 1\n", encoding="utf-8")
    # A relative path: the warning names the file as the user typed it, short enough for one
    # line of the notification.
    pane: TmuxPane = launch("--config", "bad.toml", size=(100, 30))

    screen = pane.wait_for(
        lambda s: "bad.toml:2:13:" in s and telemetry_shown(s),
        timeout=START_TIMEOUT,
        what="config warning with file:line:col, and live telemetry",
    )
    assert "invalid TOML" in screen  # the reason, not only the place
    assert "Traceback" not in screen

    pane.send_keys("q")
    assert pane.wait_dead(timeout=KEY_TIMEOUT) == 0
