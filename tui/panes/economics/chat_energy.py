"""The energy of the chat pane's model runs, metered from the app's telemetry snapshots.

The app tells this meter when the chat pane's running label changes (a model loaded, served,
unloaded) and hands it every snapshot; each stretch between two changes is one run, recorded in
the energy log next to its run-history id. The chat pane itself needs no change for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rigdeck.core.config import EconomicsSettings
from rigdeck.core.economics.energy_log import EnergyLog, EnergyRecord
from rigdeck.core.economics.power import CpuPackagePower, EnergyMeter, RunEnergy, rest_watts
from rigdeck.core.telemetry.snapshot import Snapshot

NOTHING = "nothing"


@dataclass(frozen=True)
class FinishedRun:
    kind: str
    ref: int | None
    label: str
    energy: RunEnergy


def chat_run_id(chat: Any) -> int | None:
    """The run-history id of what the chat pane has loaded or serves now, if it has one."""
    state = getattr(chat, "state", None)
    served = getattr(state, "served", None)
    if served is not None and getattr(served, "run_id", None) is not None:
        return int(served.run_id)
    model = getattr(state, "model", None)
    run_id = getattr(model, "run_id", None)
    return int(run_id) if isinstance(run_id, int) else None


class ChatEnergy:
    def __init__(self, settings: EconomicsSettings, rapl: CpuPackagePower | None = None) -> None:
        self.settings = settings
        self._rapl = rapl or CpuPackagePower()
        self._meter: EnergyMeter | None = None
        self._label = NOTHING
        self._run_id: int | None = None

    @property
    def metering(self) -> bool:
        return self._meter is not None

    def running_changed(self, label: str, run_id: int | None) -> FinishedRun | None:
        """The run that just ended (if one was metered); a new label starts the next one."""
        finished = self.finish()
        if label != NOTHING:
            self._meter = EnergyMeter()
            self._label = label
            self._run_id = run_id
            self._rapl.watts()  # primes RAPL: the next reading measures from now
        return finished

    def add(self, snap: Snapshot) -> None:
        if self._meter is None:
            return
        self._meter.add(snap, rest_watts(self._rapl.watts(), self.settings))

    def finish(self) -> FinishedRun | None:
        meter, self._meter = self._meter, None
        if meter is None or len(meter.samples) < 2:
            return None
        kind = "serve" if " at http" in self._label else "chat"
        label = self._label.split(" at http", 1)[0]
        return FinishedRun(kind, self._run_id, label, meter.result(self.settings))


def record_run(run: FinishedRun, currency: str, log: EnergyLog | None = None) -> EnergyRecord:
    """Keep a finished chat or serve run's energy (SQLite: call it from a worker)."""
    return (log or EnergyLog()).record(run.kind, run.ref, run.label, run.energy, currency)
