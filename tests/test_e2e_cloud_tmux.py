"""End to end: `rigdeck --simulate` in a real terminal (tmux) rents a GPU and destroys it with
keys only, on the simulated account kept under a temporary home (never the user's dirs).

The detached budget guard that the rent starts runs in that home too; the test waits for it to
exit by itself once nothing is open, and ends it by its pid if it has not.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from support.tmux import TmuxPane, isolated_env, tmux_available

from rigdeck.core.cloud.ledger import Ledger

pytestmark = pytest.mark.slow

RIGDECK = Path(sys.executable).parent / "rigdeck"
START_TIMEOUT = 30.0
KEY_TIMEOUT = 15.0
OFFER_ROW = re.compile(r"^\s*2050\d{4}\s+\dx ", re.MULTILINE)
INSTANCE_ROW = re.compile(r"^\s*(91\d{5})\s+running\b", re.MULTILINE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("size", [(100, 30), (80, 24)], ids=["100x30", "80x24"])
def test_rent_and_destroy_with_keys_in_simulate_mode(tmp_path: Path, size) -> None:
    if not tmux_available():
        pytest.skip("tmux is not installed (apt-get install tmux)")
    assert RIGDECK.exists(), f"{RIGDECK} missing: install the project (pip install -e .)"
    home = tmp_path / "home"
    home.mkdir()
    env = isolated_env(home)
    config = tmp_path / "rigdeck.toml"
    config.write_text("[cloud]\npoll_s = 2\n", encoding="utf-8")  # the pane and guard poll fast
    pid_file = Path(env["XDG_STATE_HOME"]) / "rigdeck" / "cloud-guard.pid"
    pane = TmuxPane([str(RIGDECK), "--simulate", "--config", str(config)], size=size, env=env,
                    cwd=tmp_path)  # fmt: skip
    guard_pid = None
    try:
        pane.start()
        pane.wait_for("SIMULATED", timeout=START_TIMEOUT, what="the SIMULATED banner")
        pane.send_keys("4")
        pane.wait_for(OFFER_ROW, timeout=START_TIMEOUT, what="offer rows")

        pane.send_keys("r")
        screen = pane.wait_for(
            lambda s: "Rent offer" in s and "vastai create instance" in s,
            timeout=KEY_TIMEOUT,
            what="the rent dialog with its CLI line",
        )
        assert "/h while running" in screen and "Storage:" in screen
        pane.send_keys("Tab", "Enter")  # Cancel has the focus: Tab to Rent first
        screen = pane.wait_for(INSTANCE_ROW, timeout=KEY_TIMEOUT, what="the instance running")
        match = INSTANCE_ROW.search(screen)
        assert match is not None
        instance_id = int(match.group(1))
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            guard_pid = int(pid_file.read_text().strip())

        pane.send_keys("Tab")  # from the offers to the instances
        pane.send_keys("x")
        # The dialog's last line is the equivalent CLI command: wait for it, not just the title.
        pane.wait_for(
            f"vastai destroy instance {instance_id}", timeout=KEY_TIMEOUT, what="destroy dialog"
        )
        pane.send_keys("Tab", "Enter")
        pane.wait_for(
            # The "destroyed" notification can cover the end of the audit line: match its start.
            lambda s: "0 instances" in s and re.search(r"outcome\s+destroy \d+ ok", s) is not None,
            timeout=KEY_TIMEOUT,
            what="the instance gone and the audit log saying so",
        )
        assert "Traceback" not in pane.capture()

        pane.send_keys("q")
        assert pane.wait_dead(timeout=KEY_TIMEOUT) == 0
    finally:
        pane.close()
        if guard_pid is not None:
            deadline = time.monotonic() + 15
            while _alive(guard_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(guard_pid):
                os.kill(guard_pid, signal.SIGTERM)

    ledger = Ledger(Path(env["XDG_DATA_HOME"]) / "rigdeck" / "simulator" / "ledger.sqlite3")
    row = ledger.instance(instance_id)
    assert row is not None and row.state == "destroyed"
    assert guard_pid is not None, "the rent did not start the budget guard"
