"""Faults a test injects into the simulator: what goes wrong, on which calls, how many times."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultKind = Literal["http", "create_late", "create_never", "never_ready"]
FAULT_KINDS: tuple[FaultKind, ...] = ("http", "create_late", "create_never", "never_ready")

# The API calls a fault can target, named after what they do.
Op = Literal[
    "any",
    "search",
    "create",
    "list",
    "show",
    "manage",
    "destroy",
    "bid",
    "ssh",
    "user",
]
OPS: tuple[Op, ...] = (
    "any",
    "search",
    "create",
    "list",
    "show",
    "manage",
    "destroy",
    "bid",
    "ssh",
    "user",
)


@dataclass
class Fault:
    """One injected fault; `count` answers are affected, then it is spent.

    - ``http``: answer `status` (429 with ``Retry-After: retry_after``, 5xx) instead of serving;
      with `served`, serve the request first and then answer `status` (a gateway that lost the
      backend's answer: the create or destroy happened, the client cannot know).
    - ``create_late``: create the instance, then hold the answer `delay_s` seconds.
    - ``create_never``: create the instance, then drop the connection without an answer.
    - ``never_ready``: the next `count` creates stay ``loading`` for good (with `msg`).
    """

    kind: FaultKind
    count: int = 1
    op: Op = "any"
    status: int = 503
    retry_after: float | None = None
    delay_s: float = 5.0
    msg: str | None = None
    served: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; one of {', '.join(OPS)}")
        if self.count < 1:
            raise ValueError("a fault needs count >= 1")
        if self.kind == "http" and not 400 <= self.status <= 599:
            raise ValueError("an http fault answers a 4xx or 5xx status")
        if self.kind in ("create_late", "create_never", "never_ready"):
            self.op = "create"

    def applies_to(self, op: str) -> bool:
        return self.op in ("any", op)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def take(faults: list[Fault], op: str, kinds: tuple[FaultKind, ...]) -> Fault | None:
    """The first live fault of one of `kinds` for `op`, its count spent by one (removed at 0)."""
    for fault in faults:
        if fault.kind in kinds and fault.applies_to(op):
            fault.count -= 1
            if fault.count <= 0:
                faults.remove(fault)
            return fault
    return None
