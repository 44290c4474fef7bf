"""`rigdeck run`, `rigdeck serve` and `rigdeck bench`: a local model through llama.cpp.

Each loads the model the way the fit places it on this machine (core/models/launch.py), records
what it measured beside what the fit predicted in the run history, and says in one line why it
could not. Text goes to stdout, notes and stats to stderr, so `rigdeck run ... > answer.txt` keeps
only the answer.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.fit.settings import KV_CHOICES
from rigdeck.tui.cli import EXIT_ERROR, EXIT_NO, EXIT_OK, _console, fail


# -- arguments ---------------------------------------------------------------------------------
def _add_model_args(parser: argparse.ArgumentParser, *, model_optional: bool = False) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        nargs="?" if model_optional else None,
        help="a .gguf path, 'demo', or a name matched against local models",
    )
    parser.add_argument("--ctx", type=int, metavar="N", help="context length (default: config)")
    parser.add_argument(
        "--kv",
        choices=KV_CHOICES,
        help="KV cache type for K and V; with flash attention off V stays f16",
    )
    parser.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flash attention (default: config, auto)",
    )
    parser.add_argument(
        "--ngl",
        type=int,
        metavar="N",
        help="force N GPU layers (default: as many as the fit places)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for generation and prompts (default: config, else one per physical"
        " core for generation and every core for prompts, as llama.cpp)",
    )
    parser.add_argument("--seed", type=int, help="sampling seed (default: random)")
    parser.add_argument(
        "--force", action="store_true", help="load even when the fit says it does not fit"
    )


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run a local GGUF on a prompt")
    _add_model_args(run)
    run.add_argument("--prompt", metavar="TEXT", help="the prompt; '-' reads it from stdin")
    run.add_argument(
        "-n",
        "--max-tokens",
        type=int,
        default=256,
        metavar="N",
        help="generate at most N tokens (default 256)",
    )
    run.add_argument("--system", metavar="TEXT", help="system prompt")
    run.add_argument("--temp", type=float, default=0.7, help="temperature; 0 is greedy")
    run.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (text, speed, memory) instead of streaming",
    )

    serve = sub.add_parser("serve", help="an OpenAI-compatible endpoint for a local GGUF")
    _add_model_args(serve)
    serve.add_argument("--port", type=int, help="port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")

    bench = sub.add_parser("bench", help="prompt and decode tokens/s, llama-bench style")
    _add_model_args(bench, model_optional=True)
    bench.add_argument(
        "-p",
        "--n-prompt",
        type=int,
        default=512,
        metavar="N",
        help="prompt tokens per test (default 512)",
    )
    bench.add_argument(
        "-n",
        "--n-gen",
        type=int,
        default=128,
        metavar="N",
        help="generated tokens per test (default 128)",
    )
    bench.add_argument(
        "-r",
        "--repetitions",
        type=int,
        default=5,
        metavar="N",
        help="repetitions per test (default 5)",
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--calibrate",
        action="store_true",
        help="measure this machine's llama.cpp rates again (the demo model, a few seconds)",
    )
    from rigdeck.tui.cli_cost import add_bench_flags

    add_bench_flags(bench)


# -- shared ------------------------------------------------------------------------------------
def _note(text: str) -> None:
    _console(stderr=True).print(f"[dim]{text}[/]", markup=True)


def _launch(args: argparse.Namespace, settings: Any) -> Any:
    """The fitted launch, or a RigdeckError; None (after saying why) when it does not fit."""
    from rigdeck.core.models import launch

    path = launch.resolve_model(args.model, settings.models.dirs)
    run_settings = launch.build_run_settings(
        settings.models,
        ctx=args.ctx,
        kv=args.kv,
        flash=args.flash_attn,
        gpu_layers=args.ngl,
        threads=args.threads,
    )
    budget = launch.machine_budget(threads=args.threads)
    from rigdeck.core.models.run.history import RunHistory

    planned = launch.plan_launch(path, run_settings, budget, seed=args.seed, history=RunHistory())
    if not planned.fits and not args.force:
        from rigdeck.core.models.fit.why import shortfall_line

        short = planned.placement.shortfalls
        why = "; ".join(shortfall_line(f) for f in short) or "not enough memory"
        _console(stderr=True).print(
            f"[yellow]rigdeck: {path.name} does not fit this machine: {why}"
            " (--force to try anyway)[/]",
            markup=True,
        )
        return None
    return planned


def _gpu_layers(planned: Any) -> int:
    """The plan's GPU layer count as a number (the plan says -1 for "all")."""
    plan = planned.plan
    layers: int = planned.placement.total_layers if plan.gpu_layers < 0 else plan.gpu_layers
    return layers


