"""A separate process that rents through `actions.rent` and can be killed at a chosen point.

    python cloud_rent_child.py URL API_KEY LEDGER LABEL OFFER_ID MARKER

It uses the real `VastProvider` against the simulator at URL. After the provider's create has
answered, and before the ledger's outcome is written, it writes MARKER (the new instance id) and
waits: the test kills it there with SIGKILL, the worst moment for a crash.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.ledger import Caps, Ledger
from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.cloud.vast import VastProvider
from rigdeck.core.secrets import Secret


class PausingAfterCreate(VastProvider):
    """The real provider, pausing once its create has returned (where the test kills us)."""

    marker: Path

    def rent(self, request: RentRequest) -> int:
        instance_id = super().rent(request)
        self.marker.write_text(str(instance_id))
        time.sleep(120)
        return instance_id


def main() -> None:
    url, key, ledger_path, label, offer_id, marker = sys.argv[1:7]
    provider = PausingAfterCreate(Secret(key), api_url=url, simulated=True, timeout_s=5.0)
    provider.marker = Path(marker)
    sim_now = float(sys.argv[7]) if len(sys.argv) > 7 else None
    clock = (lambda: datetime.fromtimestamp(sim_now, UTC)) if sim_now else actions.utc_now
    actions.rent(
        provider,
        Ledger(Path(ledger_path)),
        RentRequest(int(offer_id), "rigdeck/test:1", 10.0, label=label),
        caps=Caps(max_usd=5.0),
        project="crash-test",
        clock=clock,
    )


if __name__ == "__main__":
    main()
