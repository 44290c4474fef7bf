"""Instance rows and the user record in the shapes the Vast API sends them."""

from __future__ import annotations

from typing import Any

from rigdeck.core.cloud.simulator.account import GPU_BILLED, Account, SimInstance
from rigdeck.core.cloud.simulator.catalogue import Payload

# Vast reports these machine facts on the instance row, copied from the offer it was made from.
_FROM_OFFER = (
    "machine_id",
    "host_id",
    "num_gpus",
    "gpu_name",
    "gpu_ram",
    "gpu_totalram",
    "gpu_arch",
    "gpu_frac",
    "cuda_max_good",
    "driver_version",
    "compute_cap",
    "cpu_name",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ram",
    "cpu_arch",
    "disk_bw",
    "inet_up",
    "inet_down",
    "inet_up_cost",
    "inet_down_cost",
    "reliability2",
    "geolocation",
    "dlperf",
    "total_flops",
    "storage_cost",
    "verification",
    "public_ipaddr",
    "hosting_type",
    "pci_gen",
    "pcie_bw",
    "mobo_name",
    "direct_port_count",
)


def instance_row(account: Account, inst: SimInstance, now: float) -> Payload:
    """One instance as `show instance` and the v1 instance list return it."""
    account.settle(inst, now)
    offer = inst.offer
    row: dict[str, Any] = {k: offer.get(k) for k in _FROM_OFFER}
    row["gpu_totalram"] = offer.get("gpu_total_ram")
    running = inst.state == "running"
    storage_hour = inst.storage_dph
    row.update(
        {
            "id": inst.id,
            "actual_status": inst.state,
            "intended_status": inst.intended,
            "cur_state": _contract_state(inst.state),
            "next_state": _contract_state(inst.intended),
            "status_msg": inst.status_msg,
            "label": inst.label,
            "image_uuid": inst.image,
            "image_args": [],
            "image_runtype": "ssh",
            "extra_env": [[k, v] for k, v in inst.env.items()],
            "onstart": inst.onstart,
            "disk_space": inst.disk_gb,
            "disk_util": 0.0,
            "start_date": inst.created_at,
            "end_date": None,
            "uptime_mins": (now - inst.since) / 60.0 if running else None,
            "is_bid": inst.bid is not None,
            "min_bid": inst.min_bid,
            "bid_price": inst.bid,
            "dph_base": inst.dph,
            "storage_total_cost": round(storage_hour, 6),
            "dph_total": round(inst.dph + storage_hour, 6),
            "ssh_host": inst.ssh_host,
            "ssh_port": inst.ssh_port,
            "ssh_idx": None,
            "gpu_util": (inst.gpu_util * 100.0) if running and inst.gpu_util is not None else None,
            "gpu_temp": 55.0 if running else None,
            "cpu_util": None,
            "mem_usage": None,
            "mem_limit": None,
            "local_ipaddrs": "127.0.0.1",
            "ports": {},
            "jupyter_token": None,
            "template_id": None,
            "template_hash_id": None,
            "template_name": None,
        }
    )
    return row


def _contract_state(state: str) -> str:
    return "running" if state in GPU_BILLED or state == "running" else "stopped"


def user_record(account: Account, now: float, *, key_hint: str) -> Payload:
    """`/users/current`: the real record carries the api key; `key_hint` stands in for it."""
    balance = round(account.balance(now), 6)
    return {
        "id": 4242,
        "username": "simulated",
        "email": "simulated@example.invalid",
        "fullname": "Simulated Account",
        "credit": balance,
        "balance": balance,
        "balance_threshold": 0.0,
        "balance_threshold_enabled": False,
        "billed_expected": 0.0,
        "billed_verified": 0.0,
        "billing_creditonly": True,
        "can_pay": balance > 0,
        "has_billing": True,
        "email_verified": True,
        "got_signup_credit": False,
        "ssh_key": account.ssh_keys[-1]["ssh_key"] if account.ssh_keys else None,
        "api_key": key_hint,
    }
