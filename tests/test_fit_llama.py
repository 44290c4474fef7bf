"""rigdeck's estimate against llama.cpp's own allocation report (no_alloc), shape by shape.

Weights and KV cache must match llama.cpp byte for byte; the compute buffers are modelled from
the graph, so the total per device must be within 3% (or 256 MiB) of what llama.cpp reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_factory import FULL_PRESETS, write_model

from rigdeck.core.models.fit.budget import GpuBudget, HardwareBudget
from rigdeck.core.models.fit.engine import place_layers
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run.alloc_report import (
    ReportRequest,
    breakdown_abi_supported,
    llama_report,
)

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.skipif(
    not breakdown_abi_supported(), reason="llama.cpp's breakdown is only readable on x86-64 Linux"
)

MiB = 1 << 20
GiB = 1 << 30
MODES = (("f16", False), ("f16", True), ("q8_0", True))


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fit-llama")
    return {name: write_model(d / f"{name}.gguf", name) for name in FULL_PRESETS}


def _budget(report_devices: tuple[str, ...], free: tuple[int, ...]) -> HardwareBudget:
    gpus = tuple(
        GpuBudget(i, name, f, f)
        for i, (name, f) in enumerate(zip(report_devices, free, strict=True))
    )
    return HardwareBudget(
        gpus=gpus, ram_total_bytes=64 * GiB, ram_available_bytes=64 * GiB, cpu_threads=4
    )


def _check(path: Path, ctx: int, kv: str, fa: bool, gpu_layers: int = 0) -> None:
    model = ModelInfo.from_header(read_gguf(path))
    report = llama_report(
        ReportRequest(
            str(path), n_ctx=ctx, type_k=kv, type_v=kv, flash_attn=fa, n_gpu_layers=gpu_layers
        )
    )
    assert report.exact
    budget = _budget(
        report.devices if report.gpu_offload else (),
        report.device_free_bytes if report.gpu_offload else (),
    )
    plan = place_layers(
        model, budget, RunSettings(n_ctx=ctx, type_k=kv, type_v=kv, flash_attn=fa), gpu_layers
    )
    real = report.by_device()
    gpus = [d for d in plan.devices if d.kind == "gpu"]
    for dev in plan.devices:
        key = "CPU" if dev.kind == "cpu" else report.devices[gpus.index(dev)]
        got = real.get(key)
        if got is None:
            assert dev.weights_bytes == dev.kv_bytes == dev.compute_bytes == 0
            continue
        where = f"{path.stem} ctx={ctx} {kv} fa={fa} {key}"
        assert dev.weights_bytes == got.weights_bytes, where
        assert dev.kv_bytes == got.kv_bytes, where
        est = dev.weights_bytes + dev.kv_bytes + dev.compute_bytes
        real_total = got.weights_bytes + got.kv_bytes + got.compute_bytes
        assert abs(est - real_total) <= max(0.03 * real_total, 256 * MiB), where


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_estimate_matches_llama_cpp_at_4k(paths: dict[str, Path], preset: str) -> None:
    _check(paths[preset], 4096, "f16", True)


@pytest.mark.slow
@pytest.mark.parametrize("kv,fa", MODES)
@pytest.mark.parametrize("ctx", [4096, 32768])
@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_estimate_matches_llama_cpp_everywhere(
    paths: dict[str, Path], preset: str, ctx: int, kv: str, fa: bool
) -> None:
    if preset == "deepseek-v2-lite" and kv != "f16" and not fa:
        pytest.skip("llama.cpp refuses a quantized MLA cache without flash attention")
    _check(paths[preset], ctx, kv, fa)


def test_tied_embeddings_on_a_repacking_cpu_cost_a_second_copy(paths: dict[str, Path]) -> None:
    # Gemma 2 ties its output to token_embd; without a GPU the matmul copy is repacked for the
    # CPU while the row lookup is not, so llama.cpp holds the tensor twice.
    path = paths["gemma-2-9b"]
    model = ModelInfo.from_header(read_gguf(path))
    report = llama_report(ReportRequest(str(path), n_ctx=4096))
    if report.gpu_offload:
        pytest.skip("with a GPU build the host buffer type is shared")
    held = report.by_device()["CPU"].weights_bytes
    expected_dup = model.output_type.upper() in {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    assert held == model.weights_bytes + (model.output_bytes if expected_dup else 0)
