"""The simulated market: a seeded, deterministic catalogue of offers shaped like Vast's `bundles`.

Field names, units and value ranges follow what the real API returns: ``gpu_ram`` and
``cpu_ram`` in MiB, ``storage_cost`` in $/GB/month, ``dph_base`` the machine's $/hour,
``dph_total`` that plus the storage of the allocated disk, ``min_bid`` the price an
interruptible rental must beat, ``total_flops`` the TFLOPS of all GPUs together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

Payload = dict[str, Any]

HOURS_PER_MONTH = 30 * 24


@dataclass(frozen=True)
class GpuModel:
    name: str
    ram_mib: int
    tflops: float
    """FP32 TFLOPS of one GPU."""
    dlperf: float
    """Vast's DLPerf score of one GPU."""
    usd_per_hour: tuple[float, float]
    """Range of one GPU's on-demand $/hour across hosts."""
    arch: str
    compute_cap: int
    cuda: tuple[float, ...]
    counts: tuple[int, ...]
    """Machine sizes (GPUs per offer) this model is usually sold in."""
    datacenter_share: float


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel(
        "RTX 3090", 24576, 35.6, 22.0, (0.13, 0.25), "nvidia", 860, (12.2, 12.4), (1, 2, 4), 0.1
    ),
    GpuModel(
        "RTX 4090",
        24564,
        82.6,
        38.0,
        (0.28, 0.45),
        "nvidia",
        890,
        (12.4, 12.6, 12.8),
        (1, 2, 4, 8),
        0.2,
    ),
    GpuModel("RTX 5090", 32607, 104.8, 52.0, (0.55, 0.85), "nvidia", 1200, (12.8,), (1, 2, 4), 0.2),
    GpuModel(
        "A100 PCIE", 40960, 19.5, 28.0, (0.60, 0.95), "nvidia", 800, (12.2, 12.4), (1, 2, 4), 0.6
    ),
    GpuModel(
        "A100 SXM4",
        81920,
        19.5,
        31.0,
        (0.90, 1.40),
        "nvidia",
        800,
        (12.2, 12.4, 12.6),
        (1, 2, 4, 8),
        0.8,
    ),
    GpuModel(
        "H100 SXM",
        81559,
        66.9,
        72.0,
        (1.80, 2.60),
        "nvidia",
        900,
        (12.4, 12.6, 12.8),
        (1, 2, 4, 8),
        0.9,
    ),
    GpuModel(
        "L40S", 46068, 91.6, 41.0, (0.55, 0.90), "nvidia", 890, (12.4, 12.6), (1, 2, 4, 8), 0.7
    ),
    GpuModel(
        "RTX A6000", 49140, 38.7, 25.0, (0.35, 0.55), "nvidia", 860, (12.2, 12.4), (1, 2, 4), 0.4
    ),
)

LOCATIONS = (
    "California, US",
    "Texas, US",
    "Virginia, US",
    "Quebec, CA",
    "Ontario, CA",
    "Bavaria, DE",
    "Hesse, DE",
    "Noord-Holland, NL",
    "Stockholm, SE",
    "Île-de-France, FR",
    "England, GB",
    "Tokyo, JP",
    "Gyeonggi-do, KR",
    "New South Wales, AU",
)

FIRST_OFFER_ID = 20_000_000
OFFERS_PER_MODEL = 9


def build_catalogue(seed: int = 0) -> list[Payload]:
    """The same list of offers for the same seed: machines of every model in `GPU_MODELS`.

    Roughly one offer in eight is unverified and one in ten unrentable, so the default search
    filters have something to hide; most, not all, accept interruptible bids.
    """
    rng = random.Random(seed)
    offers: list[Payload] = []
    next_id = FIRST_OFFER_ID + rng.randrange(0, 100_000) * 10
    for model in GPU_MODELS:
        for _ in range(OFFERS_PER_MODEL):
            offers.append(_machine_offer(rng, model, next_id))
            next_id += rng.randrange(1, 40)
    return offers


