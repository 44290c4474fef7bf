"""Helpers for the ledger, actions, reconcile and guard tests: a ledger, the simulator's clock,
offers to rent, and the check that the ledger and the provider agree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rigdeck.core.cloud.actions import Backoff
from rigdeck.core.cloud.ledger import Ledger
from rigdeck.core.cloud.provider import Offer, Provider, RentRequest, new_label
from rigdeck.core.cloud.simulator import Simulator

FAST = Backoff(attempts=5, first_s=0.05, factor=2.0, max_s=0.5)
"""Test-sized waits for label polling and destroy retries."""


def sim_clock(sim: Simulator) -> Callable[[], datetime]:
    """The simulator's time as the ledger's clock, so billing is judged on one timeline."""
    return lambda: datetime.fromtimestamp(sim.now(), UTC)


def make_ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "cloud" / "ledger.sqlite3")


def on_demand_offer(provider: Provider) -> Offer:
    return provider.search_offers("num_gpus=1", limit=5)[0]


def bid_offer(provider: Provider) -> Offer:
    offers = provider.search_offers("num_gpus=1", interruptible=True, limit=20)
    return next(o for o in offers if o.interruptible_min_bid is not None)


def request(offer: Offer, *, bid: float | None = None, label: str | None = None) -> RentRequest:
    return RentRequest(offer.id, "rigdeck/test:1", 10.0, label=label or new_label(), bid=bid)


def live_ids(sim: Simulator) -> set[int]:
    return {int(i["id"]) for i in sim.instances()}


def open_ids(ledger: Ledger) -> set[int]:
    return {i.id for i in ledger.instances(open_only=True)}


def assert_in_agreement(ledger: Ledger, sim: Simulator) -> None:
    """Every instance that bills is open in the ledger, and nothing open there is gone."""
    assert open_ids(ledger) == live_ids(sim)
    assert len({i.label for i in ledger.instances(open_only=True)}) == len(live_ids(sim))
