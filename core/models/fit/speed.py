"""Tokens per second from the bytes each device must read, and how fast it reads them.

Decoding one token reads every active weight once (plus the KV cache), so its time is close to
bytes / bandwidth on each device, plus a small fixed cost per layer (kernel launches on a GPU,
thread barriers on a CPU). Prompt processing is compute-bound: FLOPs / throughput, plus, with
partial offload, the CPU-resident weights crossing PCIe once per micro-batch.

The constants below were fitted against llama.cpp on an H100 (CUDA) and on a small x86 VM (CPU);
`bench/fit.py` prints prediction against measurement so they can be re-checked on any machine.
The CPU's own figures come from `measure_cpu` (numpy, a second or two) and are cached.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Fraction of the theoretical GPU memory bandwidth llama.cpp's decode kernels reach.
GPU_BW_EFFICIENCY = 0.68
# Fixed GPU cost per transformer block per decoded token (launches, small kernels).
GPU_LAYER_OVERHEAD_S = 55e-6
# Fraction of the dense fp16 tensor throughput llama.cpp's quantized matmuls reach in prompts.
GPU_PROMPT_EFFICIENCY = 0.16
# llama.cpp's CPU dot products stream weights at about this share of a numpy read of the same
# memory with the same number of threads.
CPU_BW_EFFICIENCY = 0.8
# CPU cost per block per decoded token: graph walk plus, with threads, one barrier per op.
CPU_LAYER_OVERHEAD_S = 30e-6
CPU_THREAD_SYNC_S = 20e-6
# Narrow models (small n_embd) stream their short rows less efficiently on a CPU.
CPU_FULL_SPEED_WIDTH = 2048
# llama.cpp's prompt kernels run at about the rate of a numpy float32 matmul.
CPU_PROMPT_FLOPS_PER_SGEMM = 1.0
# Experts picked per token are scattered in memory: a CPU reads them less efficiently.
CPU_MOE_EFFICIENCY = 0.75
# Host-to-GPU copies of CPU-resident weights during prompts (pinned memory, PCIe 4/5 x16).
PCIE_BYTES_PER_S = 25e9
# For experts kept on the CPU only the experts a micro-batch routes to are copied: about a
# quarter of their bytes crossed PCIe per 512-token batch on a 128-expert model.
PCIE_EXPERT_FRACTION = 0.25
# MLA attention runs more, smaller kernels per block than plain attention.
GPU_MLA_LAYER_OVERHEAD_S = 40e-6
# Prompt matmuls over experts are small (a few dozen tokens per expert): they reach a fraction
# of the dense rate; MLA's latent attention costs more on top.
MOE_PROMPT_EFFICIENCY = 0.15
MLA_PROMPT_EFFICIENCY = 0.3
# One hand-off between devices per token costs a synchronisation.
SPLIT_SYNC_S = 30e-6

# Dense fp16 tensor FLOP/s and memory bandwidth of common GPUs, for when NVML cannot say.
# Matched by substring of the lower-cased device name, most specific first.
GPU_SPECS: tuple[tuple[str, float, float], ...] = (
    ("h200", 4.8e12, 989e12),
    ("h100 pcie", 2.0e12, 756e12),
    ("h100", 3.35e12, 989e12),
    ("gh200", 4.0e12, 989e12),
    ("b200", 8.0e12, 2250e12),
    ("a100-sxm4-80", 2.04e12, 312e12),
    ("a100 80gb pcie", 1.94e12, 312e12),
    ("a100", 1.56e12, 312e12),
    ("a800", 2.04e12, 312e12),
    ("l40s", 864e9, 362e12),
    ("l40", 864e9, 181e12),
    ("l4", 300e9, 121e12),
    ("a10g", 600e9, 70e12),
    ("a10", 600e9, 125e12),
    ("a6000", 768e9, 155e12),
    ("rtx 6000 ada", 960e9, 364e12),
    ("a5000", 768e9, 111e12),
    ("a4000", 448e9, 77e12),
    ("v100", 900e9, 125e12),
    ("t4", 320e9, 65e12),
    ("5090", 1.79e12, 419e12),
    ("5080", 960e9, 225e12),
    ("5070 ti", 896e9, 176e12),
    ("5070", 672e9, 124e12),
    ("5060 ti", 448e9, 95e12),
    ("4090", 1.008e12, 165e12),
    ("4080", 717e9, 97e12),
    ("4070 ti super", 672e9, 88e12),
    ("4070 ti", 504e9, 80e12),
    ("4070 super", 504e9, 71e12),
    ("4070", 504e9, 58e12),
    ("4060 ti", 288e9, 44e12),
    ("4060", 272e9, 30e12),
    ("3090 ti", 1.008e12, 80e12),
    ("3090", 936e9, 71e12),
    ("3080 ti", 912e9, 68e12),
    ("3080", 760e9, 59e12),
    ("3070", 448e9, 40e12),
    ("3060 ti", 448e9, 32e12),
    ("3060", 360e9, 25e12),
    ("2080 ti", 616e9, 54e12),
    ("mi300x", 5.3e12, 1307e12),
    ("mi250", 3.2e12, 362e12),
    ("7900 xtx", 960e9, 123e12),
)
# Without a name match: assume a mid-range card rather than refuse to predict.
DEFAULT_GPU_BW = 500e9
DEFAULT_GPU_FLOPS = 60e12
DEFAULT_CPU_BW = 20e9
DEFAULT_CPU_SGEMM = 50e9


def gpu_spec(name: str) -> tuple[float | None, float | None]:
    """(bandwidth bytes/s, dense fp16 FLOP/s) for a GPU name, or (None, None)."""
    low = name.lower()
    for key, bw, flops in GPU_SPECS:
        if key in low:
            return bw, flops
    return None, None


def gpu_bandwidth_from_clock(mem_clock_max_mhz: float, bus_width_bits: int) -> float:
    """Theoretical bandwidth from NVML's max memory clock and bus width (two transfers a clock)."""
    return mem_clock_max_mhz * 1e6 * 2 * bus_width_bits / 8


