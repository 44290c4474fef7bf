"""This machine's CPU speed as llama.cpp itself shows it: a short bench of the demo model.

numpy's read and matmul figures say what the memory and the FPU can do; llama.cpp's kernels
reach a share of that which depends on the build, the CPU's vector units and the weight type.
So once per machine (the fingerprint: CPU, cores, RAM, llama.cpp build) the demo model is loaded
and benched for a few seconds at the threads rigdeck loads with, and the rates that reproduce
it are cached. A changed machine (another CPU, a rebuilt llama.cpp) gets a new measurement.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rigdeck.core.errors import RigdeckError
from rigdeck.core.machine import fingerprint
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import (
    DEFAULT_CPU_REPACK_TYPES,
    default_batch_threads,
    default_threads,
)
from rigdeck.core.models.fit.layout import cpu_work, repacked_on_cpu
from rigdeck.core.models.format.model_reader import read_model_info
from rigdeck.core.models.run.plan import LoadCancelled

# Short on purpose: enough tokens for steady kernels, a few seconds on two slow cores.
PROMPT_TOKENS = 256
DECODE_TOKENS = 48
REPETITIONS = 2
MAX_AGE_S = 30 * 86400
# Rates derived under another speed model mean something else: a new formula, a new measurement.
RATES_VERSION = 2


def default_cache_path() -> Path:
    try:
        from platformdirs import user_cache_path
    except ImportError:  # a bare interpreter (a cloud box running the bench)
        return Path.home() / ".cache" / "rigdeck" / "llama_calibration.json"
    return user_cache_path("rigdeck") / "llama_calibration.json"


def _demo_path() -> Path | None:
    from rigdeck.core.models.sources.local import demo_model_path

    path: Path | None = demo_model_path()
    return path


def measure_rates(
    model_path: str | Path,
    *,
    threads: int | None = None,
    threads_batch: int | None = None,
    numpy: speed.CpuCalibration | None = None,
    cancel: threading.Event | None = None,
) -> speed.CpuRates:
    """Bench ``model_path`` on the CPU (no GPU layers) and derive this machine's rates.

    The fastest repetition counts: other processes on a shared machine only ever slow it down.
    Setting ``cancel`` stops it within a repetition (``RunError``).
    """
    import psutil

    from rigdeck.core.models.run.bench import measure
    from rigdeck.core.models.run.loader import load_model
    from rigdeck.core.models.run.plan import RunPlan

    physical = psutil.cpu_count(logical=False) or 1
    logical = psutil.cpu_count(logical=True) or physical
    n = threads or default_threads(physical)
    nb = threads_batch or default_batch_threads(logical)
    info = read_model_info(model_path)
    plan = RunPlan(
        str(model_path),
        n_ctx=1024,
        flash_attn=True,
        n_threads=n,
        n_threads_batch=nb,
        n_batch=PROMPT_TOKENS,
        n_ubatch=PROMPT_TOKENS,
    )
    with load_model(plan, kind="calibration", cancel=cancel) as model:
        prompt, decode = measure(
            model,
            n_prompt=PROMPT_TOKENS,
            n_gen=DECODE_TOKENS,
            repetitions=REPETITIONS,
            cancel=cancel,
        )
    cal = numpy if numpy is not None else speed.load_or_measure_cpu(threads=logical)
    decode_bytes, layers, flops = cpu_work(info)
    return speed.rates_from_bench(
        decode_bytes=decode_bytes,
        layers=layers,
        prompt_flops=flops,
        repacked=repacked_on_cpu(info, DEFAULT_CPU_REPACK_TYPES),
        decode_tps=max(decode),
        prompt_tps=max(prompt),
        threads=n,
        threads_batch=nb,
        numpy=cal,
        physical_cores=physical,
        logical_cores=logical,
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def cached_rates(
    cache_path: Path | None = None, *, machine_key: str | None = None, max_age_s: float = MAX_AGE_S
) -> speed.CpuRates | None:
    """The rates measured on this machine (its fingerprint) if fresh, else None."""
    entry = _read(cache_path or default_cache_path()).get(machine_key or fingerprint().key)
    if not isinstance(entry, dict) or time.time() - float(entry.get("measured_at", 0)) > max_age_s:
        return None
    if entry.get("version") != RATES_VERSION:
        return None
    try:
        return speed.CpuRates(**entry["rates"])
    except (KeyError, TypeError):
        return None


def store_rates(
    rates: speed.CpuRates, cache_path: Path | None = None, *, machine_key: str | None = None
) -> None:
    path = cache_path or default_cache_path()
    doc = _read(path)
    doc[machine_key or fingerprint().key] = {
        "measured_at": time.time(),
        "version": RATES_VERSION,
        "rates": asdict(rates),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time


def load_or_calibrate(
    cache_path: Path | None = None,
    *,
    numpy: speed.CpuCalibration | None = None,
    max_age_s: float = MAX_AGE_S,
    cancel: threading.Event | None = None,
) -> speed.CpuRates | None:
    """This machine's rates: cached for its fingerprint, else measured now (a few seconds).

    Without the demo model or llama.cpp the rates come from numpy's figures (``source`` says
    "numpy"), cached too; only a machine with neither gets None. Setting ``cancel`` (the app
    quitting) stops a measurement and caches nothing: ``LoadCancelled``.
    """
    key = fingerprint().key
    cached = cached_rates(cache_path, machine_key=key, max_age_s=max_age_s)
    if cached is not None:
        return cached
    return calibrate_now(cache_path, numpy=numpy, cancel=cancel)


def calibrate_now(
    cache_path: Path | None = None,
    *,
    numpy: speed.CpuCalibration | None = None,
    cancel: threading.Event | None = None,
) -> speed.CpuRates:
    """Measure this machine's rates now and cache them in place of what was there.

    A VM's neighbours (and a laptop's power plan) can move llama.cpp's speed by a third within
    hours while the fingerprint stays the same: this is the measurement again, on request.
    """
    import psutil

    key = fingerprint().key
    demo = _demo_path()
    rates: speed.CpuRates | None = None
    if demo is not None:
        try:
            rates = measure_rates(demo, numpy=numpy, cancel=cancel)
        except (RigdeckError, OSError, ValueError):
            rates = None  # a broken build or model: numpy's figures still say something
    if cancel is not None and cancel.is_set():
        raise LoadCancelled("calibrating this machine was cancelled")
    if rates is None:
        cal = numpy if numpy is not None else speed.load_or_measure_cpu()
        physical = psutil.cpu_count(logical=False) or 1
        rates = speed.rates_from_numpy(cal, physical, psutil.cpu_count() or physical)
    store_rates(rates, cache_path, machine_key=key)
    return rates


def calibrated_at(
    cache_path: Path | None = None, *, machine_key: str | None = None
) -> float | None:
    """When this machine's cached rates were measured (epoch seconds), None when never."""
    entry = _read(cache_path or default_cache_path()).get(machine_key or fingerprint().key)
    if not isinstance(entry, dict):
        return None
    try:
        return float(entry["measured_at"])
    except (KeyError, TypeError, ValueError):
        return None
