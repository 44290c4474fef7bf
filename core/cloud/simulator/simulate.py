"""``--simulate``: every process of a session serves the one simulated account on disk.

Each process (the TUI, ``rigdeck cloud --simulate rent``, a detached guard) starts its own
loopback server over the shared state file in ``data_dir()/simulator/``; the file lock makes
them one account. Nothing here can reach the real Vast API.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rigdeck.core.cloud.simulator.simulator import Simulator
from rigdeck.core.config import data_dir

SIMULATED_API_KEY = "simulated-vast-key-not-a-real-credential"
"""The key every simulate-mode client sends; the simulated account accepts only this one."""

_lock = threading.Lock()
_running: dict[Path, Simulator] = {}


def simulator_state_path() -> Path:
    return data_dir() / "simulator" / "account.json"


def start_simulated_api(state_path: Path | None = None) -> str:
    """The base URL of this process's server over the shared simulated account (started once)."""
    path = (state_path or simulator_state_path()).expanduser().resolve()
    with _lock:
        sim = _running.get(path)
        if sim is None:
            sim = Simulator(state_path=path, api_key=SIMULATED_API_KEY)
            sim.start()
            _running[path] = sim
        return sim.url


def stop_simulated_api() -> None:
    """Stop this process's simulate-mode servers (the account file stays)."""
    with _lock:
        for sim in _running.values():
            sim.stop()
        _running.clear()