# --------------------------------------------------------------------------------------------
# CPU calibration (I/O lives here, not in the fit)


@dataclass(frozen=True)
class CpuCalibration:
    """What a quick numpy run measured on this machine."""

    bandwidth_1t: float
    """Bytes/s one thread reads (and sums) from a buffer far larger than the caches."""
    bandwidth_all: float
    """The same with `threads` threads."""
    threads: int
    sgemm_flops: float
    measured_at: float
    """Unix time of the measurement."""

    def bandwidth(self, threads: int) -> float:
        """Read bandwidth for a thread count: linear in threads until memory saturates."""
        if threads >= self.threads:
            return self.bandwidth_all
        return min(self.bandwidth_1t * max(threads, 1), self.bandwidth_all)

    def prompt_flops(self) -> float:
        """FLOP/s llama.cpp's CPU prompt kernels reach, from the numpy matmul figure."""
        return self.sgemm_flops * CPU_PROMPT_FLOPS_PER_SGEMM


def measure_cpu(
    threads: int | None = None, *, nbytes: int = 256 << 20, repeats: int = 4
) -> CpuCalibration:
    """Measure read bandwidth (1 and N threads) and float32 matmul throughput with numpy.

    Takes one to three seconds and about `nbytes` of memory. numpy releases the GIL inside
    reductions, so Python threads give real parallel reads.
    """
    import numpy as np

    threads = max(1, threads or os.cpu_count() or 1)
    data = np.ones(nbytes // 8, dtype=np.float64)

    def read_rate(n: int) -> float:
        chunks = np.array_split(data, n)
        best = 0.0
        for _ in range(repeats):
            workers = [threading.Thread(target=np.sum, args=(c,)) for c in chunks]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            best = max(best, data.nbytes / (time.perf_counter() - start))
        return best

    one = read_rate(1)
    all_ = max(read_rate(threads), one) if threads > 1 else one
    a = np.ones((1024, 1024), dtype=np.float32)
    a @ a
    flops = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        flops = max(flops, 2 * 1024**3 / (time.perf_counter() - start))
    return CpuCalibration(one, all_, threads, flops, time.time())


def default_cache_path() -> Path:
    try:
        from platformdirs import user_cache_path
    except ImportError:  # a bare interpreter (a cloud box running the bench)
        return Path.home() / ".cache" / "rigdeck" / "cpu_calibration.json"
    return user_cache_path("rigdeck") / "cpu_calibration.json"


def load_or_measure_cpu(
    cache_path: Path | None = None, *, max_age_s: float = 30 * 86400, threads: int | None = None
) -> CpuCalibration:
    """The cached calibration if fresh and for the same thread count, else a new measurement."""
    path = cache_path or default_cache_path()
    want = max(1, threads or os.cpu_count() or 1)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        cal = CpuCalibration(**doc)
        if cal.threads == want and time.time() - cal.measured_at < max_age_s:
            return cal
    except (OSError, ValueError, TypeError):
        pass
    cal = measure_cpu(want)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(cal)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
    return cal


# --------------------------------------------------------------------------------------------
# The throughput model (pure)


@dataclass(frozen=True)
class DeviceWork:
    """What one device does per token, and how fast it can do it."""

    kind: str
    """'gpu' or 'cpu'."""
    decode_bytes: float
    """Bytes read per generated token (weights that token uses, KV cache read)."""
    prompt_flops: float
    """FLOPs per prompt token for the layers on this device."""
    layers: int
    bandwidth: float
    """Usable read bandwidth in bytes/s (already the CPU's for its thread count)."""
    flops: float
    """Usable FLOP/s for prompt processing."""
    threads: int = 1
    extra_decode_s: float = 0.0
    """Fixed extra seconds per token (e.g. MLA's extra kernels)."""
    efficiency: float = 1.0
    """Shape-dependent share of the device's usual streaming rate (see cpu_row_efficiency)."""
    rates: CpuRates | None = None
    """A CPU calibrated against llama.cpp: its rates replace bandwidth, flops and efficiency."""
    threads_batch: int = 1
    repacked: bool = False
    """The model's main weight type is one llama.cpp repacks for CPU matmuls."""


def decode_seconds(work: DeviceWork) -> float:
    if work.decode_bytes <= 0 and work.layers == 0:
        return 0.0
    if work.kind == "gpu":
        return (
            work.decode_bytes / (work.bandwidth * GPU_BW_EFFICIENCY)
            + work.layers * GPU_LAYER_OVERHEAD_S
            + work.extra_decode_s
        )
    if work.rates is not None:
        return (
            work.rates.decode_seconds(work.decode_bytes, work.layers, work.threads)
            + work.extra_decode_s
        )
    per_layer = CPU_LAYER_OVERHEAD_S + CPU_THREAD_SYNC_S * math.log2(max(work.threads, 1))
    rate = work.bandwidth * CPU_BW_EFFICIENCY * work.efficiency
    return work.decode_bytes / rate + work.layers * per_layer + work.extra_decode_s


def cpu_row_efficiency(n_embd: int) -> float:
    """How well a CPU streams a model's rows: 1.0 from 2048 wide, less for narrow models."""
    return float(min(1.0, n_embd / CPU_FULL_SPEED_WIDTH) ** 0.3)


def decode_tps(works: Sequence[DeviceWork]) -> float:
    """Devices run one after another for each token (layer split), so their times add."""
    active = [w for w in works if w.decode_bytes > 0 or w.layers > 0]
    seconds = sum(decode_seconds(w) for w in active) + SPLIT_SYNC_S * max(len(active) - 1, 0)
    return 1.0 / seconds if seconds > 0 else 0.0


def prompt_tps(works: Sequence[DeviceWork], *, pcie_bytes_per_token: float = 0.0) -> float:
    """Prompt tokens/s: compute on each device plus CPU weights copied to a GPU per batch."""
    seconds = sum(_prompt_seconds(w) for w in works if w.prompt_flops > 0)
    seconds += pcie_bytes_per_token / PCIE_BYTES_PER_S
    return 1.0 / seconds if seconds > 0 else 0.0


def _prompt_seconds(work: DeviceWork) -> float:
    if work.rates is not None:
        return work.rates.prompt_seconds(
            work.prompt_flops, work.threads_batch, repacked=work.repacked
        )
    return work.prompt_flops / work.flops if work.flops > 0 else 0.0


def cpu_prompt_flops(threads: int, sgemm_flops: float | None) -> float:
    """Prompt FLOP/s of a CPU: calibrated when known, else a per-thread AVX2 guess."""
    if sgemm_flops:
        return sgemm_flops * CPU_PROMPT_FLOPS_PER_SGEMM
    return DEFAULT_CPU_SGEMM / 2 * max(threads, 1) * CPU_PROMPT_FLOPS_PER_SGEMM


# --------------------------------------------------------------------------------------------
# A CPU calibrated against llama.cpp itself (the rates come from core/models/run/calibrate.py)

# llama.cpp's decode streams weights at about this share of numpy's all-thread read.
CPU_DECODE_BW_SHARE = 0.8
# How compute and memory time overlap in a CPU decode: the p-norm of the two. p=1 would add them
# (no overlap), p=inf take the larger (perfect overlap). Fitted on Q4_K_M and Q8_0 llama-3.1-8b
# shapes from 2 to 32 blocks on a 2-core VM: all within 5% at p=3, where adding them was 35% slow.
CPU_OVERLAP_P = 3.0
# A machine whose dot products outrun its memory still spends this share of a token computing.
MIN_COMPUTE_SHARE = 0.5


def overlap(compute_s: float, memory_s: float) -> float:
    """Seconds of a step that must both compute and read memory, the two partly overlapping."""
    p = CPU_OVERLAP_P
    return float((compute_s**p + memory_s**p) ** (1 / p))


def compute_share(total_s: float, memory_s: float) -> float:
    """The compute seconds that, overlapped with ``memory_s``, take ``total_s`` (inverse of
    ``overlap``)."""
    p = CPU_OVERLAP_P
    rest = total_s**p - memory_s**p
    return max(rest ** (1 / p) if rest > 0 else 0.0, MIN_COMPUTE_SHARE * total_s)


def memory_seconds(decode_bytes: float, bandwidth: float) -> float:
    return decode_bytes / (bandwidth * CPU_DECODE_BW_SHARE) if bandwidth > 0 else 0.0


# A thread on a core's second hardware thread (SMT) adds about this share of a core.
SMT_THREAD_SHARE = 0.25
# Per block and token, the small ops around the matmuls (norms, rope, attention over a short
# cache, activation quantization, one barrier per op) cost about as much as streaming this many
# weight bytes: nothing for an 8B model, a third of a token's time for a 135M one.
CPU_LAYER_OVERHEAD_BYTES = 1.25e6


@dataclass(frozen=True)
class CpuRates:
    """What llama.cpp's CPU kernels reach on one machine, per thread where threads share work.

    A CPU decode is neither purely bandwidth- nor compute-bound on few cores: each token's
    weights pass through the cores' dot products (``decode_bytes_per_thread_s`` each) and through
    the memory bus (``memory_bandwidth``, shared). The two overlap (the hardware prefetches the
    next rows while the cores work on these), but not perfectly: the time is their smooth maximum
    (see ``overlap``). Prompt batches are
    matmuls: FLOPs over threads, at the rate of llama.cpp's repacked GEMM kernels for the weight
    types it repacks and at the plain dot-product rate for the others.
    """

    decode_bytes_per_thread_s: float
    memory_bandwidth: float
    prompt_flops_per_thread: float
    """Weight types llama.cpp does not repack (Q4_1, Q5_K, Q6_K, Q8_0, ...)."""
    repacked_prompt_flops_per_thread: float
    """Repacked types (Q4_0, Q4_K, IQ4_NL, MXFP4 on x86 and Arm)."""
    physical_cores: int
    logical_cores: int
    source: str = "llama.cpp"
    """'llama.cpp' (measured with the demo model), 'numpy' (estimated from numpy's figures)."""

    def threads(self, n: int) -> float:
        """Cores' worth of work ``n`` threads do: SMT siblings add little, oversubscribing none."""
        n = max(n, 1)
        cores = min(n, self.physical_cores)
        siblings = max(0, min(n, self.logical_cores) - self.physical_cores)
        return cores + SMT_THREAD_SHARE * siblings

    def decode_seconds(self, decode_bytes: float, layers: int, threads: int) -> float:
        if decode_bytes <= 0 and layers == 0:
            return 0.0
        work = decode_bytes + layers * CPU_LAYER_OVERHEAD_BYTES
        compute = work / (self.threads(threads) * self.decode_bytes_per_thread_s)
        return overlap(compute, memory_seconds(decode_bytes, self.memory_bandwidth))

    def prompt_seconds(self, flops: float, threads: int, *, repacked: bool) -> float:
        """Seconds per prompt token for ``flops`` FLOPs of it on the CPU."""
        if flops <= 0:
            return 0.0
        rate = self.repacked_prompt_flops_per_thread if repacked else self.prompt_flops_per_thread
        return flops / (self.threads(threads) * rate)


def rates_from_bench(
    *,
    decode_bytes: float,
    layers: int,
    prompt_flops: float,
    repacked: bool,
    decode_tps: float,
    prompt_tps: float,
    threads: int,
    threads_batch: int,
    numpy: CpuCalibration,
    physical_cores: int,
    logical_cores: int,
) -> CpuRates:
    """The rates that reproduce a measured bench of one model (the demo) on this machine.

    ``decode_bytes``, ``layers`` and ``prompt_flops`` are that model's figures as the fit counts
    them; the memory bandwidth is numpy's all-thread read. The prompt rate of the class of weight
    types the model is not in comes from numpy's float32 matmul, which llama.cpp's repacked
    kernels match, scaled by the measured ratio when the model is in that class.
    """
    probe = CpuRates(1.0, numpy.bandwidth_all, 1.0, 1.0, physical_cores, logical_cores)
    per_token = 1.0 / decode_tps
    compute_s = compute_share(per_token, memory_seconds(decode_bytes, numpy.bandwidth_all))
    decode_rate = (decode_bytes + layers * CPU_LAYER_OVERHEAD_BYTES) / (
        probe.threads(threads) * compute_s
    )
    measured = prompt_flops * prompt_tps / probe.threads(threads_batch)
    sgemm = numpy.sgemm_flops / max(numpy.threads, 1) * CPU_PROMPT_FLOPS_PER_SGEMM
    repacked_rate = measured if repacked else max(sgemm, measured)
    plain_rate = measured if not repacked else min(measured, sgemm * PLAIN_PROMPT_SHARE)
    return CpuRates(
        decode_rate,
        numpy.bandwidth_all,
        plain_rate,
        repacked_rate,
        physical_cores,
        logical_cores,
    )


# Without a llama.cpp measurement: dot products stream about this share of one thread's numpy
# read, and plain (not repacked) prompt kernels reach about this share of numpy's matmul.
NUMPY_DECODE_SHARE = 0.8
PLAIN_PROMPT_SHARE = 0.3


def rates_from_numpy(cal: CpuCalibration, physical_cores: int, logical_cores: int) -> CpuRates:
    """A first guess at the rates from numpy's figures alone (no llama.cpp or no demo model)."""
    sgemm = cal.sgemm_flops / max(cal.threads, 1) * CPU_PROMPT_FLOPS_PER_SGEMM
    return CpuRates(
        cal.bandwidth_1t * NUMPY_DECODE_SHARE,
        cal.bandwidth_all,
        sgemm * PLAIN_PROMPT_SHARE,
        sgemm,
        physical_cores,
        logical_cores,
        source="numpy",
    )
