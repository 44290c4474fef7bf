"""Offer search for the Vast adapter: the query syntax through the SDK's own parser, and the
orders that `OfferSort` names (server-side, then again here so ties and units are ours)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rigdeck.core.cloud.provider import CloudError, Offer, OfferSort


class _FieldCheck:
    """The field set handed to the SDK's query parser: knows every name, records unknown ones.

    The parser prints a warning to stderr for a field it does not know; we report it as an
    error instead, so nothing reaches a terminal the TUI is drawing on.
    """

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.unknown: list[str] = []

    def __contains__(self, name: object) -> bool:
        if name not in self.known:
            self.unknown.append(str(name))
        return True


def parse_query(query: str, *, show_unverified: bool) -> dict[str, Any]:
    from vastai.api.query import offers_alias, offers_fields, offers_mult
    from vastai.api.query import parse_query as sdk_parse_query

    base: dict[str, Any] = {"external": {"eq": False}}
    if not show_unverified:
        base.update({"verified": {"eq": True}, "rentable": {"eq": True}})
    check = _FieldCheck(set(offers_fields) | {"reliability2"})
    try:
        parsed = sdk_parse_query(query.strip(), base, check, offers_alias, offers_mult)
    except ValueError as exc:
        raise CloudError(f"Offer query {query!r}: {' '.join(str(exc).split())}") from None
    if check.unknown:
        raise CloudError(
            f"Offer query {query!r}: unknown field {check.unknown[0]!r} "
            "(e.g. gpu_name, num_gpus, gpu_ram, reliability, dph, inet_down, cuda_vers)"
        )
    return dict(parsed or base)


ORDERS: dict[str, list[list[str]]] = {
    "price": [["dph_total", "asc"]],
    "tflops": [["flops_per_dphtotal", "desc"]],
    "reliability": [["reliability", "desc"]],
    "bandwidth": [["inet_down", "desc"]],
}


def _usd_per_tflops(offer: Offer) -> float:
    return offer.dph / offer.tflops if offer.tflops else float("inf")


SORT_KEYS: dict[str, Callable[[Offer], Any]] = {
    "price": lambda o: (o.dph, o.id),
    "tflops": lambda o: (_usd_per_tflops(o), o.id),
    "reliability": lambda o: (-o.reliability, o.dph, o.id),
    "bandwidth": lambda o: (-o.inet_down_mbps, o.dph, o.id),
}


def bid_sort_key(sort: OfferSort) -> Callable[[Offer], Any]:
    if sort != "price":
        return SORT_KEYS[sort]
    inf = float("inf")
    return lambda o: (o.interruptible_min_bid if o.interruptible_min_bid is not None else inf, o.id)


def server_order(sort: OfferSort, *, interruptible: bool) -> list[list[str]]:
    return [["min_bid", "asc"]] if interruptible and sort == "price" else ORDERS[sort]


def sort_key(sort: OfferSort, *, interruptible: bool) -> Callable[[Offer], Any]:
    return bid_sort_key(sort) if interruptible else SORT_KEYS[sort]
