"""Which cloud a face talks to, and the ledger that goes with it: the real provider, or the
project's simulator (``--simulate``). Shared by the cloud pane and ``rigdeck cloud``.

The simulated account keeps its own ledger beside its state file, so a simulated instance never
lands in the ledger of the real account (where a reconcile would close it as gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rigdeck.core.cloud.guard_process import DEFAULT_FACTORY, spawn_guard
from rigdeck.core.cloud.ledger import Ledger, LedgerInstance, StateChange, default_ledger_path
from rigdeck.core.cloud.provider import Provider
from rigdeck.core.cloud.simulator import simulator_state_path
from rigdeck.core.cloud.spend import usd_between
from rigdeck.core.cloud.vast import provider_from_settings
from rigdeck.core.config import Settings

SIMULATED_FACTORY = "rigdeck.tui.cloud_context:simulated_provider"
"""The detached guard's provider in ``--simulate`` mode (``module:function(Settings)``)."""


def simulated_ledger_path() -> Path:
    return simulator_state_path().parent / "ledger.sqlite3"


def ledger_path(simulate: bool) -> Path:
    return simulated_ledger_path() if simulate else default_ledger_path()


def simulated_provider(settings: Settings) -> Provider:
    """The provider the guard builds in ``--simulate`` mode: this process's simulator server."""
    return provider_from_settings(settings, simulate=True)


@dataclass(frozen=True)
class CloudSession:
    provider: Provider
    ledger: Ledger
    simulated: bool


def open_session(
    settings: Settings, *, simulate: bool, provider: Provider | None = None
) -> CloudSession:
    """The provider and its ledger. Blocks (starts the simulator, opens SQLite): call it in a
    worker. Raises `MissingApiKey` (real mode, no key) with how to add one."""
    chosen = provider or provider_from_settings(settings, simulate=simulate)
    simulated = bool(getattr(chosen, "simulated", simulate))
    return CloudSession(chosen, Ledger(ledger_path(simulated)), simulated)


def start_guard(session: CloudSession, config_path: str | Path | None) -> int:
    """Start the detached budget guard unless one runs; its pid."""
    return spawn_guard(
        ledger_path=session.ledger.path,
        config_path=Path(config_path) if config_path else None,
        factory=SIMULATED_FACTORY if session.simulated else DEFAULT_FACTORY,
    )


def public_source(row: LedgerInstance) -> str:
    """``rigdeck`` for what rigdeck created or adopted, ``unaccounted`` for the rest."""
    return "unaccounted" if row.source == "unaccounted" else "rigdeck"


def usd_so_far(row: LedgerInstance, steps: dict[int, list[StateChange]], now: datetime) -> float:
    return usd_between(row, steps.get(row.id, []), end=now)
