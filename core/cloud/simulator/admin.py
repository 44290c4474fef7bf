"""``/_sim/...``: the simulator's admin API, so a separate process can steer a shared account.

    POST   /_sim/faults     {"kind": "http", "status": 429, "retry_after": 1, "count": 2}
    DELETE /_sim/faults
    GET    /_sim/faults
    POST   /_sim/advance    {"seconds": 3600}
    POST   /_sim/state      {"id": 9100000, "state": "exited", "msg": "..."}
    POST   /_sim/outbid     {"id": 9100000, "min_bid": 0.5}
    POST   /_sim/preempt    {"id": 9100000}
    POST   /_sim/ssh        {"id": 9100000, "host": "127.0.0.1", "port": 2222}
    POST   /_sim/gpu_util   {"id": 9100000, "util": 0.0}
    POST   /_sim/offers     {offer fields}
    GET    /_sim/instances  ground truth, destroyed ones included
    GET    /_sim/stats      {"create_count", "balance_usd", "now"}

The admin API needs no key and is never subject to injected faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rigdeck.core.cloud.simulator.account import ApiError

if TYPE_CHECKING:
    from rigdeck.core.cloud.simulator.simulator import Simulator


def dispatch(sim: Simulator, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    name = path.removeprefix("/_sim/").strip("/")
    try:
        return 200, _call(sim, method, name, body)
    except ApiError as exc:
        return exc.status, exc.body()
    except LookupError:
        return 404, {"success": False, "error": "not_found", "msg": f"No admin call {name!r}."}


def _call(sim: Simulator, method: str, name: str, body: dict[str, Any]) -> Any:
    if name == "faults":
        if method == "POST":
            sim.inject(**body)
        elif method == "DELETE":
            sim.clear_faults()
        return {"faults": sim.pending_faults()}
    if name == "stats" and method == "GET":
        return {"create_count": sim.create_count, "balance_usd": sim.balance(), "now": sim.now()}
    if name == "instances" and method == "GET":
        return {"instances": sim.instances(include_destroyed=True)}
    if method != "POST":
        raise LookupError(name)
    if name == "advance":
        return {"now": sim.advance(float(body["seconds"]))}
    if name == "offers":
        return {"offer": sim.add_offer(**body)}
    instance_id = int(body["id"])
    if name == "state":
        sim.set_state(instance_id, str(body["state"]), body.get("msg"))
    elif name == "outbid":
        min_bid = body.get("min_bid")
        sim.outbid(instance_id, None if min_bid is None else float(min_bid))
    elif name == "preempt":
        sim.preempt(instance_id)
    elif name == "ssh":
        sim.set_ssh(instance_id, str(body["host"]), int(body["port"]))
    elif name == "gpu_util":
        sim.set_gpu_util(instance_id, float(body["util"]))
    else:
        raise LookupError(name)
    return {"success": True}