def _load_failed(exc: Any, command: str, model: str) -> int:
    """One line: why the load failed, and the next placement down to try.

    A smaller placement cannot mend a corrupt file or an unknown architecture: none is offered.
    """
    from rigdeck.core.models.run.retry import next_placement_down

    retry = next_placement_down(exc)
    if retry is None:
        return fail(str(exc))
    step = retry.plan
    flags = (
        f"--ngl {max(step.gpu_layers, 0)} --ctx {step.n_ctx}"
        if step.gpu_layers >= 0
        else f"--ctx {step.n_ctx}"
    )
    text = str(exc) if retry.named_in_error else f"{exc}; try {step.describe()}"
    return fail(f"{text} (rigdeck {command} {model} {flags} --force)")


def _measured_vram(stats: Any) -> int | None:
    if stats.gpu_bytes is not None:
        return int(stats.gpu_bytes)
    return stats.device_buffer_bytes or None


def _comparison(planned: Any, stats: Any) -> Any:
    """The fit's buffers against llama.cpp's, with this process's peak RSS beside them."""
    from rigdeck.core.models.run.memory import compare_memory, peak_rss_bytes

    return compare_memory(
        dict(planned.plan.predicted_buffers),
        stats.llama_buffers,
        peak_rss_bytes=peak_rss_bytes(),
        rss_growth_bytes=stats.host_rss_delta_bytes,
    )


def _memory(planned: Any, stats: Any) -> dict[str, Any]:
    from rigdeck.tui.words import RSS_NOTE

    plan = planned.plan
    return {
        "predicted": {"vram": plan.predicted_vram_bytes, "ram": plan.predicted_ram_bytes},
        "measured": {"vram": _measured_vram(stats), "ram": stats.host_rss_delta_bytes},
        "llama_buffers": dict(stats.llama_buffers),
        "like_for_like": _comparison(planned, stats).to_json(),
        "rss_note": RSS_NOTE,
    }


def _memory_note(planned: Any, stats: Any) -> None:
    from rigdeck.tui.words import memory_comparison_line

    _note(memory_comparison_line(_comparison(planned, stats)))


def _tps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _size(n: int | None) -> str:
    from rigdeck.core.units import format_bytes

    return "n/a" if n is None else format_bytes(n)


def _describe_placement(planned: Any) -> str:
    p = planned.placement
    layers = f"{_gpu_layers(planned)}/{p.total_layers} layers on GPU" if p.gpu_layers else "CPU"
    moe = f", experts of {p.n_cpu_moe} blocks on CPU" if p.n_cpu_moe else ""
    return (
        f"{planned.path.name}: {layers}{moe}, context {planned.plan.n_ctx},"
        f" predicted {_tps(p.decode_tps or None)} tok/s"
    )


