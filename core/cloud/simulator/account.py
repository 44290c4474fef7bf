"""One simulated Vast account: offers, instances, their life cycle and billing, SSH keys, faults.

Everything is a function of stored facts and the simulated time ``now`` (epoch seconds), so an
account reloaded from disk by another process reads the same: an instance's phase and its
charges are brought up to ``now`` (`settle`) before every read or change.

Billing follows Vast: the machine's $/hour (the bid, for an interruptible rental) is charged by
the second while the instance is meant to run (``created``, ``loading``, ``running``); storage
($/GB/month for its disk) is charged from creation in every state until it is destroyed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rigdeck.core.cloud.simulator import query
from rigdeck.core.cloud.simulator.catalogue import (
    HOURS_PER_MONTH,
    Payload,
    build_catalogue,
    make_offer,
    price_offer,
)
from rigdeck.core.cloud.simulator.faults import Fault

SIM_STATES = ("created", "loading", "running", "stopped", "exited", "offline")
GPU_BILLED = frozenset({"created", "loading", "running"})
FIRST_INSTANCE_ID = 9_100_000
LOADING_MSG = "Pulling image: downloading layers"
OUTBID_MSG = "Instance stopped: outbid by a higher bid on this machine"
PREEMPT_MSG = "Instance stopped: preempted by the host"


class ApiError(Exception):
    """An answer the real API gives as an error status with a JSON body."""

    def __init__(self, status: int, error: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.error = error
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.error, "msg": self.msg}


@dataclass
class SimInstance:
    id: int
    offer: Payload
    label: str | None
    image: str | None
    disk_gb: float
    env: dict[str, str]
    onstart: str | None
    bid: float | None
    min_bid: float | None
    created_at: float
    state: str
    since: float
    intended: str = "running"
    hold: bool = False
    """A state a test set: it stays until a test or a start/stop changes it."""
    stuck: bool = False
    """Never ready: progresses to ``loading`` and stays there."""
    status_msg: str | None = None
    gpu_charge: float = 0.0
    billed_to: float = 0.0
    destroyed_at: float | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    gpu_util: float | None = None
    ssh_keys: list[str] = field(default_factory=list)

    @property
    def dph(self) -> float:
        return float(self.bid if self.bid is not None else self.offer["dph_base"])

    @property
    def storage_dph(self) -> float:
        return float(self.offer["storage_cost"]) * self.disk_gb / HOURS_PER_MONTH


@dataclass
class Account:
    seed: int = 0
    created_s: float = 1.0
    loading_s: float = 3.0
    credit_usd: float = 100.0
    clock_offset: float = 0.0
    create_count: int = 0
    next_instance_id: int = FIRST_INSTANCE_ID
    next_key_id: int = 1
    offers: list[Payload] = field(default_factory=list)
    instances: dict[int, SimInstance] = field(default_factory=dict)
    ssh_keys: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def fresh(cls, *, seed: int, created_s: float, loading_s: float, credit_usd: float) -> Account:
        return cls(
            seed=seed,
            created_s=created_s,
            loading_s=loading_s,
            credit_usd=credit_usd,
            offers=build_catalogue(seed),
            next_instance_id=FIRST_INSTANCE_ID + seed * 1000,
        )

    # -- time and money -------------------------------------------------------------------

    def settle(self, inst: SimInstance, now: float) -> None:
        """Bring `inst` up to `now`: phases that have run their time, GPU charges so far."""
        end = now if inst.destroyed_at is None else min(now, inst.destroyed_at)
        if end > inst.billed_to:
            if inst.state in GPU_BILLED:
                inst.gpu_charge += inst.dph * (end - inst.billed_to) / 3600.0
            inst.billed_to = end
        if inst.hold or inst.destroyed_at is not None:
            return
        if inst.state == "created" and end >= inst.since + self.created_s:
            inst.since += self.created_s
            inst.state = "loading"
            # A never-ready instance keeps the message its fault gave it.
            inst.status_msg = inst.status_msg if inst.stuck and inst.status_msg else LOADING_MSG
        if inst.state == "loading" and not inst.stuck and end >= inst.since + self.loading_s:
            inst.since += self.loading_s
            inst.state = "running"
            inst.status_msg = "success, running " + (inst.image or "")

    def charges(self, inst: SimInstance, now: float) -> float:
        """Dollars charged to `inst` from creation to `now` (or to its destruction)."""
        self.settle(inst, now)
        end = now if inst.destroyed_at is None else min(now, inst.destroyed_at)
        storage = inst.storage_dph * max(0.0, end - inst.created_at) / 3600.0
        return inst.gpu_charge + storage

    def balance(self, now: float) -> float:
        return self.credit_usd - sum(self.charges(i, now) for i in self.instances.values())

    def _change_state(self, inst: SimInstance, state: str, now: float, msg: str | None) -> None:
        self.settle(inst, now)
        inst.state = state
        inst.since = now
        inst.status_msg = msg

    # -- offers ---------------------------------------------------------------------------

    def search(self, q: Mapping[str, Any]) -> list[Payload]:
        storage = float(q.get("allocated_storage") or 5.0)
        wanted_type = str(q.get("type") or "on-demand")
        rows = [price_offer(o, allocated_storage=storage) for o in self.offers]
        if wanted_type == "bid":
            rows = [dict(r, is_bid=True) for r in rows if r.get("min_bid") is not None]
        else:
            rows = [dict(r, is_bid=False) for r in rows]
        rows = [r for r in rows if query.matches(r, q)]
        ordered = query.order_rows(rows, q.get("order") or [["score", "desc"]])
        limit = q.get("limit")
        result = [dict(r) for r in ordered]
        return result[: int(limit)] if limit else result

    def offer(self, offer_id: int) -> Payload | None:
        return next((o for o in self.offers if int(o["id"]) == offer_id), None)

    def add_offer(self, fields: Mapping[str, Any]) -> Payload:
        fields = dict(fields)
        if "id" not in fields:
            fields["id"] = max((int(o["id"]) for o in self.offers), default=20_000_000) + 1
        if self.offer(int(fields["id"])) is not None:
            raise ValueError(f"offer {fields['id']} exists already")
        offer = make_offer(**fields)
        self.offers.append(offer)
        return offer

    def update_offer(self, offer_id: int, fields: Mapping[str, Any]) -> Payload:
        offer = self.offer(offer_id)
        if offer is None:
            raise KeyError(offer_id)
        offer.update(fields)
        offer.update(price_offer(offer, allocated_storage=5.0))
        return offer

    # -- instances ------------------------------------------------------------------------

    def live(self, instance_id: int) -> SimInstance:
        inst = self.instances.get(instance_id)
        if inst is None or inst.destroyed_at is not None:
            raise ApiError(404, "no_such_instance", f"Instance {instance_id} not found.")
        return inst

    def live_instances(self) -> Iterator[SimInstance]:
        return (i for i in self.instances.values() if i.destroyed_at is None)

    def create(self, offer_id: int, body: Mapping[str, Any], now: float) -> SimInstance:
        offer = self.offer(offer_id)
        if offer is None or not offer.get("rentable", True) or offer.get("rented"):
            raise ApiError(404, "no_such_ask", f"Instance type by id {offer_id} is not available.")
        image = body.get("image")
        if not image and not body.get("template_hash_id"):
            raise ApiError(400, "invalid_args", "An image or a template is required.")
        disk = float(body.get("disk") or 10.0)
        if disk > float(offer["disk_space"]):
            raise ApiError(
                400,
                "insufficient_disk",
                f"Requested {disk:g} GB of disk but the machine offers {offer['disk_space']:g}.",
            )
        price = body.get("price")
        bid = float(price) if price is not None else None
        if bid is not None and offer.get("min_bid") is None:
            raise ApiError(400, "not_interruptible", "This machine does not take bids.")
        env = body.get("env") or {}
        inst = SimInstance(
            id=self.next_instance_id,
            offer=dict(offer),
            label=body.get("label"),
            image=image,
            disk_gb=disk,
            env={str(k): str(v) for k, v in dict(env).items()},
            onstart=body.get("onstart"),
            bid=bid,
            min_bid=float(offer["min_bid"]) if bid is not None else None,
            created_at=now,
            state="created",
            since=now,
            billed_to=now,
            ssh_keys=[k["ssh_key"] for k in self.ssh_keys],
        )
        self.next_instance_id += 1
        self.instances[inst.id] = inst
        if inst.bid is not None and inst.min_bid is not None and inst.bid < inst.min_bid:
            self._change_state(inst, "stopped", now, OUTBID_MSG)
        return inst

    def set_intended(self, inst: SimInstance, wanted: str, now: float) -> None:
        self.settle(inst, now)
        inst.intended = wanted
        inst.hold = False
        if wanted == "stopped":
            if inst.state != "stopped":
                self._change_state(inst, "stopped", now, "Instance stopped by the user")
            return
        if inst.bid is not None and inst.min_bid is not None and inst.bid < inst.min_bid:
            self._change_state(inst, "stopped", now, OUTBID_MSG)
        elif inst.state in ("stopped", "exited", "offline"):
            self._change_state(inst, "loading", now, LOADING_MSG)

    def destroy(self, inst: SimInstance, now: float) -> None:
        self.settle(inst, now)
        inst.destroyed_at = now
        inst.intended = "destroyed"

    def change_bid(self, inst: SimInstance, price: float, now: float) -> None:
        if inst.bid is None:
            raise ApiError(400, "not_interruptible", f"Instance {inst.id} is not a bid rental.")
        self.settle(inst, now)
        inst.bid = price
        if inst.min_bid is not None and price < inst.min_bid:
            if inst.state != "stopped":
                self._change_state(inst, "stopped", now, OUTBID_MSG)
        elif inst.intended == "running" and inst.state == "stopped":
            self._change_state(inst, "loading", now, LOADING_MSG)

    def outbid(self, inst: SimInstance, now: float, min_bid: float | None) -> None:
        self._interruptible(inst, "outbid")
        current = inst.min_bid if inst.min_bid is not None else inst.dph
        raised = min_bid if min_bid is not None else max(current, inst.dph) * 1.25
        inst.min_bid = round(raised, 4)
        self._change_state(inst, "stopped", now, OUTBID_MSG)
        inst.hold = False

    def preempt(self, inst: SimInstance, now: float) -> None:
        self._interruptible(inst, "preempted")
        self._change_state(inst, "stopped", now, PREEMPT_MSG)
        inst.hold = False

    @staticmethod
    def _interruptible(inst: SimInstance, what: str) -> None:
        if inst.bid is None:
            # On Vast only bids lose their machine; an on-demand host going away is offline.
            raise ValueError(
                f"instance {inst.id} is on-demand and cannot be {what}; "
                "use set_state(id, 'offline') for a host that went away"
            )

    def set_state(self, inst: SimInstance, state: str, now: float, msg: str | None) -> None:
        if state not in SIM_STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(SIM_STATES)}")
        self._change_state(inst, state, now, msg)
        inst.hold = True

    # -- ssh keys -------------------------------------------------------------------------

    def add_key(self, public_key: str, now: float) -> dict[str, Any]:
        key = public_key.strip()
        if not key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ApiError(400, "invalid_ssh_key", "That is not an OpenSSH public key.")
        for existing in self.ssh_keys:
            if existing["ssh_key"] == key:
                return existing
        entry = {"id": self.next_key_id, "ssh_key": key, "created_at": _iso(now)}
        self.next_key_id += 1
        self.ssh_keys.append(entry)
        return entry

    def attach_key(self, inst: SimInstance, public_key: str) -> None:
        key = public_key.strip()
        if not key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ApiError(400, "invalid_ssh_key", "That is not an OpenSSH public key.")
        if key not in inst.ssh_keys:
            inst.ssh_keys.append(key)

    # -- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["instances"] = [_instance_to_json(i) for i in self.instances.values()]
        data["faults"] = [f.to_json() for f in self.faults]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Account:
        plain = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        plain["instances"] = {
            int(i["id"]): _instance_from_json(i) for i in data.get("instances", [])
        }
        plain["faults"] = [Fault.from_json(f) for f in data.get("faults", [])]
        return cls(**plain)


_TIME_FIELDS = ("created_at", "since", "billed_to", "destroyed_at")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _instance_to_json(inst: SimInstance) -> dict[str, Any]:
    data = asdict(inst)
    for name in _TIME_FIELDS:
        if data[name] is not None:
            data[name] = _iso(data[name])
    return data


def _instance_from_json(data: Mapping[str, Any]) -> SimInstance:
    plain = {k: v for k, v in data.items() if k in SimInstance.__dataclass_fields__}
    for name in _TIME_FIELDS:
        if plain.get(name) is not None:
            plain[name] = _epoch(plain[name])
    return SimInstance(**plain)
