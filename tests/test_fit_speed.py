"""The tokens/s model and the CPU calibration behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.speed import DeviceWork, decode_tps, prompt_tps


def test_bandwidth_from_nvml_clock_and_bus() -> None:
    # NVML reports the command clock; data moves on both edges.
    clock_mhz, bus_bits = 10501, 384
    assert speed.gpu_bandwidth_from_clock(clock_mhz, bus_bits) == clock_mhz * 1e6 * 2 * 48


def test_gpu_table_prefers_the_most_specific_name() -> None:
    pcie, _ = speed.gpu_spec("NVIDIA H100 PCIe")
    sxm, _ = speed.gpu_spec("NVIDIA H100 80GB HBM3")
    assert pcie and sxm and pcie < sxm
    assert speed.gpu_spec("NVIDIA GeForce RTX 4060 Ti")[0] != speed.gpu_spec("RTX 4060")[0]
    assert speed.gpu_spec("Some Future Card") == (None, None)


def _gpu(bytes_: float, bw: float, layers: int = 32) -> DeviceWork:
    return DeviceWork("gpu", bytes_, 2 * bytes_, layers, bw, 100e12)


def test_decode_time_follows_bytes_over_bandwidth() -> None:
    slow = decode_tps([_gpu(4e9, 1e12)])
    fast = decode_tps([_gpu(4e9, 2e12)])
    assert 1.5 < fast / slow < 2.0  # fixed per-layer cost keeps it under 2x
    assert decode_tps([_gpu(8e9, 1e12)]) < slow


def test_cpu_part_of_a_split_dominates() -> None:
    gpu_only = decode_tps([_gpu(4e9, 1e12)])
    cpu = DeviceWork("cpu", 2e9, 4e9, 16, 40e9, 1e12, threads=8)
    split = decode_tps([_gpu(2e9, 1e12, 16), cpu])
    assert split < gpu_only / 5


def test_prompt_pays_for_weights_crossing_pcie() -> None:
    works = [_gpu(4e9, 1e12)]
    assert prompt_tps(works, pcie_bytes_per_token=4e9 / 512) < prompt_tps(works)


def test_cpu_calibration_is_measured_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = speed.measure_cpu

    def counting(threads: int | None = None, **kw: object) -> speed.CpuCalibration:
        calls.append(threads)
        return real(threads, nbytes=16 << 20, repeats=1)

    monkeypatch.setattr(speed, "measure_cpu", counting)
    cache = tmp_path / "cal.json"
    first = speed.load_or_measure_cpu(cache, threads=1)
    second = speed.load_or_measure_cpu(cache, threads=1)
    assert len(calls) == 1 and first == second
    assert first.bandwidth_1t > 1e8 and first.sgemm_flops > 1e8
    assert json.loads(cache.read_text())["threads"] == 1
    speed.load_or_measure_cpu(cache, threads=2)  # another thread count is measured afresh
    assert len(calls) == 2


def test_bandwidth_for_fewer_threads_scales_down() -> None:
    cal = speed.CpuCalibration(10e9, 30e9, 4, 50e9, 0.0)
    assert cal.bandwidth(4) == 30e9 and cal.bandwidth(8) == 30e9
    assert cal.bandwidth(1) == 10e9 and cal.bandwidth(2) == 20e9
