"""fit(): placement, per-device bytes, speed and suggestions, on headers only (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_factory import write_model

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit.budget import GpuBudget, HardwareBudget
from rigdeck.core.models.fit.engine import fit, place_layers
from rigdeck.core.models.fit.layout import CUDA_CONTEXT_BYTES
from rigdeck.core.models.fit.placement import DevicePlacement, Placement
from rigdeck.core.models.fit.report import placement_to_json
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    d = tmp_path_factory.mktemp("fit-models")
    out = {}
    for name in (
        "llama-3.1-8b",
        "llama-3.1-70b",
        "gemma-2-9b",
        "qwen3-30b-a3b",
        "deepseek-v2-lite",
    ):
        path = write_model(Path(d) / f"{name}.gguf", name, with_tokenizer=False)
        out[name] = ModelInfo.from_header(read_gguf(path))
    return out


def machine(
    vram_gib: float | None = 24,
    ram_gib: float = 64,
    n_gpus: int = 1,
    name: str = "NVIDIA GeForce RTX 4090",
) -> HardwareBudget:
    gpus = (
        ()
        if vram_gib is None
        else tuple(
            GpuBudget(i, name, int(vram_gib * GiB), int(vram_gib * GiB)) for i in range(n_gpus)
        )
    )
    return HardwareBudget(
        gpus=gpus,
        ram_total_bytes=int(ram_gib * GiB),
        ram_available_bytes=int(ram_gib * GiB),
        cpu_threads=8,
        cpu_bandwidth_bytes_per_s=50e9,
    )


def gpu_of(p: Placement, i: int = 0) -> DevicePlacement:
    return [d for d in p.devices if d.kind == "gpu"][i]


def host_of(p: Placement) -> DevicePlacement:
    return next(d for d in p.devices if d.kind == "cpu")


def test_kv_cache_is_layers_times_context_times_kv_heads(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    p = place_layers(m, machine(None), RunSettings(n_ctx=8192), 0)
    k, v = m.kv_width(0)
    assert host_of(p).kv_bytes == m.n_layer * 8192 * (k + v) * 2  # f16: 2 bytes a value
    q8 = place_layers(m, machine(None), RunSettings(n_ctx=8192, type_k="q8_0", type_v="q8_0"), 0)
    assert host_of(q8).kv_bytes == host_of(p).kv_bytes * 34 // 64  # 34 bytes per 32 values


def test_sliding_window_layers_only_keep_the_window(models: dict[str, ModelInfo]) -> None:
    m = models["gemma-2-9b"]
    s = RunSettings(n_ctx=32768)
    k, v = m.kv_width(0)
    n_swa = sum(m.swa_layers)
    window_cells = -(-(m.sliding_window + s.n_ubatch) // 256) * 256
    expected = ((m.n_layer - n_swa) * 32768 + n_swa * window_cells) * (k + v) * 2
    assert host_of(place_layers(m, machine(None), s, 0)).kv_bytes == expected
    full = place_layers(m, machine(None), RunSettings(n_ctx=32768, swa_full=True), 0)
    assert host_of(full).kv_bytes == m.n_layer * 32768 * (k + v) * 2


def test_mla_caches_one_latent_per_token(models: dict[str, ModelInfo]) -> None:
    m = models["deepseek-v2-lite"]
    p = place_layers(m, machine(None), RunSettings(n_ctx=4096), 0)
    assert host_of(p).kv_bytes == m.n_layer * 4096 * (m.kv_lora_rank + m.rope_dim) * 2


def test_everything_on_a_big_gpu_except_token_embd(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    p = fit(m, machine(24), RunSettings(n_ctx=8192))
    assert p.fits and p.verdict == "gpu" and p.gpu_layers == p.total_layers == m.n_layer + 1
    assert gpu_of(p).has_output and gpu_of(p).layers == m.n_layer
    assert host_of(p).weights_bytes == m.token_embd_bytes  # llama.cpp keeps the input on CPU
    assert gpu_of(p).other_bytes == CUDA_CONTEXT_BYTES
    assert p.suggestions == ()


def test_output_is_the_first_layer_offloaded(models: dict[str, ModelInfo]) -> None:
    # llama.cpp (load_tensors): layers from n_layer + 1 - ngl up go to the GPU, and the output
    # projection is layer n_layer, so -ngl 1 offloads just the output and -ngl n_layer all but
    # block 0.
    m = models["llama-3.1-8b"]
    s = RunSettings(n_ctx=4096)
    only_output = place_layers(m, machine(24), s, 1)
    assert gpu_of(only_output).has_output and gpu_of(only_output).layers == 0
    assert gpu_of(only_output).weights_bytes >= m.output_bytes
    all_but_one = place_layers(m, machine(24), s, m.n_layer)
    assert gpu_of(all_but_one).layers == m.n_layer - 1 and gpu_of(all_but_one).has_output
    none = place_layers(m, machine(24), s, 0)
    assert host_of(none).has_output and gpu_of(none).weights_bytes == 0


def test_partial_offload_takes_the_largest_layer_count_that_fits(
    models: dict[str, ModelInfo],
) -> None:
    m = models["llama-3.1-70b"]
    budget = machine(24, ram_gib=64)
    s = RunSettings(n_ctx=4096)
    p = fit(m, budget, s)
    assert p.fits and p.verdict == "partial" and 0 < p.gpu_layers < p.total_layers
    assert gpu_of(p).total_bytes + p.margin_bytes <= gpu_of(p).budget_bytes
    assert not place_layers(m, budget, s, p.gpu_layers + 1).fits
    assert "blocks on the GPU" in p.why


def test_two_gpus_share_the_layers(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-70b"]
    p = fit(m, machine(24, ram_gib=64, n_gpus=2), RunSettings(n_ctx=4096))
    a, b = gpu_of(p, 0), gpu_of(p, 1)
    assert a.layers and b.layers and abs(a.layers - b.layers) <= 2
    assert len(p.tensor_split) == 2 and abs(sum(p.tensor_split) - 1) < 1e-3
    one = fit(m, machine(24, ram_gib=64), RunSettings(n_ctx=4096))
    assert p.gpu_layers > one.gpu_layers


def test_moe_keeps_experts_on_the_cpu_when_that_is_faster(models: dict[str, ModelInfo]) -> None:
    m = models["qwen3-30b-a3b"]
    budget = machine(12, ram_gib=64)
    p = fit(m, budget, RunSettings(n_ctx=8192))
    assert p.fits and p.n_cpu_moe > 0 and p.gpu_layers == p.total_layers
    dense = fit(m, budget, RunSettings(n_ctx=8192, cpu_moe=0))
    assert dense.gpu_layers < dense.total_layers
    assert p.decode_tps > dense.decode_tps
    # The experts that stay behind are in RAM, the rest of every block on the GPU.
    assert host_of(p).weights_bytes >= sum(x.expert_bytes for x in m.layers[: p.n_cpu_moe])


def test_too_big_for_this_machine_says_where_and_by_how_much(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-70b"]
    p = fit(m, machine(None, ram_gib=32), RunSettings(n_ctx=4096))
    assert not p.fits and p.verdict == "none"
    assert "RAM" in p.why and "short" in p.why
    kinds = [s.kind for s in p.suggestions]
    assert "quant" in kinds and "ram" in kinds
    assert all(s.fits for s in p.suggestions)
    ram = next(s for s in p.suggestions if s.kind == "ram")
    assert ram.label.startswith("+") and "GiB RAM" in ram.label and "tok/s" in ram.label
    # Free changes come before ones that cost quality, and those before hardware.
    order = {"flash_attn": 0, "kv_cache": 1, "context": 2, "quant": 3, "ram": 4, "gpu": 4}
    assert [order[k] for k in kinds] == sorted(order[k] for k in kinds)


def test_long_context_suggestions(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    p = fit(m, machine(8, ram_gib=8), RunSettings(n_ctx=131072, flash_attn=False))
    assert not p.fits
    kinds = {s.kind for s in p.suggestions}
    assert {"flash_attn", "kv_cache", "context"} & kinds
    ctx = next(s for s in p.suggestions if s.kind == "context")
    assert ctx.settings is not None and ctx.settings.n_ctx < 131072


def test_flash_attention_shrinks_long_context_compute(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    on = place_layers(m, machine(None), RunSettings(n_ctx=32768, flash_attn=True), 0)
    off = place_layers(m, machine(None), RunSettings(n_ctx=32768, flash_attn=False), 0)
    # Without it the attention scores for a whole micro-batch over the context are materialised.
    scores = m.n_head * 32768 * 512 * 4
    assert host_of(off).compute_bytes - host_of(on).compute_bytes >= scores * 0.8


def test_quantized_v_needs_flash_attention() -> None:
    with pytest.raises(FitError):
        RunSettings(type_v="q8_0", flash_attn=False)
    RunSettings(type_v="q8_0")  # auto resolves to on


def test_speed_grows_with_offload(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    s = RunSettings(n_ctx=4096)
    speeds = [place_layers(m, machine(24), s, n).decode_tps for n in (0, 16, 33)]
    assert speeds == sorted(speeds) and speeds[-1] > 5 * speeds[0]
    fast = place_layers(m, machine(24, name="NVIDIA H100 80GB HBM3"), s, 33)
    assert fast.decode_tps > speeds[-1]


def test_hypothetical_machine_from_sizes(models: dict[str, ModelInfo]) -> None:
    budget = HardwareBudget.hypothetical(
        ram_bytes=128 * GiB, gpus=[("NVIDIA A100-SXM4-80GB", 80 * GiB)]
    )
    p = fit(models["llama-3.1-70b"], budget, RunSettings(n_ctx=8192))
    assert p.verdict == "gpu" and budget.gpus[0].bandwidth_bytes_per_s


def test_json_matches_the_cli_shape(models: dict[str, ModelInfo]) -> None:
    p = fit(models["llama-3.1-70b"], machine(None, ram_gib=16), RunSettings())
    doc = placement_to_json(p)
    assert set(doc) == {
        "fits",
        "verdict",
        "gpu_layers",
        "total_layers",
        "devices",
        "predicted",
        "why",
        "suggestions",
    }
    assert set(doc["predicted"]) == {"prompt_tps", "decode_tps"}  # type: ignore[arg-type]
    for dev in doc["devices"]:  # type: ignore[attr-defined]
        assert set(dev) == {
            "kind",
            "name",
            "budget_bytes",
            "weights_bytes",
            "kv_bytes",
            "compute_bytes",
            "other_bytes",
            "total_bytes",
        }
        assert (
            dev["total_bytes"]
            == dev["weights_bytes"] + dev["kv_bytes"] + dev["compute_bytes"] + dev["other_bytes"]
        )


def test_fit_is_pure(models: dict[str, ModelInfo]) -> None:
    m, b, s = models["gemma-2-9b"], machine(8, ram_gib=32), RunSettings(n_ctx=16384)
    assert fit(m, b, s) == fit(m, b, s)


def test_forced_layer_count_reports_whether_it_fits(models: dict[str, ModelInfo]) -> None:
    m = models["llama-3.1-8b"]
    p = fit(m, machine(4, ram_gib=32), RunSettings(gpu_layers=33))
    assert p.gpu_layers == 33 and not p.fits and "GPU 0" in p.why
