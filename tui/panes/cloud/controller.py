"""The cloud pane's calls into core, each one blocking: the pane runs every method in a thread
worker and draws what comes back. No Textual here.

Every provider action goes through core/cloud/actions.py, so the pane, the CLI and the guard
write the same ledger the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rigdeck.core.cloud import actions
from rigdeck.core.cloud.budgets import BudgetUse, reached_for
from rigdeck.core.cloud.ledger import Caps, Ledger, LedgerEvent, LedgerInstance, StateChange
from rigdeck.core.cloud.offer_fit import OfferFit, fit_offers, load_model
from rigdeck.core.cloud.provider import (
    CloudError,
    Offer,
    OfferSort,
    Provider,
    RentRequest,
    new_label,
)
from rigdeck.core.cloud.reconcile import ReconcileReport, reconcile
from rigdeck.core.cloud.spend import SpendSummary, summarize
from rigdeck.core.config import Settings
from rigdeck.core.models.launch import ModelInfo
from rigdeck.tui.cloud_context import CloudSession, open_session, start_guard

Clock = Callable[[], datetime]
AUDIT_EVENTS = 200
"""Newest ledger events the audit log keeps on screen."""
MIN_POLL_S = 2.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CloudOptions:
    """How the app wires the pane; tests put a provider on their own simulator here."""

    provider: Provider | None = None
    ledger_path: Path | None = None
    clock: Clock = utc_now
    poll_s: float | None = None
    """Seconds between instance polls (None: ``[cloud] poll_s``)."""
    start_guard: bool = True
    offer_limit: int = 50
    new_label: Callable[[], str] = new_label
    """Each create's unique label (tests fix it so a dialog reads the same every run)."""


@dataclass(frozen=True)
class OffersView:
    offers: tuple[Offer, ...]
    fits: dict[int, OfferFit]
    query: str
    sort: OfferSort
    interruptible: bool
    model_name: str | None


@dataclass(frozen=True)
class InstancesView:
    rows: tuple[LedgerInstance, ...]
    """Open instances, oldest first."""
    steps: dict[int, list[StateChange]]
    summary: SpendSummary
    events: tuple[LedgerEvent, ...]
    report: ReconcileReport | None
    at: datetime


@dataclass
class CloudController:
    settings: Settings
    simulate: bool
    options: CloudOptions = field(default_factory=CloudOptions)
    session: CloudSession | None = None
    model: ModelInfo | None = None
    model_name: str | None = None

    @property
    def poll_s(self) -> float:
        return max(MIN_POLL_S, self.options.poll_s or self.settings.cloud.poll_s)

    @property
    def simulated(self) -> bool:
        return self.session.simulated if self.session is not None else self.simulate

    def open(self) -> CloudSession:
        """The provider and ledger; `MissingApiKey` says how to add a key."""
        if self.session is None:
            session = open_session(
                self.settings, simulate=self.simulate, provider=self.options.provider
            )
            if self.options.ledger_path is not None:
                session = CloudSession(
                    session.provider, Ledger(self.options.ledger_path), session.simulated
                )
            self.session = session
        return self.session

    def _session(self) -> CloudSession:
        if self.session is None:
            raise CloudError("the cloud is not connected yet")
        return self.session

    # -- offers ---------------------------------------------------------------------------------
    def choose_model(self, spec: str) -> str | None:
        """Fit offers against this model from now on (empty: none); its name."""
        text = spec.strip()
        if not text:
            self.model, self.model_name = None, None
            return None
        self.model = load_model(text, self.settings.models.dirs)
        self.model_name = self.model.name or text
        return self.model_name

    def search(self, query: str, sort: OfferSort, interruptible: bool) -> OffersView:
        from rigdeck.core.models.launch import build_run_settings

        session = self._session()
        offers = tuple(
            session.provider.search_offers(
                query, sort=sort, interruptible=interruptible, limit=self.options.offer_limit
            )
        )
        fits: dict[int, OfferFit] = {}
        if self.model is not None:
            fits = fit_offers(
                self.model,
                offers,
                build_run_settings(self.settings.models),
                disk_gb=self.settings.cloud.disk_gb,
            )
        return OffersView(offers, fits, query, sort, interruptible, self.model_name)

    # -- instances ------------------------------------------------------------------------------
    def refresh(self, *, with_reconcile: bool) -> InstancesView:
        """The ledger's picture; with `with_reconcile`, set against the provider's list first."""
        session = self._session()
        report = None
        if with_reconcile:
            report = reconcile(session.provider, session.ledger, clock=self.options.clock)
        return self.read_ledger(report)

    def read_ledger(self, report: ReconcileReport | None = None) -> InstancesView:
        ledger = self._session().ledger
        now = self.options.clock()
        every = ledger.instances()
        steps = ledger.state_changes()
        return InstancesView(
            rows=tuple(r for r in every if r.open),
            steps=steps,
            summary=summarize(every, steps, now),
            events=tuple(ledger.events(limit=AUDIT_EVENTS)),
            report=report,
            at=now,
        )

    # -- actions --------------------------------------------------------------------------------
    def rent_plan(self, offer: Offer, interruptible: bool) -> tuple[RentRequest, Caps]:
        """What a rent of this offer would send: the config's image, disk and caps."""
        cloud = self.settings.cloud
        bid = None
        if interruptible and offer.interruptible_min_bid is not None:
            # A little over the current minimum, so the rental is not outbid at once.
            bid = round(offer.interruptible_min_bid * 1.1, 4)
        request = RentRequest(
            offer_id=offer.id,
            image=cloud.image,
            disk_gb=cloud.disk_gb,
            label=self.options.new_label(),
            bid=bid,
        )
        return request, Caps.from_settings(cloud)

    def over_budget(self, project: str = "") -> BudgetUse | None:
        """The first budget a rental tagged ``project`` would run over, as the ledger reads now
        (the same test as `rigdeck cloud rent`); None when it may go ahead."""
        ledger = self._session().ledger
        over = reached_for(ledger.instances(), ledger.state_changes(), self.settings.cloud,
                           self.options.clock(), project)  # fmt: skip
        return over[0] if over else None

    def rent(
        self, request: RentRequest, caps: Caps, project: str = ""
    ) -> BudgetUse | tuple[LedgerInstance, int | None]:
        """Create it (sent once) tagged ``project`` and start the detached guard; the row and the
        guard's pid. The budget that refuses it instead, when one is reached: read again here, as
        the spend may have grown (or the tag changed) while the dialog was open."""
        over = self.over_budget(project)
        if over is not None:
            return over
        session = self._session()
        row = actions.rent(session.provider, session.ledger, request, caps=caps,
                           project=project, clock=self.options.clock)  # fmt: skip
        guard = None
        if self.options.start_guard:
            guard = start_guard(session, self.settings.config_path)
        return row, guard

    def stop(self, instance_id: int) -> LedgerInstance:
        s = self._session()
        return actions.stop(s.provider, s.ledger, instance_id, clock=self.options.clock)

    def start(self, instance_id: int) -> LedgerInstance:
        s = self._session()
        return actions.start(s.provider, s.ledger, instance_id, clock=self.options.clock)

    def destroy(self, instance_id: int) -> LedgerInstance:
        s = self._session()
        return actions.destroy(s.provider, s.ledger, instance_id, clock=self.options.clock)

    def rebid(self, instance_id: int, bid: float) -> LedgerInstance:
        s = self._session()
        # A bid over the machine's current minimum resumes the instance by itself.
        return actions.change_bid(s.provider, s.ledger, instance_id, bid, clock=self.options.clock)
