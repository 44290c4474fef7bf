"""`Simulator`: the project's own Vast API on 127.0.0.1, for tests and ``--simulate``.

    with Simulator() as sim:             # or: sim = Simulator(); url = sim.start()
        VastAI(api_key=SIMULATED_API_KEY, server_url=sim.url, retry=1).search_offers("num_gpus=1")
        sim.advance(3600)                # an hour of simulated time, no sleeping
        sim.charges(instance_id)         # $ so far

The clock is the wall clock plus an offset that `advance` moves (persisted with the account).
With ``state_path`` the account lives in a JSON file under a lock, so several processes, each
running its own server on its own port, share one account (see `store.FileStore`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rigdeck.core.cloud.simulator import api, faults
from rigdeck.core.cloud.simulator.account import Account, ApiError, SimInstance
from rigdeck.core.cloud.simulator.catalogue import Payload
from rigdeck.core.cloud.simulator.payloads import instance_row
from rigdeck.core.cloud.simulator.server import (
    Handler,
    Outcome,
    QuietServer,
    Served,
    error_response,
    fault_response,
)
from rigdeck.core.cloud.simulator.store import FileStore, MemoryStore, Store

Clock = Callable[[], float]


class Simulator:
    """A simulated Vast account served over HTTP; every method is safe from any thread."""

    def __init__(
        self,
        state_path: str | Path | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        *,
        created_s: float = 1.0,
        loading_s: float = 3.0,
        credit_usd: float = 100.0,
        api_key: str | None = None,
    ) -> None:
        """`created_s`/`loading_s`: how long a new instance spends in each phase before it
        runs. `api_key`: the only key accepted (None: any non-empty key). `clock`: epoch
        seconds, the wall clock by default. With `state_path`, an account already in the
        file keeps its own seed, phases and credit; these only shape a new one."""
        self._clock: Clock = clock or time.time
        self._api_key = api_key

        def factory() -> Account:
            return Account.fresh(
                seed=seed, created_s=created_s, loading_s=loading_s, credit_usd=credit_usd
            )

        self.state_path = Path(state_path) if state_path is not None else None
        self._store: Store = (
            FileStore(self.state_path, factory) if self.state_path else MemoryStore(factory)
        )
        self._server: QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._log: list[Served] = []
        self._log_lock = threading.Lock()

    # -- serving --------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free port of 127.0.0.1 in a daemon thread; the base URL for the SDK."""
        if self._server is None:
            server = QuietServer(("127.0.0.1", 0), Handler)
            server.simulator = self
            self._server = server
            self._stopping.clear()
            # A short poll lets stop() return at once instead of after half a second.
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="vast-simulator",
                daemon=True,
            )
            self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the account as ground truth ------------------------------------------------------

    @contextmanager
    def _account(self) -> Iterator[tuple[Account, float]]:
        with self._store.transaction() as account:
            yield account, self._clock() + account.clock_offset

    def now(self) -> float:
        """Simulated time, epoch seconds."""
        with self._account() as (_, now):
            return now

    def advance(self, seconds: float) -> float:
        """Move simulated time forward (phases progress, charges accrue); the new time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._account() as (account, now):
            account.clock_offset += seconds
            return now + seconds

    @property
    def create_count(self) -> int:
        """How many create requests arrived (served, refused, faulted or dropped): a client
        that never sends a create twice keeps this at one per rental."""
        with self._account() as (account, _):
            return account.create_count

    def instances(self, *, include_destroyed: bool = False) -> list[Payload]:
        """Every instance as the API would show it, plus ``charges_usd``, ``destroyed``,
        ``ssh_keys`` and ``bid`` (what tests assert against)."""
        with self._account() as (account, now):
            return [
                self._truth(account, inst, now)
                for inst in account.instances.values()
                if include_destroyed or inst.destroyed_at is None
            ]

    def instance(self, instance_id: int) -> Payload | None:
        with self._account() as (account, now):
            inst = account.instances.get(instance_id)
            return None if inst is None else self._truth(account, inst, now)

    @staticmethod
    def _truth(account: Account, inst: SimInstance, now: float) -> Payload:
        row = instance_row(account, inst, now)
        row.update(
            charges_usd=account.charges(inst, now),
            destroyed=inst.destroyed_at is not None,
            ssh_keys=list(inst.ssh_keys),
            bid=inst.bid,
            env=dict(inst.env),
        )
        return row

    def charges(self, instance_id: int) -> float:
        """Dollars charged to the instance so far (GPU time plus storage)."""
        with self._account() as (account, now):
            return account.charges(self._any(account, instance_id), now)

    def balance(self) -> float:
        with self._account() as (account, now):
            return account.balance(now)

    def offers(self) -> list[Payload]:
        with self._account() as (account, _):
            return [dict(o) for o in account.offers]

    def add_offer(self, **fields: Any) -> Payload:
        """Add an offer; unnamed fields take the defaults of `catalogue.make_offer`."""
        with self._account() as (account, _):
            return dict(account.add_offer(fields))

    def update_offer(self, offer_id: int, **fields: Any) -> Payload:
        """Change an offer (``rentable=False``, a new ``min_bid`` ...)."""
        with self._account() as (account, _):
            return dict(account.update_offer(offer_id, fields))

    @property
    def requests(self) -> list[Served]:
        with self._log_lock:
            return list(self._log)

    def record(self, served: Served) -> None:
        with self._log_lock:
            self._log.append(served)

    # -- changes a test makes -------------------------------------------------------------

    def set_state(self, instance_id: int, state: str, msg: str | None = None) -> None:
        """Put the instance in `state` (e.g. exited, offline) and keep it there."""
        with self._account() as (account, now):
            account.set_state(account.live(instance_id), state, now, msg)

    def outbid(self, instance_id: int, min_bid: float | None = None) -> None:
        """A higher bid took the machine: stopped, still intended running, min bid raised."""
        with self._account() as (account, now):
            account.outbid(account.live(instance_id), now, min_bid)

    def preempt(self, instance_id: int) -> None:
        """The host took the machine back: stopped, still intended running."""
        with self._account() as (account, now):
            account.preempt(account.live(instance_id), now)

    def set_ssh(self, instance_id: int, host: str, port: int) -> None:
        with self._account() as (account, _):
            inst = account.live(instance_id)
            inst.ssh_host, inst.ssh_port = host, int(port)

    def set_gpu_util(self, instance_id: int, util: float) -> None:
        """GPU utilisation 0..1 the instance reports while running (the API shows percent)."""
        if not 0.0 <= util <= 1.0:
            raise ValueError("utilisation is a fraction from 0 to 1")
        with self._account() as (account, _):
            account.live(instance_id).gpu_util = util

    def inject(self, kind: faults.FaultKind, **options: Any) -> None:
        """Add a fault (see `faults.Fault`): e.g. ``inject("http", status=429, retry_after=1)``."""
        fault = faults.Fault(kind=kind, **options)
        with self._account() as (account, _):
            account.faults.append(fault)

    def rate_limit(self, count: int = 1, *, retry_after: float = 1.0, op: str = "any") -> None:
        self.inject("http", count=count, status=429, retry_after=retry_after, op=op)

    def storm(
        self, count: int, *, status: int = 503, op: str = "any", served: bool = False
    ) -> None:
        """`count` answers of a 5xx status (502/503: an overloaded gateway). With `served`
        the requests are carried out first and only their answers are lost."""
        self.inject("http", count=count, status=status, op=op, served=served)

    def fail_destroy(self, count: int, *, status: int = 500) -> None:
        self.inject("http", count=count, status=status, op="destroy")

    def create_late(self, delay_s: float) -> None:
        """The next create happens but its answer arrives `delay_s` seconds late."""
        self.inject("create_late", delay_s=delay_s)

    def create_never(self) -> None:
        """The next create happens but its connection drops without an answer."""
        self.inject("create_never")

    def never_ready(self, count: int = 1, msg: str | None = None) -> None:
        """The next `count` creates stay loading for good."""
        self.inject("never_ready", count=count, msg=msg)

    def clear_faults(self) -> None:
        with self._account() as (account, _):
            account.faults.clear()

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._account() as (account, _):
            return [f.to_json() for f in account.faults]

    def wait(self, seconds: float) -> None:
        """Sleep that `stop` cuts short (a late answer must not hold the server open)."""
        self._stopping.wait(seconds)

    @staticmethod
    def _any(account: Account, instance_id: int) -> SimInstance:
        inst = account.instances.get(instance_id)
        if inst is None:
            raise KeyError(f"no instance {instance_id}")
        return inst

    # -- what the server calls ------------------------------------------------------------

    def serve(self, request: api.ApiRequest, found: tuple[api.Route, Any] | None) -> Outcome:
        """Answer one API request: faults first (as a gateway would), then auth, then the API."""
        with self._account() as (account, now):
            op = found[0].op if found else "unknown"
            if op == "create":
                account.create_count += 1  # every create that arrives, whatever its answer
            fault = faults.take(account.faults, op, ("http",))
            if fault is not None and not fault.served:
                return Outcome(fault_response(fault))
            if not request.api_key or (self._api_key and request.api_key != self._api_key):
                return Outcome(
                    api.ApiResponse(
                        401,
                        {"success": False, "error": "invalid_user", "msg": "Invalid API key."},
                    )
                )
            if found is None:
                return Outcome(
                    api.ApiResponse(
                        404, {"success": False, "error": "not_found", "msg": "No such endpoint."}
                    )
                )
            route, match = found
            try:
                if op == "create":
                    outcome = self._create(account, request, int(match["id"]), now)
                else:
                    outcome = Outcome(
                        api.ApiResponse(200, route.handler(account, request, now, match))
                    )
            except ApiError as exc:
                outcome = Outcome(error_response(exc))
            if fault is not None:  # served, and then the answer is lost behind a gateway error
                outcome.response = fault_response(fault)
            return outcome

    def _create(
        self, account: Account, request: api.ApiRequest, offer_id: int, now: float
    ) -> Outcome:
        body = request.body if isinstance(request.body, dict) else {}
        inst = account.create(offer_id, body, now)
        stuck = faults.take(account.faults, "create", ("never_ready",))
        if stuck is not None:
            inst.stuck = True
            inst.status_msg = stuck.msg or inst.status_msg
        answer = api.ApiResponse(200, {"success": True, "new_contract": inst.id})
        trouble = faults.take(account.faults, "create", ("create_late", "create_never"))
        if trouble is None:
            return Outcome(answer)
        if trouble.kind == "create_never":
            return Outcome(answer, drop=True)
        return Outcome(answer, delay_s=trouble.delay_s)

    def admin(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """``/_sim/...``: the same changes as the methods above, for another process."""
        from rigdeck.core.cloud.simulator.admin import dispatch

        return dispatch(self, method, path, body if isinstance(body, dict) else {})