# -- run ---------------------------------------------------------------------------------------
def _prompt(args: argparse.Namespace) -> str:
    if args.prompt == "-" or (args.prompt is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
    elif args.prompt is None:
        raise RigdeckError("no prompt: pass --prompt TEXT, or --prompt - to read stdin")
    else:
        text = args.prompt
    if not text.strip():
        raise RigdeckError("the prompt is empty: pass --prompt TEXT")
    return text


def cmd_run(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.models.run.history import RunHistory
    from rigdeck.core.models.run.loader import load_model
    from rigdeck.core.models.run.plan import ChatMessage, LoadError, Sampling

    if args.max_tokens < 1:
        raise RigdeckError(f"-n must be at least 1, not {args.max_tokens}")
    prompt = _prompt(args)
    planned = _launch(args, settings)
    if planned is None:
        return EXIT_NO
    if not args.json:
        _note(f"loading {_describe_placement(planned)}")
    from rigdeck.tui.cli_cost import energy_line, record_energy, start_meter

    meter = start_meter(settings)  # the load draws power too: metered from here
    try:
        model = load_model(planned.plan, history=RunHistory(), kind="run")
    except LoadError as exc:
        if meter is not None:
            meter.stop()
        return _load_failed(exc, args.command, args.model)
    messages = [ChatMessage("system", args.system)] if args.system else []
    messages.append(ChatMessage("user", prompt))
    sampling = Sampling(temperature=args.temp, max_tokens=args.max_tokens, seed=args.seed)
    with model:
        generation = model.generate(messages, sampling)
        try:
            for piece in generation:
                if not args.json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        finally:
            generation.close()
        stats = generation.stats
        load = model.load_stats
        run_id = model.run_id
    assert stats is not None
    energy = record_energy(meter, "run", run_id, planned.path.name, settings)
    if args.json:
        data = _run_json(planned, generation.text, stats, load, run_id)
        print(json.dumps({**data, "energy": energy}, indent=2))
        return EXIT_OK
    print()
    p = planned.plan
    _note(
        f"{stats.decode_tokens} tokens ({stats.finish_reason}), prompt {_tps(stats.prompt_tps)}"
        f" tok/s (predicted {_tps(p.predicted_prompt_tps)}), decode {_tps(stats.decode_tps)} tok/s"
        f" (predicted {_tps(p.predicted_decode_tps)}), load {load.load_seconds:.2f} s,"
        f" RAM {_size(load.host_rss_delta_bytes)} (predicted {_size(p.predicted_ram_bytes)}),"
        f" VRAM {_size(_measured_vram(load))} (predicted {_size(p.predicted_vram_bytes)})"
    )
    _memory_note(planned, load)
    if (line := energy_line(energy)) is not None:
        _note(line)
    return EXIT_OK


def _run_json(planned: Any, text: str, stats: Any, load: Any, run_id: int | None) -> dict[str, Any]:
    plan, placement = planned.plan, planned.placement
    return {
        "model": str(planned.path),
        "name": planned.model.name,
        "text": text,
        "tokens": stats.decode_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "finish_reason": stats.finish_reason,
        "load_s": load.load_seconds,
        "prompt_tps": stats.prompt_tps,
        "decode_tps": stats.decode_tps,
        "time_to_first_token_s": stats.time_to_first_token_s,
        "gpu_layers": _gpu_layers(planned),
        "total_layers": placement.total_layers,
        "n_cpu_moe": plan.n_cpu_moe,
        "memory": _memory(planned, load),
        "predicted": {
            "fits": placement.fits,
            "verdict": placement.verdict,
            "prompt_tps": plan.predicted_prompt_tps,
            "decode_tps": plan.predicted_decode_tps,
        },
        "settings": plan.settings(),
        "run_id": run_id,
    }


# -- serve -------------------------------------------------------------------------------------
def _record_served(planned: Any, handle: Any, ready_s: float) -> int | None:
    """The served run in the history: the server process's memory once ready, beside the fit's."""
    from rigdeck.core.models.run.run_record import record_served

    try:
        return record_served(planned.plan, handle.pid, ready_s)
    except RigdeckError as exc:  # serving matters more than the record of it
        _note(f"could not record the run: {exc}")
        return None


def _server_gaps(planned: Any) -> list[str]:
    """Where llama-cpp-python's server cannot load the plan as the fit placed it."""
    from rigdeck.core.models.run.serve_limits import serve_limitations
    from rigdeck.tui import words

    gaps = serve_limitations(planned.plan, has_swa=planned.model.has_swa)
    return [words.serve_limitation(gap) for gap in gaps]


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace, settings: Any) -> int:
    from urllib.parse import urlsplit

    from rigdeck.core.models.run.serve import port_in_use, start_server

    planned = _launch(args, settings)
    if planned is None:
        return EXIT_NO
    _note(f"starting {_describe_placement(planned)}")
    for gap in _server_gaps(planned):
        _console(stderr=True).print(f"[yellow]rigdeck: {gap}[/]", markup=True)
    # `kill` (SIGTERM) stops the server as cleanly as Ctrl+C does, port and memory freed.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    handle = None
    try:
        started = time.monotonic()
        handle = start_server(planned.plan, host=args.host, port=args.port)
        _record_served(planned, handle, time.monotonic() - started)
        console = _console()
        console.print(f"[bold]serving {handle.model_alias}[/] at {handle.url}", markup=True)
        body = json.dumps(
            {"model": handle.model_alias, "messages": [{"role": "user", "content": "Say hi"}]}
        )
        console.print(
            f"curl {handle.url}/chat/completions -H 'Content-Type: application/json' -d '{body}'",
            markup=False,
        )
        _note("Ctrl+C stops it")
        sys.stdout.flush()
        while handle.running:
            time.sleep(0.5)  # waiting for Ctrl+C; the loop also notices a server that died
        return fail(
            f"the server for {planned.path.name} exited on its own (log: {handle.log_path})"
        )
    except KeyboardInterrupt:
        if handle is not None:
            handle.stop()
            port = urlsplit(handle.url).port or 0
            state = "still in use" if port_in_use(args.host, port) else "free"
            _note(f"stopped; port {port} is {state}")
        return EXIT_OK
    finally:
        if handle is not None and handle.running:
            handle.stop()
        signal.signal(signal.SIGTERM, previous)


# -- bench -------------------------------------------------------------------------------------
def _params_label(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _backend() -> str:
    from rigdeck.core.machine import fingerprint

    gpu = [b for b in fingerprint().llama_backends if b.upper() not in ("CPU", "CPU_REPACK")]
    return ",".join(gpu) if gpu and fingerprint().gpu_offload else "CPU"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A Markdown table, as llama-bench prints: readable in a terminal, pasteable in an issue."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join("-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths))
        + " |"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def cmd_bench(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.models.run.bench import bench_model
    from rigdeck.core.models.run.history import RunHistory
    from rigdeck.core.models.run.plan import LoadError

    if args.machine:
        from rigdeck.tui.cli_cost import cmd_bench_machine

        return cmd_bench_machine(args, settings)
    if args.calibrate:
        from rigdeck.tui.cli_calibrate import cmd_calibrate

        return cmd_calibrate(args)
    if args.model is None:
        raise RigdeckError(
            "name a model to benchmark (a .gguf path, 'demo', a name), --machine or --calibrate"
        )
    for flag, value, low in (
        ("-p", args.n_prompt, 0),
        ("-n", args.n_gen, 0),
        ("-r", args.repetitions, 1),
    ):
        if value < low:
            raise RigdeckError(f"{flag} must be at least {low}, not {value}")
    if args.n_prompt == 0 and args.n_gen == 0:
        raise RigdeckError("nothing to measure: -p and -n are both 0")
    planned = _launch(args, settings)
    if planned is None:
        return EXIT_NO
    tty = sys.stderr.isatty() and not args.json
    if not args.json:
        _note(f"benchmarking {_describe_placement(planned)}")

    def on_test(name: str, done: int, total: int) -> None:
        if tty:
            sys.stderr.write(f"\r{name}: {done}/{total}")
            sys.stderr.flush()

    from rigdeck.tui.cli_cost import energy_line, record_energy, start_meter

    meter = start_meter(settings)
    try:
        result = bench_model(
            planned.plan,
            n_prompt=args.n_prompt,
            n_gen=args.n_gen,
            repetitions=args.repetitions,
            history=RunHistory(),
            on_test=on_test,
        )
    except LoadError as exc:
        if meter is not None:
            meter.stop()
        return _load_failed(exc, args.command, args.model)
    finally:
        if tty:
            sys.stderr.write("\r\033[K")
    energy = record_energy(meter, "bench", result.run_id, planned.path.name, settings)
    tests = _bench_tests(planned, result)
    if args.json:
        print(json.dumps({**_bench_json(planned, result, tests), "energy": energy}, indent=2))
        return EXIT_OK
    if (line := energy_line(energy)) is not None:
        _note(line)
    _memory_note(planned, result.load)
    info = planned.model
    from rigdeck.core.units import format_bytes

    common = [
        f"{info.architecture} {_params_label(info.n_params)} {info.quant}",
        format_bytes(info.file_size),
        _params_label(info.n_params),
        _backend(),
        str(planned.plan.gpu_layers),
    ]
    rows = [
        [
            *common,
            t["test"],
            f"{t['tps']:.2f} ± {t['stdev']:.2f}",
            "n/a" if t["predicted_tps"] is None else f"{t['predicted_tps']:.2f}",
        ]
        for t in tests
    ]
    headers = ["model", "size", "params", "backend", "ngl", "test", "t/s", "predicted t/s"]
    print(_table(headers, rows, right={1, 2, 4, 5, 6, 7}))
    from rigdeck.tui.cli_calibrate import drift_note

    if (hint := drift_note(planned.plan.gpu_layers, tests)) is not None:
        _note(hint)
    return EXIT_OK


def _bench_tests(planned: Any, result: Any) -> list[dict[str, Any]]:
    plan = planned.plan
    tests = []
    for name, tps, stdev, predicted in (
        (result.prompt_test, result.prompt_tps, result.prompt_tps_stdev, plan.predicted_prompt_tps),
        (result.decode_test, result.decode_tps, result.decode_tps_stdev, plan.predicted_decode_tps),
    ):
        if tps is not None:
            tests.append(
                {"test": name, "tps": tps, "stdev": stdev or 0.0, "predicted_tps": predicted}
            )
    return tests


def _bench_json(planned: Any, result: Any, tests: list[dict[str, Any]]) -> dict[str, Any]:
    info = planned.model
    return {
        "model": str(planned.path),
        "name": info.name,
        "architecture": info.architecture,
        "quant": info.quant,
        "size_bytes": info.file_size,
        "params": info.n_params,
        "backend": _backend(),
        "gpu_layers": _gpu_layers(planned),
        "n_prompt": result.n_prompt,
        "n_gen": result.n_gen,
        "repetitions": result.repetitions,
        "load_s": result.load.load_seconds,
        "prompt_tps": result.prompt_tps,
        "prompt_tps_stdev": result.prompt_tps_stdev,
        "decode_tps": result.decode_tps,
        "decode_tps_stdev": result.decode_tps_stdev,
        "tests": tests,
        "memory": _memory(planned, result.load),
        "predicted": {
            "fits": planned.placement.fits,
            "prompt_tps": planned.plan.predicted_prompt_tps,
            "decode_tps": planned.plan.predicted_decode_tps,
        },
        "settings": planned.plan.settings(),
        "run_id": result.run_id,
    }


HANDLERS = {"run": cmd_run, "serve": cmd_serve, "bench": cmd_bench}

__all__ = ["EXIT_ERROR", "HANDLERS", "add_parsers"]
