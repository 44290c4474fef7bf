"""How values read on screen and in the CLI: sizes, tokens/s, verdicts, settings, money, time.

Core returns numbers and enums; every face words them here, so one figure reads the same in the
models pane, the chat pane and every `rigdeck` command. Sizes are binary and labelled so
(GiB, MiB): a "24 GB" card is 24 GiB, and that is what rigdeck shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rigdeck.core.units import format_bytes

if TYPE_CHECKING:
    from rigdeck.core.models.browser import FittedRow
    from rigdeck.core.models.fit.budget import HardwareBudget
    from rigdeck.core.models.fit.placement import Placement
    from rigdeck.core.models.fit.settings import RunSettings
    from rigdeck.core.models.run.history import RunRecord
    from rigdeck.core.models.run.memory import MemoryComparison
    from rigdeck.core.models.run.serve_limits import ServeLimitation

MISSING = "-"

_SHORT_VERDICT = {"gpu": "GPU", "partial": "partial", "cpu": "CPU only", "none": "no fit"}


# -- sizes and rates ---------------------------------------------------------------------------
def size(n: int | float | None, *, missing: str = MISSING) -> str:
    """``9.6 GiB``, ``300.0 MiB``, ``512 B``; ``missing`` for None."""
    return missing if n is None else format_bytes(n)


def size_pair(used: int | None, total: int | None) -> str:
    """Used of total, one unit for both: ``9.3/10.0 GiB`` (N/A for an unknown figure)."""
    gib = 1 << 30

    def one(n: int | None) -> str:
        return "N/A" if n is None else f"{n / gib:.1f}"

    return f"{one(used)}/{one(total)} GiB"


def rate(bytes_per_s: float | None) -> str:
    """A transfer rate: ``12.3 MiB/s``; N/A when unknown."""
    return "N/A" if bytes_per_s is None else f"{format_bytes(bytes_per_s)}/s"


def tps(value: float | None, *, missing: str = MISSING) -> str:
    """Tokens per second: one decimal below 10 (``7.2``), whole above (``38``)."""
    if not value or value <= 0:
        return missing
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


# -- settings ----------------------------------------------------------------------------------
def tokens(n: int) -> str:
    """A token count as a context size: ``4k`` for 4096, else the number."""
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def context(n_ctx: int) -> str:
    """The context a user chose: ``model max`` for 0 (the model's training context)."""
    return "model max" if n_ctx == 0 else tokens(n_ctx)


def kv(settings: RunSettings, *, short: bool = False) -> str:
    """The KV cache types: ``q8_0``, or ``K q8_0, V f16 (a quantized V needs flash attention)``.

    ``short`` leaves the reason out, for a one-line control that says it elsewhere.
    """
    if settings.v_fallback:
        reason = "" if short else " (a quantized V needs flash attention)"
        return f"K {settings.type_k}, V f16{reason}"
    if settings.type_k == settings.type_v:
        return settings.type_k
    return f"K {settings.type_k}, V {settings.type_v}"


def flash(settings: RunSettings, *, resolved: bool = False) -> str:
    """Flash attention as chosen (auto, on, off); ``resolved`` adds what auto means here."""
    if resolved and settings.flash_attn is None:
        return "auto (on)"
    return settings.flash


# -- verdicts ----------------------------------------------------------------------------------
def verdict_short(p: Placement) -> str:
    """One word or two for a table cell: GPU, partial, CPU only, no fit."""
    return _SHORT_VERDICT[p.verdict] if p.fits else "no fit"


def verdict(p: Placement) -> str:
    """Where the model runs, in a few words: ``12 of 33 layers``, ``all on GPU``."""
    if not p.fits:
        return "does not fit"
    if p.verdict == "gpu":
        return "all on GPU"
    if p.verdict == "cpu":
        return "CPU only"
    if p.n_cpu_moe:
        return f"GPU, {p.n_cpu_moe} MoE on CPU"
    return f"{p.gpu_layers} of {p.total_layers} layers"


def verdict_sentence(p: Placement) -> str:
    """The same as a sentence for the CLI: ``all 33 layers on the GPU``."""
    if not p.fits:
        return "does not fit"
    if p.verdict == "gpu":
        return f"all {p.total_layers} layers on the GPU"
    if p.verdict == "cpu":
        return "CPU only"
    if p.n_cpu_moe:
        return f"{p.gpu_layers}/{p.total_layers} layers on GPU, experts of {p.n_cpu_moe} on CPU"
    return f"{p.gpu_layers}/{p.total_layers} layers on the GPU"


# -- machines and runs -------------------------------------------------------------------------
def budget_line(budget: HardwareBudget) -> str:
    """``GPU 0 RTX 4090 23.1 GiB free of 24.0 GiB · RAM 50.0 GiB available of 64.0 GiB · 8 CPU
    threads``."""
    gpus = (
        ", ".join(
            f"GPU {g.index} {g.name} {size(g.free_bytes)} free of {size(g.total_bytes)}"
            for g in budget.gpus
        )
        or "no GPU"
    )
    return (
        f"{gpus} · RAM {size(budget.ram_available_bytes)} available of "
        f"{size(budget.ram_total_bytes)} · {budget.cpu_threads} CPU threads"
    )


RSS_NOTE = (
    "RSS counts the model file's pages read through the memory map (page cache, shared and"
    " given back under pressure), repacked weight copies and the process itself: not a buffer"
    " the fit predicts"
)


def memory_comparison_line(cmp: MemoryComparison) -> str:
    """``llama.cpp allocated 231 MiB (predicted 229 MiB): weights 92 MiB/92 MiB, ...; peak RSS
    ...`` with the word on what RSS is."""
    parts = []
    for key in cmp.keys:
        got, want = cmp.reported.get(key, 0), cmp.predicted.get(key, 0)
        parts.append(f"{key} {size(got)} (predicted {size(want)})")
    line = (
        f"llama.cpp allocated {size(cmp.reported_total)} (predicted {size(cmp.predicted_total)})"
        + (": " + ", ".join(parts) if parts else "")
    )
    if cmp.repacked_bytes:
        line += f"; {size(cmp.repacked_bytes)} of weights repacked for the CPU's matmuls"
    if cmp.peak_rss_bytes is not None:
        line += f". Peak RSS {size(cmp.peak_rss_bytes)}: {RSS_NOTE}"
    return line


def last_run_summary(run: RunRecord) -> str:
    """``predicted 5.1 GiB / llama.cpp 5.0 GiB, 38 tok/s (predicted 41)`` for one recorded run.

    Memory is the fit's buffers against the buffers llama.cpp reported, like for like, where the
    run recorded both; older records compare VRAM (a GPU run) or host RSS growth (a CPU run).
    """
    parts = []
    if run.predicted_buffers and run.llama_buffers:
        from rigdeck.core.models.run.memory import compare_memory

        cmp = compare_memory(run.predicted_buffers, run.llama_buffers)
        parts.append(
            f"predicted {size(cmp.predicted_total)} / llama.cpp {size(cmp.reported_total)}"
        )
        return _speed_part(run, parts)
    on_gpu = run.measured_vram_bytes is not None and (run.predicted_vram_bytes or 0) > 0
    if on_gpu:
        parts.append(
            f"predicted {size(run.predicted_vram_bytes)} / measured {size(run.measured_vram_bytes)}"
        )
    elif run.measured_ram_bytes is not None:
        parts.append(
            f"predicted {size(run.predicted_ram_bytes)} / measured {size(run.measured_ram_bytes)}"
            " RAM"
        )
    return _speed_part(run, parts)


def _speed_part(run: RunRecord, parts: list[str]) -> str:
    if run.measured_decode_tps:
        speed = f"{tps(run.measured_decode_tps)} tok/s"
        if run.predicted_decode_tps:
            speed += f" (predicted {tps(run.predicted_decode_tps)})"
        parts.append(speed)
    return ", ".join(parts) or "nothing measured"


def last_run_line(run: RunRecord) -> str:
    """The summary with the settings the run used, which may differ from the pane's."""
    s = run.settings
    ctx = s.get("n_ctx")
    ctx_text = tokens(ctx) if isinstance(ctx, int) and ctx else "model max"
    return f"last run (ctx {ctx_text}, KV {s.get('type_k', '?')}): {last_run_summary(run)}"


def serve_limitation(gap: ServeLimitation) -> str:
    """How `rigdeck serve` and the chat pane's serve warn that the server departs from the fit."""
    if gap.kind == "experts-on-gpu":
        return (
            f"the server cannot keep MoE experts on the CPU: the experts of {gap.n_cpu_moe}"
            " blocks the fit kept there go to the GPU; lower --ngl if it runs out of GPU memory"
        )
    return (
        "the server allocates a full-size sliding-window cache: more memory than"
        " predicted; lower --ctx if it runs out"
    )


# -- money and time ----------------------------------------------------------------------------
def money(usd: float | None, *, missing: str = MISSING) -> str:
    """Dollars with cents: ``$1.23``, ``-$0.50``; below a cent, ``$0.004``."""
    if usd is None:
        return missing
    sign = "-" if usd < 0 else ""
    value = abs(usd)
    if 0 < value < 0.01:
        return f"{sign}${value:.3f}"
    return f"{sign}${value:,.2f}"


def duration(seconds: float) -> str:
    """An uptime-like duration: ``3d 4h``, ``5h 12m``, ``7m 3s``."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s"


def row_verdict(fitted: FittedRow) -> str:
    """A models-pane row's verdict: the placement's, or why there is none."""
    if fitted.verdict == "error":
        return "unreadable"
    if fitted.verdict == "unread" or fitted.placement is None:
        return "header not read"
    return verdict(fitted.placement)
