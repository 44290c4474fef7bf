"""A short torch micro-benchmark of this machine, in the units GPU clouds list their offers in.

Matmul TFLOPS in fp32, fp16 and bf16 (dense square matmuls, 2·n³ FLOPs each), memory bandwidth
as a large tensor copy (read + write: 2 bytes moved per byte copied, the way bandwidth tests
count), and host-to-GPU copy bandwidth from pinned memory when a GPU exists. ``total_flops`` is
the fp32 figure, which is what Vast's offers call ``total_flops``; comparing a job's speed here
and on an offer scales by these two numbers (see compare.py).

Each figure has a time budget: a dtype the CPU runs slowly (fp16 on many x86 chips) gets a
smaller matrix instead of a long wait. Results are cached per machine fingerprint and device.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rigdeck.core.economics.figures import EconomicsError, Figure, iso

DTYPES = ("fp32", "fp16", "bf16")
MiB = 1 << 20
CACHE_NAME = "machine_bench.json"
CACHE_MAX_AGE_S = 30 * 86400.0


@dataclass(frozen=True)
class BenchSizes:
    """How big and how long. Defaults suit the device; tests pass tiny ones."""

    matmul_n: int
    copy_bytes: int
    h2d_bytes: int
    seconds_per_figure: float = 0.8
    min_matmul_n: int = 128

    @classmethod
    def for_device(cls, device: str) -> BenchSizes:
        if device.startswith("cuda"):
            return cls(matmul_n=8192, copy_bytes=1024 * MiB, h2d_bytes=512 * MiB)
        # Larger than any CPU's last-level cache, small enough for a 2-core laptop's RAM.
        return cls(matmul_n=1024, copy_bytes=256 * MiB, h2d_bytes=0)


@dataclass(frozen=True)
class MachineBench:
    device: str
    """``cpu`` or ``cuda`` (the GPU's name is in ``device_name``)."""
    device_name: str
    matmul_tflops: dict[str, float | None]
    memory_bandwidth_gbps: float
    h2d_gbps: float | None
    machine_key: str
    measured_at: datetime
    seconds: float
    threads: int
    torch_version: str
    matmul_n: dict[str, int] = field(default_factory=dict)
    """The matrix size each dtype was measured at (smaller when a dtype ran slowly)."""

    @property
    def total_flops(self) -> float | None:
        """fp32 TFLOPS: the unit of an offer's ``tflops`` (Vast's ``total_flops``)."""
        return self.matmul_tflops.get("fp32")

    def figures(self) -> dict[str, Figure]:
        at = self.measured_at
        out = {
            f"matmul_{k}_tflops": Figure(v, "measured", at) for k, v in self.matmul_tflops.items()
        }
        out["memory_bandwidth_gbps"] = Figure(self.memory_bandwidth_gbps, "measured", at)
        out["h2d_gbps"] = Figure(self.h2d_gbps, "measured", at)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "matmul_tflops": dict(self.matmul_tflops),
            "memory_bandwidth_gbps": self.memory_bandwidth_gbps,
            "h2d_gbps": self.h2d_gbps,
            "total_flops": self.total_flops,
            "device": self.device,
            "device_name": self.device_name,
            "machine_key": self.machine_key,
            "measured_at": iso(self.measured_at),
            "seconds": self.seconds,
            "threads": self.threads,
            "torch_version": self.torch_version,
            "matmul_n": dict(self.matmul_n),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineBench:
        tflops = data["matmul_tflops"]
        return cls(
            device=str(data["device"]),
            device_name=str(data.get("device_name", "")),
            matmul_tflops={k: None if tflops.get(k) is None else float(tflops[k]) for k in DTYPES},
            memory_bandwidth_gbps=float(data["memory_bandwidth_gbps"]),
            h2d_gbps=None if data.get("h2d_gbps") is None else float(data["h2d_gbps"]),
            machine_key=str(data["machine_key"]),
            measured_at=datetime.fromisoformat(str(data["measured_at"])),
            seconds=float(data.get("seconds", 0.0)),
            threads=int(data.get("threads", 0)),
            torch_version=str(data.get("torch_version", "")),
            matmul_n={str(k): int(v) for k, v in dict(data.get("matmul_n", {})).items()},
        )


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise EconomicsError("the machine benchmark needs torch: pip install torch") from None
    return torch


def default_device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def measure(
    *,
    device: str | None = None,
    sizes: BenchSizes | None = None,
    machine_key: str | None = None,
) -> MachineBench:
    """Run the benchmark now (a few seconds). Blocking: call it from a worker."""
    torch = _torch()
    dev = device or default_device()
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise EconomicsError("no CUDA GPU visible to torch: benchmark the cpu instead")
    size = sizes or BenchSizes.for_device(dev)
    started = time.perf_counter()
    sync = torch.cuda.synchronize if dev.startswith("cuda") else _no_sync
    tflops: dict[str, float | None] = {}
    shapes: dict[str, int] = {}
    for name in DTYPES:
        tflops[name], shapes[name] = _matmul_tflops(torch, dev, name, size, sync)
    bandwidth = _copy_gbps(torch, dev, size, sync)
    h2d = _h2d_gbps(torch, dev, size, sync) if dev.startswith("cuda") and size.h2d_bytes else None
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else _cpu_name()
    return MachineBench(
        device="cuda" if dev.startswith("cuda") else "cpu",
        device_name=name,
        matmul_tflops=tflops,
        memory_bandwidth_gbps=bandwidth,
        h2d_gbps=h2d,
        machine_key=machine_key or _machine_key(),
        measured_at=datetime.now(UTC).replace(microsecond=0),  # as stored
        seconds=time.perf_counter() - started,
        threads=int(torch.get_num_threads()),
        torch_version=str(torch.__version__),
        matmul_n=shapes,
    )


def _no_sync() -> None:
    return None


def _timed_reps(op: Callable[[], object], sync: Callable[[], None], budget_s: float) -> float:
    """Best seconds per ``op`` over as many batches as fit the budget (one warm-up first).

    The best batch, as bandwidth and FLOPS tests report: on a shared machine the slower ones
    measure the neighbours. Ops run in batches between syncs so that a GPU's launch latency is
    not what we time.
    """
    sync()
    t0 = time.perf_counter()
    op()
    sync()
    first = time.perf_counter() - t0
    batch = max(1, min(64, int(0.02 / max(first, 1e-6))))
    per_op: list[float] = []
    deadline = time.perf_counter() + max(budget_s - first, 0.0)
    while len(per_op) < 3 or (time.perf_counter() < deadline and len(per_op) < 50):
        sync()
        t0 = time.perf_counter()
        for _ in range(batch):
            op()
        sync()
        per_op.append((time.perf_counter() - t0) / batch)
        if time.perf_counter() > deadline + budget_s:
            break  # slower than the warm-up promised: three batches are enough
    return min(per_op)


def _matmul_tflops(
    torch: Any, dev: str, name: str, size: BenchSizes, sync: Callable[[], None]
) -> tuple[float | None, int]:
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    n = size.matmul_n
    while True:
        try:
            a = torch.randn(n, n, device=dev).to(dtype)
            b = torch.randn(n, n, device=dev).to(dtype)
            out = torch.empty(n, n, device=dev, dtype=dtype)
        except (RuntimeError, TypeError):
            return None, n  # this build cannot make tensors of this type here
        # A probe decides whether this size fits the budget; a slow dtype drops to a size that
        # does rather than stretching the run.
        try:
            sync()
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            sync()
            probe = time.perf_counter() - t0
        except RuntimeError:
            return None, n  # e.g. fp16 matmul not implemented on this CPU build
        if probe * 4 > size.seconds_per_figure and n > size.min_matmul_n:
            n = max(size.min_matmul_n, n // 2)
            continue
        seconds = _timed_reps(_matmul_op(torch, a, b, out), sync, size.seconds_per_figure)
        return 2.0 * n**3 / seconds / 1e12, n


def _matmul_op(torch: Any, a: Any, b: Any, out: Any) -> Callable[[], object]:
    return lambda: torch.matmul(a, b, out=out)


def _copy_gbps(torch: Any, dev: str, size: BenchSizes, sync: Callable[[], None]) -> float:
    count = max(size.copy_bytes // 4, 1)
    src = torch.ones(count, dtype=torch.float32, device=dev)
    dst = torch.zeros(count, dtype=torch.float32, device=dev)  # touched: no page faults timed
    seconds = _timed_reps(lambda: dst.copy_(src), sync, size.seconds_per_figure)
    return 2.0 * count * 4 / seconds / 1e9


def _h2d_gbps(torch: Any, dev: str, size: BenchSizes, sync: Callable[[], None]) -> float | None:
    count = max(size.h2d_bytes // 4, 1)
    try:
        host = torch.ones(count, dtype=torch.float32).pin_memory()
    except RuntimeError:
        return None
    target = torch.empty(count, dtype=torch.float32, device=dev)
    seconds = _timed_reps(lambda: target.copy_(host), sync, size.seconds_per_figure)
    return count * 4 / seconds / 1e9


def _cpu_name() -> str:
    from rigdeck.core.machine import fingerprint

    return fingerprint().cpu_model


def _machine_key() -> str:
    from rigdeck.core.machine import fingerprint

    return fingerprint().key


# --------------------------------------------------------------------------------------------
# Cache


def default_cache_path() -> Path:
    from rigdeck.core.config import data_dir

    return data_dir() / CACHE_NAME


def cached(
    machine_key: str,
    device: str,
    *,
    cache_path: Path | None = None,
    max_age_s: float = CACHE_MAX_AGE_S,
) -> MachineBench | None:
    """The stored result for this machine and device if fresh enough, else None."""
    path = cache_path or default_cache_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        bench = MachineBench.from_json(doc[f"{machine_key}/{device}"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = (datetime.now(UTC) - bench.measured_at).total_seconds()
    return bench if 0 <= age <= max_age_s else None


def store(bench: MachineBench, *, cache_path: Path | None = None) -> None:
    """Keep ``bench`` for its machine and device (other machines' entries stay)."""
    path = cache_path or default_cache_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}
    doc[f"{bench.machine_key}/{bench.device}"] = bench.to_json()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only data dir only costs a new measurement next time


def load_or_measure(
    *,
    device: str | None = None,
    sizes: BenchSizes | None = None,
    machine_key: str | None = None,
    cache_path: Path | None = None,
    max_age_s: float = CACHE_MAX_AGE_S,
    refresh: bool = False,
) -> MachineBench:
    """The cached result for this machine (fingerprint) and device, else a new measurement."""
    dev = device or default_device()
    key = machine_key or _machine_key()
    kind = "cuda" if dev.startswith("cuda") else "cpu"
    if not refresh:
        hit = cached(key, kind, cache_path=cache_path, max_age_s=max_age_s)
        if hit is not None:
            return hit
    bench = measure(device=dev, sizes=sizes, machine_key=key)
    store(bench, cache_path=cache_path)
    return bench
