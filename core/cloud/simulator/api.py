"""The Vast REST endpoints the SDK (vastai 1.9.1) calls, answered from an `Account`.

Paths, methods, query parameters and bodies are those of `vastai/api/*.py`:

- ``POST /api/v0/bundles/`` and ``PUT /api/v0/search/asks/`` (``{"q": ...}``): offer search;
- ``PUT /api/v0/asks/{offer}/``: create, ``{"success": true, "new_contract": id}``;
- ``GET /api/v1/instances/?select_filters=&order_by=&limit=&after_token=``: one page of
  instances with ``next_token``; ``GET /api/v0/instances/{id}/?owner=me``: one instance
  (``{"instances": null}`` once it is gone);
- ``PUT /api/v0/instances/{id}/`` with ``{"state": "running"|"stopped"}`` or ``{"label": ...}``;
  ``DELETE /api/v0/instances/{id}/``; ``PUT /api/v0/instances/bid_price/{id}/``;
- ``GET|POST /api/v0/ssh/``, ``DELETE /api/v0/ssh/{key}/``, ``POST /api/v0/instances/{id}/ssh/``;
- ``GET /api/v0/users/current``: the account, its credit going down as instances bill.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rigdeck.core.cloud.simulator import payloads, query
from rigdeck.core.cloud.simulator.account import Account, ApiError

MAX_PAGE = 100


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    api_key: str


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Account, ApiRequest, float, "re.Match[str]"], Any]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    op: str
    handler: Handler


def _search(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    q = req.body if req.method == "POST" else (req.body or {}).get("q", {})
    if not isinstance(q, dict):
        raise ApiError(400, "invalid_args", "The search query must be a JSON object.")
    try:
        offers = account.search(q)
    except query.QueryError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None
    return {"offers": offers}


def _create(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    raise AssertionError("creates are answered by the server, which applies create faults")


def _list(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    filters = _json_arg(req.query, "select_filters", {})
    order = _json_arg(req.query, "order_by", [{"col": "id", "dir": "asc"}])
    limit = max(1, min(int(_json_arg(req.query, "limit", 25)), MAX_PAGE))
    rows = [payloads.instance_row(account, i, now) for i in account.live_instances()]
    label_counts: dict[str, int] = {}
    for row in rows:
        if row["label"]:
            label_counts[row["label"]] = label_counts.get(row["label"], 0) + 1
    if not isinstance(filters, dict):
        raise ApiError(400, "invalid_args", "select_filters must be a JSON object.")
    rows = [r for r in rows if query.matches(r, filters)]
    specs = [[o.get("col", "id"), o.get("dir", "asc")] for o in order if isinstance(o, dict)]
    # The id breaks ties, so the position an after_token names is unambiguous.
    ordered = query.order_rows(rows, [*specs, ["id", "asc"]])
    start = 0
    token = req.query.get("after_token")
    if token:
        after_id = _decode_token(token)
        ids = [r["id"] for r in ordered]
        if after_id in ids:
            start = ids.index(after_id) + 1
        elif all(spec[0] == "id" and spec[1] == "asc" for spec in specs):
            # The row was destroyed between two pages: by id, the next page still follows it.
            start = next((n for n, i in enumerate(ids) if i > after_id), len(ids))
        else:
            raise ApiError(400, "invalid_token", "after_token does not name a row of this list.")
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return {
        "instances": page,
        "next_token": _encode_token(page[-1]["id"]) if more and page else None,
        "total_instances": len(ordered),
        "label_counts": label_counts,
    }


def _show(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    inst = account.instances.get(int(m["id"]))
    if inst is None or inst.destroyed_at is not None:
        return {"instances": None}
    return {"instances": payloads.instance_row(account, inst, now)}


def _manage(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    inst = account.live(int(m["id"]))
    body = req.body or {}
    if "label" in body:
        inst.label = None if body["label"] is None else str(body["label"])
    if "state" in body:
        wanted = body["state"]
        if wanted not in ("running", "stopped"):
            raise ApiError(400, "invalid_args", "state must be running or stopped.")
        account.set_intended(inst, wanted, now)
    return {"success": True}


def _destroy(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    account.destroy(account.live(int(m["id"])), now)
    return {"success": True}


def _bid(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    inst = account.live(int(m["id"]))
    price = (req.body or {}).get("price")
    if price is None:
        raise ApiError(400, "invalid_args", "A price is required.")
    account.change_bid(inst, float(price), now)
    return {"success": True}


def _list_keys(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    return list(account.ssh_keys)


def _add_key(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    entry = account.add_key(str((req.body or {}).get("ssh_key") or ""), now)
    return {"success": True, **entry, "key": entry}


def _delete_key(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    key_id = int(m["key"])
    before = len(account.ssh_keys)
    account.ssh_keys = [k for k in account.ssh_keys if k["id"] != key_id]
    if len(account.ssh_keys) == before:
        raise ApiError(404, "no_such_key", f"SSH key {key_id} not found.")
    return {"success": True}


def _attach_key(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    inst = account.live(int(m["id"]))
    account.attach_key(inst, str((req.body or {}).get("ssh_key") or ""))
    return {"success": True, "msg": f"SSH key attached to instance {inst.id}."}


def _user(account: Account, req: ApiRequest, now: float, m: re.Match[str]) -> Any:
    return payloads.user_record(account, now, key_hint=req.api_key)


def _r(method: str, pattern: str, op: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), op, handler)


ROUTES: tuple[Route, ...] = (
    _r("POST", r"/api/v0/bundles/?", "search", _search),
    _r("PUT", r"/api/v0/search/asks/?", "search", _search),
    _r("PUT", r"/api/v0/asks/(?P<id>\d+)/?", "create", _create),
    _r("GET", r"/api/v1/instances/?", "list", _list),
    _r("PUT", r"/api/v0/instances/bid_price/(?P<id>\d+)/?", "bid", _bid),
    _r("POST", r"/api/v0/instances/(?P<id>\d+)/ssh/?", "ssh", _attach_key),
    _r("GET", r"/api/v0/instances/(?P<id>\d+)/?", "show", _show),
    _r("PUT", r"/api/v0/instances/(?P<id>\d+)/?", "manage", _manage),
    _r("DELETE", r"/api/v0/instances/(?P<id>\d+)/?", "destroy", _destroy),
    _r("GET", r"/api/v0/ssh/?", "ssh", _list_keys),
    _r("POST", r"/api/v0/ssh/?", "ssh", _add_key),
    _r("DELETE", r"/api/v0/ssh/(?P<key>\d+)/?", "ssh", _delete_key),
    _r("GET", r"/api/v0/users/current/?", "user", _user),
)


def find_route(method: str, path: str) -> tuple[Route, re.Match[str]] | None:
    for route in ROUTES:
        if route.method == method:
            match = route.pattern.fullmatch(path)
            if match is not None:
                return route, match
    return None


def _json_arg(args: Mapping[str, str], name: str, default: Any) -> Any:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _encode_token(instance_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after_id": instance_id}).encode()).decode()


def _decode_token(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["after_id"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(
            400, "invalid_token", "after_token is not a token this API issued."
        ) from None
