"""The Provider protocol and its values: everything above this line is provider-neutral.

The UI, the ledger, the guard and the jobs see only these types. A provider adapter (today the
Vast.ai SDK in `vast.py`) turns its own payloads into them and its own failures into the errors
below, so a second provider is a second adapter and nothing else changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from rigdeck.core.errors import RigdeckError

InstanceState = Literal["created", "loading", "running", "stopped", "exited", "offline", "unknown"]
OfferSort = Literal["price", "tflops", "reliability", "bandwidth"]
OFFER_SORTS: tuple[OfferSort, ...] = ("price", "tflops", "reliability", "bandwidth")

GB = 1000**3  # providers sell disk in decimal GB


def new_label(prefix: str = "rigdeck") -> str:
    """A label no other create has used: how an unanswered create is found again."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class CloudError(RigdeckError):
    """A provider call failed in a way the user can act on (the message says how)."""


class MissingApiKey(CloudError):
    """No API key was found; the message says where to put one."""


class ProviderUnavailable(CloudError):
    """The provider did not answer (network, 5xx, rate limit that outlasted its waits)."""


class CreateUncertain(CloudError):
    """A create was sent but its answer never came: it may exist and bill.

    Never resolved by sending it again: the caller lists instances by ``label``.
    """

    def __init__(self, message: str, *, label: str) -> None:
        super().__init__(message)
        self.label = label


class InstanceGone(CloudError):
    """The instance no longer exists at the provider."""


@dataclass(frozen=True)
class Offer:
    """A machine for rent, as read at ``read_at`` (prices move: the time travels with them)."""

    id: int
    gpu_name: str
    num_gpus: int
    gpu_ram_bytes: int
    """VRAM of one GPU."""
    dph: float
    """On-demand $/hour for the machine while it runs (GPUs, CPU, RAM), storage excluded."""
    storage_usd_per_gb_month: float
    reliability: float
    inet_down_mbps: float
    inet_up_mbps: float
    tflops: float | None
    """Total FP32-equivalent TFLOPS the provider states for all its GPUs."""
    dlperf: float | None
    interruptible_min_bid: float | None
    """The current lowest $/hour bid that would win an interruptible rental."""
    cpu_ram_bytes: int
    cpu_cores: int
    disk_gb: float
    """Disk space available to a rental, in GB."""
    verified: bool
    rentable: bool
    location: str
    read_at: datetime
    machine_id: int | None = None
    cuda_version: float | None = None

    def storage_dph(self, disk_gb: float) -> float:
        """$/hour for ``disk_gb`` of storage, billed from creation whether running or not."""
        return self.storage_usd_per_gb_month * disk_gb / (30 * 24)


@dataclass(frozen=True)
class Instance:
    """A rented machine as the provider reads it now."""

    id: int
    label: str | None
    state: InstanceState
    gpu_name: str
    num_gpus: int
    gpu_ram_bytes: int
    dph: float
    """$/hour while running (what the provider charges for the machine, storage excluded)."""
    storage_dph: float
    """$/hour for its disk, charged from creation in every state until destroyed."""
    created_at: datetime | None
    disk_gb: float = 0.0
    image: str | None = None
    interruptible: bool = False
    bid: float | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    status_message: str | None = None
    gpu_util: float | None = None
    """Current GPU utilisation 0..1 where the provider reports it (the idle guard reads it)."""
    intended_state: str | None = None
    """What the user asked for (`running`/`stopped`); differs from ``state`` when outbid."""

    @property
    def billing_dph(self) -> float:
        """What this instance costs per hour in its current state."""
        running = self.state in ("running", "loading", "created")
        return (self.dph if running else 0.0) + self.storage_dph

    @property
    def outbid(self) -> bool:
        """An interruptible instance the provider stopped although the user wants it running."""
        return self.interruptible and self.state == "stopped" and self.intended_state == "running"


@dataclass(frozen=True)
class RentRequest:
    offer_id: int
    image: str
    disk_gb: float
    label: str
    """Unique per create: how an uncertain create is found again."""
    bid: float | None = None
    """None: on-demand; a price: an interruptible rental at that $/hour."""
    env: Mapping[str, str] = field(default_factory=dict)
    onstart: str | None = None
    ssh: bool = True


@dataclass(frozen=True)
class Credit:
    """The provider's own money figures for the account, where it exposes them."""

    balance_usd: float | None
    read_at: datetime


class Provider(Protocol):
    """What rigdeck needs from a GPU cloud. Every call blocks: run it in a worker."""

    name: str
    simulated: bool

    def search_offers(
        self,
        query: str = "",
        *,
        sort: OfferSort = "price",
        interruptible: bool = False,
        limit: int = 50,
    ) -> Sequence[Offer]: ...

    def rent(self, request: RentRequest) -> int:
        """Create the instance once (never retried); its id. `CreateUncertain` when unsure."""
        ...

    def instances(self) -> Sequence[Instance]:
        """Every instance of the account (all pages)."""
        ...

    def instance(self, instance_id: int) -> Instance | None:
        """None when the provider reads it as gone."""
        ...

    def stop(self, instance_id: int) -> None: ...

    def start(self, instance_id: int) -> None: ...

    def destroy(self, instance_id: int) -> None: ...

    def change_bid(self, instance_id: int, bid: float) -> None: ...

    def credit(self) -> Credit: ...

    def register_ssh_key(self, public_key: str) -> None: ...

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None: ...