def _machine_offer(rng: random.Random, model: GpuModel, offer_id: int) -> Payload:
    num_gpus = rng.choice(model.counts)
    per_gpu = rng.uniform(*model.usd_per_hour)
    # Hosts discount bigger machines a little per GPU.
    dph_base = round(per_gpu * num_gpus * (1.0 - 0.02 * (num_gpus - 1)), 4)
    datacenter = rng.random() < model.datacenter_share
    reliability = round(rng.uniform(0.985, 0.9995) if datacenter else rng.uniform(0.90, 0.995), 4)
    verified = datacenter or rng.random() > 0.15
    cores = num_gpus * rng.choice((8, 12, 16, 24, 32))
    cpu_ram_mib = num_gpus * rng.choice((32, 64, 96, 128, 256)) * 1024
    inet_down = round(
        rng.choice((500.0, 1000.0, 2500.0, 5000.0, 10000.0)) * rng.uniform(0.3, 1.0), 1
    )
    interruptible = rng.random() > 0.2
    return make_offer(
        id=offer_id,
        gpu_name=model.name,
        num_gpus=num_gpus,
        gpu_ram=model.ram_mib,
        gpu_arch=model.arch,
        compute_cap=model.compute_cap,
        cuda_max_good=rng.choice(model.cuda),
        total_flops=round(model.tflops * num_gpus, 2),
        dlperf=round(model.dlperf * num_gpus * rng.uniform(0.85, 1.05), 3),
        dph_base=dph_base,
        min_bid=round(dph_base * rng.uniform(0.35, 0.6), 4) if interruptible else None,
        storage_cost=round(rng.choice((0.05, 0.1, 0.15, 0.2, 0.25, 0.3)), 3),
        disk_space=float(rng.choice((100, 250, 500, 1000, 2000, 4000))),
        cpu_cores=cores,
        cpu_ram=cpu_ram_mib,
        reliability=reliability,
        inet_down=inet_down,
        inet_up=round(inet_down * rng.uniform(0.2, 0.9), 1),
        geolocation=rng.choice(LOCATIONS),
        verified=verified,
        rentable=rng.random() > 0.1,
        hosting_type=1 if datacenter else 0,
        machine_id=rng.randrange(10_000, 60_000),
        host_id=rng.randrange(100_000, 400_000),
    )


def make_offer(**fields: Any) -> Payload:
    """A complete offer payload: `fields` over defaults (an RTX 4090 in a verified datacenter).

    Derived fields (`dph_total`, `score`, `flops_per_dphtotal`, ...) are computed here unless
    given, so a test can add an offer by naming only what it cares about.
    """
    offer: Payload = {
        "id": 1,
        "machine_id": 1,
        "host_id": 1,
        "num_gpus": 1,
        "gpu_name": "RTX 4090",
        "gpu_ram": 24564,
        "gpu_arch": "nvidia",
        "gpu_frac": 1.0,
        "gpu_display_active": False,
        "gpu_mem_bw": 900.0,
        "gpu_max_power": 450.0,
        "gpu_max_temp": 83.0,
        "gpu_lanes": 16,
        "compute_cap": 890,
        "cuda_max_good": 12.4,
        "driver_version": "560.35.03",
        "bw_nvlink": 0.0,
        "cpu_name": "AMD EPYC 7B13",
        "cpu_arch": "amd64",
        "cpu_cores": 16,
        "cpu_ghz": 3.0,
        "cpu_ram": 65536,
        "disk_space": 500.0,
        "disk_bw": 3000.0,
        "disk_name": "nvme",
        "inet_down": 1000.0,
        "inet_up": 800.0,
        "inet_down_cost": 0.0,
        "inet_up_cost": 0.0,
        "direct_port_count": 64,
        "pci_gen": 4.0,
        "pcie_bw": 24.5,
        "mobo_name": "H12SSL-i",
        "os_version": "22.04",
        "has_avx": 1,
        "dph_base": 0.35,
        "min_bid": 0.17,
        "dlperf": 38.0,
        "total_flops": 82.6,
        "storage_cost": 0.15,
        "credit_discount_max": 0.0,
        "rentable": True,
        "rented": False,
        "external": False,
        "hosting_type": 1,
        "hostname": None,
        "public_ipaddr": "192.0.2.10",
        "geolocation": "Texas, US",
        "geolocode": None,
        "reliability": 0.995,
        "reliability_mult": 1.0,
        "verified": True,
        "static_ip": True,
        "vms_enabled": False,
        "duration": 30 * 24 * 3600.0,
        "end_date": None,
    }
    offer.update(fields)
    cores = offer["cpu_cores"]
    offer.setdefault("cpu_cores_effective", float(cores))
    offer.setdefault("gpu_total_ram", offer["gpu_ram"] * offer["num_gpus"])
    offer.setdefault("reliability2", offer["reliability"])
    offer.setdefault("expected_reliability", offer["reliability"])
    offer.setdefault("verification", "verified" if offer["verified"] else "unverified")
    offer.setdefault("vericode", 1 if offer["verified"] else 0)
    offer.setdefault("ask_contract_id", offer["id"])
    offer.setdefault("bundle_id", offer["id"])
    return price_offer(offer, allocated_storage=5.0)


def price_offer(offer: Payload, *, allocated_storage: float) -> Payload:
    """The offer priced for `allocated_storage` GB, as the search endpoint answers it."""
    priced = dict(offer)
    storage_hour = priced["storage_cost"] * allocated_storage / HOURS_PER_MONTH
    dph_total = priced["dph_base"] + storage_hour
    priced["storage_total_cost"] = round(storage_hour, 6)
    priced["dph_total"] = round(dph_total, 6)
    priced["vram_costperhour"] = round(dph_total / max(priced["gpu_total_ram"] / 1024, 1e-9), 6)
    priced["dlperf_per_dphtotal"] = round((priced["dlperf"] or 0.0) / dph_total, 4)
    priced["flops_per_dphtotal"] = round((priced["total_flops"] or 0.0) / dph_total, 4)
    priced["score"] = round(priced["dlperf_per_dphtotal"] * priced["reliability"] ** 4, 4)
    return priced
