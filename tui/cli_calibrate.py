"""`rigdeck bench --calibrate`: this machine's llama.cpp rates measured again, old beside new; and
the hint a CPU bench gives when it measures far from what the cached rates predicted."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

# Past this, a CPU bench's miss says more about the cached rates than about the model.
DRIFT = 0.25


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _rates_json(rates: Any) -> dict[str, Any] | None:
    if rates is None:
        return None
    return {
        "source": rates.source,
        "decode_bytes_per_thread_s": rates.decode_bytes_per_thread_s,
        "memory_bandwidth_bytes_per_s": rates.memory_bandwidth,
        "prompt_flops_per_thread": rates.prompt_flops_per_thread,
        "repacked_prompt_flops_per_thread": rates.repacked_prompt_flops_per_thread,
    }


def _rates_words(rates: Any) -> str:
    dot, memory = rates.decode_bytes_per_thread_s / 1e9, rates.memory_bandwidth / 1e9
    plain, repacked = (
        rates.prompt_flops_per_thread / 1e9,
        rates.repacked_prompt_flops_per_thread / 1e9,
    )
    return (
        f"dot products {dot:.1f} GB/s per thread, memory {memory:.1f} GB/s, prompt"
        f" {plain:.0f} / {repacked:.0f} GFLOP/s per thread (plain / repacked)"
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rigdeck.core.machine import fingerprint
    from rigdeck.core.models.fit import speed
    from rigdeck.core.models.run import calibrate

    key = fingerprint().key
    before = calibrate.cached_rates(machine_key=key, max_age_s=float("inf"))
    before_at = calibrate.calibrated_at(machine_key=key)
    # numpy's memory and matmul figures again too: they drift with the same neighbours.
    after = calibrate.calibrate_now(numpy=speed.load_or_measure_cpu(max_age_s=0))
    if args.json:
        doc = {
            "machine_key": key,
            "rates": _rates_json(after),
            "measured_at": _when(calibrate.calibrated_at(machine_key=key)),
            "previous": _rates_json(before),
            "previous_measured_at": _when(before_at),
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"llama.cpp on this CPU, measured now ({after.source}): {_rates_words(after)}")
    if before is not None:
        print(f"before ({_when(before_at)}): {_rates_words(before)}")
    print("predictions use these from now on (rigdeck fit, the models pane, rigdeck bench)")
    return 0


def drift_note(gpu_layers: int, tests: list[dict[str, Any]]) -> str | None:
    """A line when a CPU bench measured far from its prediction, else None."""
    if gpu_layers != 0:
        return None  # GPU speeds do not come from the CPU's cached rates
    misses = [
        (t["test"], t["tps"] / t["predicted_tps"] - 1)
        for t in tests
        if t.get("predicted_tps") and t.get("tps")
    ]
    far = [(name, off) for name, off in misses if abs(off) > DRIFT]
    if not far:
        return None
    from rigdeck.core.models.run.calibrate import calibrated_at

    name, off = max(far, key=lambda m: abs(m[1]))
    when = _when(calibrated_at())
    since = f" (calibrated {when})" if when else ""
    side = "below" if off < 0 else "above"
    return (
        f"{name} measured {abs(off):.0%} {side} the prediction: this machine may run at another"
        f" speed than when its rates were measured{since}; rigdeck bench --calibrate measures"
        " them again"
    )
