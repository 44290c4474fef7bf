"""The cheapest changes that would make a model fit, or fit better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import GpuBudget, HardwareBudget
from rigdeck.core.models.fit.layout import resolve_run, search
from rigdeck.core.models.fit.placement import Placement, Suggestion
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.fit.why import gib
from rigdeck.core.models.format.model_info import LayerWeights, ModelInfo

MiB = 1 << 20
GiB = 1 << 30


# Bits per weight of whole quantized models, for "smaller quant" suggestions.
QUANT_LADDER: tuple[tuple[str, float], ...] = (
    ("Q8_0", 8.5),
    ("Q6_K", 6.56),
    ("Q5_K_M", 5.69),
    ("Q4_K_M", 4.89),
    ("IQ4_XS", 4.46),
    ("Q3_K_M", 3.91),
    ("IQ3_XXS", 3.21),
    ("Q2_K", 2.96),
    ("IQ2_XXS", 2.2),
)


# --------------------------------------------------------------------------------------------
# Suggestions


def _requantized(model: ModelInfo, ratio: float, label: str) -> ModelInfo:
    """The same model at another quantization: quantized weights scale with bits per weight."""

    def scale(n: int) -> int:
        return int(n * ratio)

    layers = tuple(
        LayerWeights(
            scale(x.attention_bytes),
            scale(x.ffn_bytes),
            scale(x.expert_bytes),
            scale(x.cuda_pad_bytes),
            scale(x.expert_cuda_pad_bytes),
            scale(x.largest_matrix_bytes),
            scale(x.second_matrix_bytes),
        )
        for x in model.layers
    )
    return replace(
        model,
        quant=label,
        layers=layers,
        token_embd_bytes=scale(model.token_embd_bytes),
        output_bytes=scale(model.output_bytes),
        output_cuda_pad_bytes=scale(model.output_cuda_pad_bytes),
        tensor_bytes=scale(model.tensor_bytes),
        file_size=scale(model.file_size),
    )


def _model_bpw(model: ModelInfo) -> float:
    for label, bpw in QUANT_LADDER:
        if label == model.quant.upper():
            return bpw
    return model.tensor_bytes * 8 / model.n_params if model.n_params else 16.0


def _better(base: Placement, p: Placement) -> bool:
    if not base.fits:
        return p.fits
    rank = {"none": 0, "cpu": 1, "partial": 2, "gpu": 3}
    return p.fits and (rank[p.verdict] > rank[base.verdict] or p.decode_tps > base.decode_tps * 1.2)


def _tps(p: Placement) -> str:
    return f"~{p.decode_tps:.1f} tok/s" if p.decode_tps < 10 else f"~{p.decode_tps:.0f} tok/s"


def _outcome(p: Placement) -> str:
    if p.verdict == "partial" and p.n_cpu_moe:
        where = f"all layers on GPU, experts of {p.n_cpu_moe} blocks on CPU"
    else:
        where = {
            "gpu": "all layers on GPU",
            "partial": f"{p.gpu_layers}/{p.total_layers} layers on GPU",
            "cpu": "CPU only",
        }.get(p.verdict, "does not fit")
    return f"{where}, {_tps(p)}"


def suggestions(
    model: ModelInfo, budget: HardwareBudget, settings: RunSettings, base: Placement
) -> tuple[Suggestion, ...]:
    """Cheapest changes first: settings that cost nothing, then context, quality, money."""
    out: list[Suggestion] = []
    s = settings

    def attempt(label: str, kind: str, m: ModelInfo, b: HardwareBudget, st: RunSettings) -> bool:
        try:
            p = search(m, b, resolve_run(m, st), st)
        except FitError:
            return False
        if not _better(base, p):
            return False
        out.append(
            Suggestion(
                f"{label}: {_outcome(p)}",
                kind,
                p.fits,
                p.verdict,
                p.gpu_layers,
                p.prompt_tps,
                p.decode_tps,
                st if st is not settings else None,
            )
        )
        return True

    fa_on = base.settings.flash_attn
    if not fa_on:
        attempt("flash attention on", "flash_attn", model, budget, replace(s, flash_attn=True))
    if s.type_k == "f16" or s.type_v == "f16":
        attempt(
            "q8_0 KV cache (with flash attention)",
            "kv_cache",
            model,
            budget,
            replace(s, type_k="q8_0", type_v="q8_0", flash_attn=True),
        )
    n_ctx = base.settings.n_ctx
    ctx = n_ctx // 2
    while ctx >= 2048:
        if attempt(
            f"context {ctx} (from {n_ctx})", "context", model, budget, replace(s, n_ctx=ctx)
        ):
            break
        ctx //= 2
    bpw = _model_bpw(model)
    for label, target in QUANT_LADDER:
        if target >= bpw - 0.05:
            continue
        size = gib(model.tensor_bytes * target / bpw)
        if attempt(
            f"{label} (~{target:.1f} bits/weight, {size})",
            "quant",
            _requantized(model, target / bpw, label),
            budget,
            s,
        ):
            break
    _upgrades(model, budget, s, base, attempt)
    return tuple(out[:6])


_Attempt = Callable[[str, str, ModelInfo, "HardwareBudget", RunSettings], bool]


def _upgrades(
    model: ModelInfo, budget: HardwareBudget, s: RunSettings, base: Placement, attempt: _Attempt
) -> None:
    host = next(d for d in base.devices if d.kind == "cpu")
    short_ram = host.total_bytes + s.ram_margin_bytes - host.budget_bytes
    if short_ram > 0 or (not base.fits and not budget.gpus):
        step = next((g for g in (8, 16, 32, 64, 128, 256, 512) if g * GiB >= short_ram), 1024)
        more = replace(
            budget,
            ram_total_bytes=budget.ram_total_bytes + step * GiB,
            ram_available_bytes=budget.ram_available_bytes + step * GiB,
            name=f"{budget.name} +{step} GiB RAM",
        )
        attempt(f"+{step} GiB RAM", "ram", model, more, s)
    if base.verdict != "gpu":
        # Enough VRAM for everything: the model's GPU total as if on one large card.
        probe = HardwareBudget.hypothetical(
            ram_bytes=budget.ram_available_bytes,
            gpus=[("probe", 1 << 50)],
            cpu_threads=budget.cpu_threads,
        )
        need = search(model, probe, resolve_run(model, s), s).devices[0].total_bytes
        have = sum(max(g.free_bytes - s.gpu_margin_bytes, 0) for g in budget.gpus)
        size = next(
            (
                v
                for v in (8, 12, 16, 24, 32, 48, 80, 96, 141, 192)
                if v * GiB >= need + s.gpu_margin_bytes
            ),
            None,
        )
        if size is None:
            return
        card = {
            8: "RTX 4060",
            12: "RTX 4070",
            16: "RTX 4080",
            24: "RTX 4090",
            32: "RTX 5090",
            48: "RTX A6000",
            80: "H100",
            96: "RTX PRO 6000",
            141: "H200",
            192: "B200",
        }[size]
        if have and size * GiB <= have:
            return
        upgraded = replace(
            budget,
            gpus=(GpuBudget(0, card, size * GiB, size * GiB, speed.gpu_spec(card)[0]),),
            name=f"{_article(size)} {size} GiB GPU",
        )
        attempt(f"{_article(size)} {size} GiB GPU ({card}-class)", "gpu", model, upgraded, s)


def _article(n: int) -> str:
    return "an" if str(n).startswith(("8", "11", "18")) else "a"
