"""rigdeck's machine benchmark against a plain reference measurement, side by side, in one run.

The reference is what anyone would write by hand: torch matmuls timed directly (a few warm-ups,
then ten timed back to back) at the sizes rigdeck chose, numpy copies for memory bandwidth (split
across as many threads as torch uses, since numpy copies on one thread), and on a GPU a device
copy and a pinned host-to-GPU copy timed with CUDA events. For each figure it prints both values
and their ratio, then PASS/FAIL for "within 10% of the reference on every figure" and for
"rigdeck's run took under 20 s".

The machine is often shared, so each side runs ``--rounds`` times, interleaved, and the best of
each is compared.

    .venv/bin/python bench/machine.py                  # this machine's default device
    .venv/bin/python bench/machine.py --device cpu --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# OpenBLAS reads OPENBLAS_CORETYPE once, when numpy loads; a forced core type can make numpy
# slower than this machine really is, which would make the reference, not rigdeck, the odd one.
if os.environ.get("OPENBLAS_CORETYPE") and not os.environ.get("RIGDECK_BENCH_REEXEC"):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["RIGDECK_BENCH_REEXEC"] = os.environ["OPENBLAS_CORETYPE"]
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import numpy as np
import torch

from rigdeck.core.economics.machine_bench import (
    DTYPES,
    BenchSizes,
    MachineBench,
    default_device,
    measure,
)

TOLERANCE = 0.10
TIME_LIMIT_S = 20.0
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def seconds_per_op(op: Any, device: str, reps: int = 10, trials: int = 3) -> float:
    """``reps`` back to back, timed as one (CUDA events on a GPU); the best of ``trials``."""
    op()
    best = float("inf")
    for _ in range(trials):
        if device == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                op()
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000.0
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            seconds = time.perf_counter() - t0
        best = min(best, seconds / reps)
    return best


def reference_matmul_tflops(device: str, dtype: str, n: int) -> float:
    a = torch.randn(n, n, device=device).to(_TORCH_DTYPES[dtype])
    b = torch.randn(n, n, device=device).to(_TORCH_DTYPES[dtype])
    return 2.0 * n**3 / seconds_per_op(lambda: a @ b, device) / 1e12


def reference_copy_gbps(device: str, nbytes: int, threads: int) -> float:
    if device == "cuda":
        src = torch.ones(nbytes // 4, device="cuda")
        dst = torch.zeros_like(src)
        return 2.0 * nbytes / seconds_per_op(lambda: dst.copy_(src), device) / 1e9
    src_np = np.ones(nbytes // 4, dtype=np.float32)
    dst_np = np.zeros_like(src_np)
    pairs = list(zip(np.array_split(src_np, threads), np.array_split(dst_np, threads), strict=True))
    with ThreadPoolExecutor(threads) as pool:

        def copy_all() -> None:
            list(pool.map(lambda pair: np.copyto(pair[1], pair[0]), pairs))

        return 2.0 * nbytes / seconds_per_op(copy_all, device, reps=3) / 1e9


def reference_h2d_gbps(nbytes: int) -> float:
    host = torch.ones(nbytes // 4).pin_memory()
    target = torch.empty(nbytes // 4, device="cuda")
    return nbytes / seconds_per_op(lambda: target.copy_(host), "cuda") / 1e9


def reference(bench: MachineBench, device: str, sizes: BenchSizes) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for dtype in DTYPES:
        n = bench.matmul_n.get(dtype, sizes.matmul_n)
        out[f"matmul {dtype} TFLOPS"] = (
            None
            if bench.matmul_tflops.get(dtype) is None
            else reference_matmul_tflops(device, dtype, n)
        )
    out["memory GB/s"] = reference_copy_gbps(device, sizes.copy_bytes, torch.get_num_threads())
    out["host->GPU GB/s"] = reference_h2d_gbps(sizes.h2d_bytes) if device == "cuda" else None
    return out


def figures(bench: MachineBench) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        f"matmul {dtype} TFLOPS": bench.matmul_tflops.get(dtype) for dtype in DTYPES
    }
    out["memory GB/s"] = bench.memory_bandwidth_gbps
    out["host->GPU GB/s"] = bench.h2d_gbps
    return out


def best(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = rows[0].keys()
    return {
        k: max((r[k] for r in rows if r[k] is not None), default=None)  # type: ignore[type-var]
        for k in keys
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = args.device or default_device()
    sizes = BenchSizes.for_device(device)
    if os.environ.get("RIGDECK_BENCH_REEXEC"):
        print(f"(OPENBLAS_CORETYPE={os.environ['RIGDECK_BENCH_REEXEC']} unset for this run)")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    ours: list[dict[str, float | None]] = []
    theirs: list[dict[str, float | None]] = []
    seconds: list[float] = []
    for _ in range(max(1, args.rounds)):
        t0 = time.perf_counter()
        bench = measure(device=device, sizes=sizes, machine_key="bench")
        seconds.append(time.perf_counter() - t0)
        ours.append(figures(bench))
        theirs.append(reference(bench, device, sizes))
    mine, ref = best(ours), best(theirs)

    print(f"\n{'figure':<22}{'rigdeck':>12}{'reference':>12}{'ratio':>9}")
    within = True
    for key in mine:
        a, b = mine[key], ref[key]
        if a is None and b is None:
            print(f"{key:<22}{'n/a':>12}{'n/a':>12}{'':>9}")
            continue
        if a is None or b is None:
            within = False
            print(f"{key:<22}{a!s:>12}{b!s:>12}{'!':>9}")
            continue
        ratio = a / b
        ok = abs(ratio - 1.0) <= TOLERANCE
        within = within and ok
        print(f"{key:<22}{a:>12.3f}{b:>12.3f}{ratio:>8.3f}{'' if ok else ' !'}")
    slowest = max(seconds)
    fast = slowest < TIME_LIMIT_S
    print(f"\nrigdeck run: {', '.join(f'{s:.1f} s' for s in seconds)} (limit {TIME_LIMIT_S:.0f} s)")
    print(f"{'PASS' if within else 'FAIL'}: every figure within {TOLERANCE:.0%} of the reference")
    print(f"{'PASS' if fast else 'FAIL'}: rigdeck's run under {TIME_LIMIT_S:.0f} s")
    return 0 if within and fast else 1


if __name__ == "__main__":
    sys.exit(main())
