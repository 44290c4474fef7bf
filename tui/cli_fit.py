"""`rigdeck fit`: will this model fit this machine (or one described by sizes)?

Exit codes: 0 fits (for a whole repo: at least one file fits), 1 does not fit, 2 error.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from rigdeck.core.errors import FitError, RigdeckError
from rigdeck.core.models.fit.settings import KV_CHOICES
from rigdeck.tui import words

if TYPE_CHECKING:
    from rigdeck.core.models.fit.budget import HardwareBudget
    from rigdeck.core.models.fit.placement import Placement
    from rigdeck.core.models.fit.report import FitResult
    from rigdeck.core.models.sources.target import FailedModel, Target

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2
VERDICT_STYLE = {
    "gpu": "bold green",
    "partial": "bold yellow",
    "cpu": "bold cyan",
    "none": "bold red",
}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a GGUF (file or hf:REPO[/FILE]) to this machine",
        description="Predict where a GGUF model's layers go, the VRAM and RAM it needs and its "
        "tokens/s, from its header alone (a Hub model is not downloaded). "
        "Exit 0: fits; 1: does not fit; 2: error.",
    )
    p.add_argument(
        "target",
        metavar="PATH|hf:REPO[/FILE]",
        help="a local .gguf (any split part), 'demo', a local model's name, "
        "hf:OWNER/NAME/FILE.gguf, hf:OWNER/NAME:QUANT, or hf:OWNER/NAME for every quantization",
    )
    p.add_argument(
        "--ctx",
        type=int,
        metavar="N",
        help="context length in tokens; 0: the model's training context "
        "(default: models.context from the config, 4096)",
    )
    p.add_argument(
        "--kv",
        choices=KV_CHOICES,
        help="KV cache type for K and V; with flash attention off V stays f16 "
        "(default: models.kv_type, f16)",
    )
    p.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flash attention on or off (default: models.flash_attn, auto = on)",
    )
    p.add_argument(
        "--vram",
        metavar="SIZE[,SIZE]",
        help="a hypothetical GPU per size, all free (24G or 24G,24G); 0: no GPU. "
        "Without it: this machine's GPUs and their free VRAM",
    )
    p.add_argument(
        "--ram",
        metavar="SIZE",
        help="hypothetical RAM, all available (64G). Without it: this machine's available RAM",
    )
    p.add_argument(
        "--gpu",
        metavar="NAME",
        help="the card --vram stands for, for its bandwidth (e.g. 'RTX 4090')",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for generation and prompts (default: one per physical core)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_fit(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.models.fit.report import fit_all
    from rigdeck.core.models.fit.settings import build_run_settings
    from rigdeck.core.models.sources.target import FailedModel, parse_target, resolve, total_cost

    if args.ctx is not None and args.ctx < 0:
        raise FitError(f"--ctx {args.ctx}: a context length is 0 (the model's own) or more")
    if args.threads is not None and args.threads < 1:
        raise FitError(f"--threads {args.threads}: use 1 or more")
    target = _local_name(parse_target(args.target), settings)
    if target.is_remote:
        _quiet_hub()
    # Cheap checks first: a typo in a flag must not cost a Hub round trip.
    run = build_run_settings(
        getattr(settings, "models", None), ctx=args.ctx, kv=args.kv, flash=args.flash_attn
    )
    vram, ram = _sizes(args)
    models = resolve(target)
    budget, gpu_status = _budget(vram, ram, args, quiet=args.json)
    results = fit_all(models, budget, run)
    fitted = [r for r in results if not isinstance(r, FailedModel)]
    if not fitted:
        # Only reachable for a repo: a single file's failure has raised already.
        first = results[0]
        assert isinstance(first, FailedModel)
        raise FitError(f"no file in {target.repo_id} could be read; {first.label}: {first.error}")
    hypo = {"hypothetical_vram": vram is not None, "hypothetical_ram": ram is not None}
    if args.json:
        print(json.dumps(_json(target, results, budget, hypo, total_cost(models)), indent=2))
    else:
        _print(target, results, budget, hypo, total_cost(models), gpu_status, args, run.flash_attn)
    return EXIT_OK if any(r.placement.fits for r in fitted) else EXIT_NO


HANDLERS = {"fit": cmd_fit}


# --------------------------------------------------------------------------------------------
# Inputs


def _local_name(target: Target, settings: Any) -> Target:
    """``demo`` or a local model's name, found the way `rigdeck run` finds it; paths stay paths.

    A missing path keeps its own error (and its hint for a Hub name without ``hf:``).
    """
    from dataclasses import replace

    from rigdeck.core.models import launch

    text = target.text
    if target.path is None or target.path.exists() or "/" in text or os.sep in text:
        return target
    if text.lower().endswith(".gguf") or text.startswith("~"):
        return target
    dirs = getattr(getattr(settings, "models", None), "dirs", ())
    return replace(target, path=launch.resolve_model(text, dirs))


def _quiet_hub() -> None:
    """Keep stderr to rigdeck's own lines: no advisory warnings or log lines from the Hub client.

    A fit reads headers only, so the client's download progress bars never start.
    """
    import logging
    import warnings

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"huggingface_hub(\..*)?")


def _sizes(args: argparse.Namespace) -> tuple[list[int] | None, int | None]:
    from rigdeck.core.models.fit.budget import parse_vram_list
    from rigdeck.core.units import parse_size

    vram = None if args.vram is None else _flag("--vram", parse_vram_list, args.vram)
    ram = None if args.ram is None else _flag("--ram", parse_size, args.ram)
    return vram, ram


def _flag(name: str, parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except RigdeckError as exc:
        raise FitError(f"{name}: {exc}") from None


def _budget(
    vram: list[int] | None, ram: int | None, args: argparse.Namespace, *, quiet: bool
) -> tuple[HardwareBudget, str]:
    """This machine from one telemetry reading, with typed sizes laid over it."""
    from rigdeck.core.models import launch
    from rigdeck.core.models.fit import speed

    snap = launch.sample_machine()
    if not quiet and not speed.default_cache_path().is_file():
        from rigdeck.tui.cli import _console

        _console(stderr=True).print(
            "[dim]measuring this CPU's memory bandwidth once (a few seconds; cached)…[/]"
        )
    budget = launch.machine_budget(
        snap, threads=args.threads, vram=vram, ram=ram, gpu_name=args.gpu
    )
    return budget, snap.gpu_status or ""


# --------------------------------------------------------------------------------------------
# JSON


def _json(
    target: Target,
    results: list[FitResult | FailedModel],
    budget: HardwareBudget,
    hypo: dict[str, bool],
    cost: Any,
) -> dict[str, Any]:
    from rigdeck.core.models.fit.report import budget_json, cost_json, failed_json, result_json
    from rigdeck.core.models.sources.target import FailedModel

    rows = [failed_json(r) if isinstance(r, FailedModel) else result_json(r) for r in results]
    machine = budget_json(budget, **hypo)
    if not target.is_repo:
        return {"target": target.text, **rows[0], "budget": machine}
    return {
        "target": target.text,
        "repo": target.repo_id,
        "revision": target.revision,
        "fits": any(r.get("fits") for r in rows),
        "budget": machine,
        "remote": cost_json(cost),
        "files": rows,
    }


# --------------------------------------------------------------------------------------------
# Human output


def _gib(n: float | None) -> str:
    return words.size(n)


def _budget_line(budget: HardwareBudget, hypo: dict[str, bool], gpu_status: str) -> str:
    if hypo["hypothetical_vram"]:
        if not budget.gpus:
            gpus = "no GPU"
        else:
            sizes = {g.total_bytes for g in budget.gpus}
            count = f"{len(budget.gpus)} × " if len(budget.gpus) > 1 else ""
            size = (
                _gib(sizes.pop())
                if len(sizes) == 1
                else " + ".join(_gib(g.total_bytes) for g in budget.gpus)
            )
            name = budget.gpus[0].name
            gpus = f"{count}{size} GPU" + ("" if name == "GPU" else f" ({name})")
    elif budget.gpus:
        gpus = ", ".join(
            f"GPU {g.index} {g.name}: {_gib(g.free_bytes)} free of {_gib(g.total_bytes)}"
            for g in budget.gpus
        )
    else:
        gpus = "no GPU" + (f" ({gpu_status})" if gpu_status else "")
    if hypo["hypothetical_ram"]:
        ram = f"{_gib(budget.ram_total_bytes)} RAM"
    else:
        ram = f"RAM {_gib(budget.ram_available_bytes)} available of {_gib(budget.ram_total_bytes)}"
    threads = f"{budget.cpu_threads} CPU thread{'s' if budget.cpu_threads != 1 else ''}"
    if hypo["hypothetical_vram"] and hypo["hypothetical_ram"]:
        return f"hypothetical: {gpus}, {ram}; {threads}"
    if hypo["hypothetical_vram"] or hypo["hypothetical_ram"]:
        return f"hypothetical: {gpus}, {ram} (the rest this machine's); {threads}"
    return f"this machine: {gpus}; {ram}; {threads}"


def _settings_line(p: Placement, requested_fa: bool | None) -> str:
    s = p.settings
    on = s.flash_attn is None or s.flash_attn
    fa = ("on" if on else "off") if requested_fa is not None else f"auto ({'on' if on else 'off'})"
    return f"context {s.n_ctx} · KV cache {words.kv(s)} · flash attention {fa}"


def _print(
    target: Target,
    results: list[FitResult | FailedModel],
    budget: HardwareBudget,
    hypo: dict[str, bool],
    cost: Any,
    gpu_status: str,
    args: argparse.Namespace,
    requested_fa: bool | None,
) -> None:
    from rigdeck.core.models.sources.target import FailedModel
    from rigdeck.tui.cli import _console

    console = _console()
    if target.is_repo:
        _print_repo(console, target, results, budget, hypo, cost, gpu_status, requested_fa)
    else:
        result = results[0]
        assert not isinstance(result, FailedModel)
        _print_one(console, result, budget, hypo, gpu_status, requested_fa)
    if (
        hypo["hypothetical_vram"]
        and budget.gpus
        and args.gpu is None
        and budget.gpus[0].bandwidth_bytes_per_s is None
    ):
        console.print(
            "[dim]speed assumes a mid-range GPU; name the card with --gpu "
            "'RTX 4090' for its bandwidth[/]"
        )


def _print_one(
    console: Any,
    r: FitResult,
    budget: HardwareBudget,
    hypo: dict[str, bool],
    gpu_status: str,
    requested_fa: bool | None,
) -> None:
    from rich.markup import escape
    from rich.table import Table

    m, p = r.model, r.placement
    info = m.info
    params = (
        f" · {info.n_params / 1e9:.1f}B params"
        if info.n_params >= 1e9
        else (f" · {info.n_params / 1e6:.0f}M params" if info.n_params else "")
    )
    console.print(
        f"[bold]{escape(info.name)}[/]  {escape(m.quant)} · {_gib(m.file_size)}"
        f" · {escape(info.architecture)}{params} · {info.n_layer} blocks"
        f"{' · MoE' if info.is_moe else ''}"
    )
    console.print(f"[dim]{escape(m.location)}[/]")
    if m.remote is not None:
        console.print(
            f"[dim]header read: {m.remote.requests} requests, "
            f"{_gib(m.remote.bytes)} of {_gib(m.file_size)} (nothing downloaded)[/]"
        )
    console.print(f"budget    {escape(_budget_line(budget, hypo, gpu_status))}")
    console.print(f"settings  {_settings_line(p, requested_fa)}")
    console.print()
    style = VERDICT_STYLE[p.verdict if p.fits else "none"]
    mark = "✓" if p.fits else "✗"
    console.print(f"[{style}]{mark} {words.verdict_sentence(p)}[/]")

    # Components down, devices across: stays narrow with one or two devices and long names.
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("")
    for d in p.devices:
        head = f"GPU {d.index}\n{d.name}" if d.kind == "gpu" else "CPU\nRAM"
        table.add_column(escape(head), justify="right")
    rows = (
        ("weights", "weights_bytes"),
        ("KV cache", "kv_bytes"),
        ("compute", "compute_bytes"),
        ("other", "other_bytes"),
    )
    for label, attr in rows:
        table.add_row(label, *(_gib(getattr(d, attr)) for d in p.devices))
    table.add_row("[bold]total[/]", *(f"[bold]{_gib(d.total_bytes)}[/]" for d in p.devices))
    table.add_row("budget", *(_gib(d.budget_bytes) for d in p.devices))
    frees = []
    for d in p.devices:
        margin = p.settings.gpu_margin_bytes if d.kind == "gpu" else p.settings.ram_margin_bytes
        free = d.free_after_bytes
        frees.append(f"[red]{_gib(free)}[/]" if free < margin else _gib(free))
    table.add_row("free after", *frees)
    console.print(table)
    console.print()
    if p.fits:
        console.print(
            f"predicted prompt ~{words.tps(p.prompt_tps)} tok/s"
            f" · decode ~{words.tps(p.decode_tps)} tok/s"
        )
    console.print(f"why       {escape(p.why)}")
    if p.suggestions:
        console.print("[bold]what would help[/] (cheapest first)")
        for i, s in enumerate(p.suggestions, 1):
            colour = VERDICT_STYLE[s.verdict if s.fits else "none"].replace("bold ", "")
            console.print(f"  {i}. [{colour}]{escape(s.label)}[/]")
    if p.notes:
        console.print("[bold]notes[/]")
        for note in p.notes:
            console.print(f"  [dim]- {escape(note)}[/]")


def _print_repo(
    console: Any,
    target: Target,
    results: list[FitResult | FailedModel],
    budget: HardwareBudget,
    hypo: dict[str, bool],
    cost: Any,
    gpu_status: str,
    requested_fa: bool | None,
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rigdeck.core.models.sources.target import FailedModel

    fitted = [r for r in results if not isinstance(r, FailedModel)]
    first = fitted[0]
    console.print(
        f"[bold]{escape(target.repo_id or '')}[/]  {escape(first.model.info.name)} · "
        f"{len(results)} file(s)"
    )
    if cost is not None:
        console.print(
            f"[dim]header reads: {cost.requests} requests, {_gib(cost.bytes)} "
            "(nothing downloaded)[/]"
        )
    console.print(f"budget    {escape(_budget_line(budget, hypo, gpu_status))}")
    console.print(f"settings  {_settings_line(first.placement, requested_fa)}")
    console.print()
    quants = [r.quant for r in results]
    show_file = len(set(quants)) < len(quants)  # two files of one quant: tell them apart
    table = Table(box=None, pad_edge=False, header_style="bold")
    cols = ["quant", "size", "verdict", "GPU layers", "VRAM", "RAM", "prompt t/s", "decode t/s"] + (
        ["file"] if show_file else []
    )
    for col in cols:
        table.add_column(col, justify="left" if col in {"quant", "verdict", "file"} else "right")
    failures = []
    for r in results:
        if isinstance(r, FailedModel):
            failures.append(r)
            table.add_row(
                escape(r.quant or "?"),
                _gib(r.file_size),
                "[red]unreadable[/]",
                *([""] * 5),
                *([escape(r.label)] if show_file else []),
            )
            continue
        p = r.placement
        style = VERDICT_STYLE[p.verdict if p.fits else "none"]
        word = words.verdict_short(p)
        table.add_row(
            escape(r.model.quant),
            _gib(r.model.file_size),
            f"[{style}]{word}[/]",
            f"{p.gpu_layers}/{p.total_layers}",
            _gib(p.gpu_bytes) if p.gpu_bytes else words.MISSING,
            _gib(p.host_bytes),
            words.tps(p.prompt_tps) if p.fits else words.MISSING,
            words.tps(p.decode_tps) if p.fits else words.MISSING,
            *([escape(r.model.label)] if show_file else []),
        )
    console.print(table)
    for f in failures:
        console.print(f"[red]{escape(f.label)}: {escape(f.error)}[/]")
    best = _best(fitted)
    if best is not None:
        console.print(
            f"\nbest here: [bold]{escape(best.model.quant)}[/] "
            f"({escape(best.model.label)}): {escape(words.verdict_sentence(best.placement))}, "
            f"~{words.tps(best.placement.decode_tps)} tok/s"
        )
    else:
        console.print(
            "\n[bold red]no file fits[/]; `rigdeck fit` on one file shows why and what would help"
        )


def _best(results: list[FitResult]) -> FitResult | None:
    """The largest file that runs wholly on the GPU; failing that, the fastest that fits."""
    on_gpu = [r for r in results if r.placement.fits and r.placement.verdict == "gpu"]
    if on_gpu:
        return max(on_gpu, key=lambda r: r.model.file_size)
    fitting = [r for r in results if r.placement.fits]
    return max(fitting, key=lambda r: r.placement.decode_tps) if fitting else None
