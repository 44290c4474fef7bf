"""The machine benchmark on tiny sizes: every figure is a positive measurement in the expected
units, the JSON has the documented keys, and results are cached per machine fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rigdeck.core.economics.machine_bench import (
    BenchSizes,
    MachineBench,
    cached,
    load_or_measure,
    measure,
    store,
)
from rigdeck.core.economics.report import bench_report

TINY = BenchSizes(matmul_n=64, copy_bytes=1 << 20, h2d_bytes=1 << 20, seconds_per_figure=0.02)


def test_tiny_cpu_benchmark_reports_every_figure():
    bench = measure(device="cpu", sizes=TINY, machine_key="box-a")
    doc = bench_report(bench)
    json.dumps(doc)
    assert set(doc["matmul_tflops"]) == {"fp32", "fp16", "bf16"}
    assert doc["matmul_tflops"]["fp32"] > 0 and doc["total_flops"] == doc["matmul_tflops"]["fp32"]
    assert all(v is None or v > 0 for v in doc["matmul_tflops"].values())
    assert doc["memory_bandwidth_gbps"] > 0
    assert doc["h2d_gbps"] is None  # no GPU on the CPU side
    assert doc["device"] == "cpu" and doc["machine_key"] == "box-a" and doc["cached"] is False
    assert bench.figures()["matmul_fp32_tflops"].source == "measured"


def test_results_are_cached_per_machine_and_expire(tmp_path):
    path = tmp_path / "machine_bench.json"
    first = load_or_measure(device="cpu", sizes=TINY, machine_key="box-a", cache_path=path)
    again = load_or_measure(device="cpu", sizes=TINY, machine_key="box-a", cache_path=path)
    assert again == first  # read back, not measured again
    other = load_or_measure(device="cpu", sizes=TINY, machine_key="box-b", cache_path=path)
    assert other.measured_at >= first.measured_at and other.machine_key == "box-b"
    assert cached("box-a", "cpu", cache_path=path) == first  # the other machine's entry stayed
    old = MachineBench.from_json(
        {**first.to_json(), "measured_at": (datetime.now(UTC) - timedelta(days=40)).isoformat()}
    )
    store(old, cache_path=path)
    assert cached("box-a", "cpu", cache_path=path) is None  # older than 30 days
    path.write_text("{not json")
    assert cached("box-a", "cpu", cache_path=path) is None
