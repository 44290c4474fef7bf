"""Vast payload rows -> the provider-neutral `Offer` and `Instance` (used by `vast.py` only).

Vast states RAM in MiB (it calls them MB; its query syntax multiplies GB by 1000), storage in
$/GB/month, times as epoch seconds and GPU utilisation in percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rigdeck.core.cloud.provider import Instance, InstanceState, Offer

MIB = 1 << 20
HOURS_PER_MONTH = 30 * 24

_STATES: dict[str, InstanceState] = {
    "created": "created",
    "scheduling": "created",
    "loading": "loading",
    "running": "running",
    "stopped": "stopped",
    "exited": "exited",
    "offline": "offline",
}


def offer_from_row(row: Mapping[str, Any], read_at: datetime) -> Offer:
    storage_cost = _float(row.get("storage_cost")) or 0.0
    return Offer(
        id=int(row["id"]),
        gpu_name=str(row.get("gpu_name") or "?"),
        num_gpus=int(row.get("num_gpus") or 0),
        gpu_ram_bytes=_mib(row.get("gpu_ram")),
        dph=_machine_dph(row),
        storage_usd_per_gb_month=storage_cost,
        reliability=_float(row.get("reliability2", row.get("reliability"))) or 0.0,
        inet_down_mbps=_float(row.get("inet_down")) or 0.0,
        inet_up_mbps=_float(row.get("inet_up")) or 0.0,
        tflops=_float(row.get("total_flops")),
        dlperf=_float(row.get("dlperf")),
        interruptible_min_bid=_float(row.get("min_bid")),
        cpu_ram_bytes=_mib(row.get("cpu_ram")),
        cpu_cores=int(_float(row.get("cpu_cores_effective", row.get("cpu_cores"))) or 0),
        disk_gb=_float(row.get("disk_space")) or 0.0,
        verified=_verified(row),
        rentable=bool(row.get("rentable", True)) and not bool(row.get("rented", False)),
        location=str(row.get("geolocation") or ""),
        read_at=read_at,
        machine_id=_int(row.get("machine_id")),
        cuda_version=_float(row.get("cuda_max_good")),
    )


def instance_from_row(row: Mapping[str, Any]) -> Instance:
    disk_gb = _float(row.get("disk_space")) or 0.0
    storage_cost = _float(row.get("storage_cost")) or 0.0
    interruptible = bool(row.get("is_bid"))
    dph = _machine_dph(row)
    bid = _float(row.get("bid_price")) if interruptible else None
    util = _float(row.get("gpu_util"))
    start = _float(row.get("start_date"))
    status = row.get("actual_status")
    return Instance(
        id=int(row["id"]),
        label=row.get("label") or None,
        state=_STATES.get(str(status).lower(), "unknown") if status else "created",
        gpu_name=str(row.get("gpu_name") or "?"),
        num_gpus=int(row.get("num_gpus") or 0),
        gpu_ram_bytes=_mib(row.get("gpu_ram")),
        dph=dph,
        storage_dph=storage_cost * disk_gb / HOURS_PER_MONTH,
        created_at=datetime.fromtimestamp(start, UTC) if start else None,
        disk_gb=disk_gb,
        image=row.get("image_uuid") or None,
        interruptible=interruptible,
        bid=bid if bid is not None else (dph if interruptible else None),
        ssh_host=row.get("ssh_host") or None,
        ssh_port=_int(row.get("ssh_port")),
        status_message=row.get("status_msg") or None,
        gpu_util=None if util is None else max(0.0, min(util / 100.0, 1.0)),
        intended_state=row.get("intended_status") or None,
    )


def _machine_dph(row: Mapping[str, Any]) -> float:
    """The machine's $/hour without storage: ``dph_base``, else ``dph_total`` less storage."""
    base = _float(row.get("dph_base"))
    if base is not None:
        return base
    total = _float(row.get("dph_total")) or 0.0
    return max(0.0, total - (_float(row.get("storage_total_cost")) or 0.0))


def _verified(row: Mapping[str, Any]) -> bool:
    if "verified" in row and row["verified"] is not None:
        return bool(row["verified"])
    return str(row.get("verification") or "").lower() == "verified"


def _mib(value: Any) -> int:
    number = _float(value)
    return round(number * MIB) if number is not None else 0


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)
