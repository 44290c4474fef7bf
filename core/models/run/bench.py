"""`rigdeck bench MODEL`: prompt (pp512) and decode (tg128) tokens/s, the way llama-bench counts.

llama-bench's method, so the figures compare with its table: random tokens, an empty KV cache
for every repetition, one untimed warm-up run per test, the prompt decoded in n_batch chunks, the
generation one token per decode, the device synchronised before the clock stops, and the mean
and standard deviation of tokens/s over the repetitions.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rigdeck.core.errors import RigdeckError, RunError
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import LoadStats, ProgressCallback, RunPlan
from rigdeck.core.models.run.session import LoadedModel

# Called with (test name, repetition done, repetitions): "pp512", 3, 5.
BenchProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchResult:
    plan: RunPlan
    n_prompt: int
    n_gen: int
    repetitions: int
    prompt_tps: float | None
    prompt_tps_stdev: float | None
    decode_tps: float | None
    decode_tps_stdev: float | None
    load: LoadStats
    run_id: int | None = None

    @property
    def prompt_test(self) -> str:
        return f"pp{self.n_prompt}"

    @property
    def decode_test(self) -> str:
        return f"tg{self.n_gen}"


def _sync(llm: Any) -> None:
    import llama_cpp.llama_cpp as lowlevel

    # GPU decodes are queued; llama-bench stops the clock only after the device is done.
    lowlevel.llama_synchronize(llm.ctx)


def _tokens(llm: Any, n: int, rng: random.Random) -> list[int]:
    n_vocab = llm.n_vocab()
    bos = llm.token_bos()
    tokens = [rng.randrange(n_vocab) for _ in range(n)]
    if tokens and bos >= 0:
        tokens[0] = bos
    return tokens


def prompt_seconds(llm: Any, tokens: list[int]) -> float:
    """Seconds to decode ``tokens`` as a prompt from an empty cache (``Llama.eval`` batches)."""
    llm.reset()  # the next eval drops the whole KV cache before decoding
    started = time.perf_counter()
    llm.eval(tokens)
    _sync(llm)
    return time.perf_counter() - started


def generation_seconds(llm: Any, tokens: list[int]) -> float:
    """Seconds to decode ``tokens`` one at a time from an empty cache, as generation does."""
    llm.reset()
    started = time.perf_counter()
    for token in tokens:
        llm.eval([token])
        _sync(llm)
    return time.perf_counter() - started


def _mean_stdev(samples: list[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    return statistics.fmean(samples), stdev


def measure(
    model: LoadedModel,
    *,
    n_prompt: int = 512,
    n_gen: int = 128,
    repetitions: int = 5,
    seed: int = 0,
    on_test: BenchProgress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[list[float], list[float]]:
    """tokens/s samples (prompt, decode) on a loaded model; each test warmed up once first.

    Runs on the llama thread, as the model's load did (see ``llama_thread``).
    """
    return LLAMA_THREAD.run(
        lambda: _measure(
            model,
            n_prompt=n_prompt,
            n_gen=n_gen,
            repetitions=repetitions,
            seed=seed,
            on_test=on_test,
            cancel=cancel,
        )
    )


def _measure(
    model: LoadedModel,
    *,
    n_prompt: int,
    n_gen: int,
    repetitions: int,
    seed: int,
    on_test: BenchProgress | None,
    cancel: threading.Event | None,
) -> tuple[list[float], list[float]]:
    llm = model.llama
    if llm is None:
        raise RunError("the model was unloaded; load it again")
    need = max(n_prompt, n_gen)
    if need >= model.n_ctx:
        raise RunError(
            f"the bench needs a context over {need} tokens, the plan has {model.n_ctx}:"
            " raise n_ctx or lower the test sizes"
        )
    rng = random.Random(seed)
    prompt_tps: list[float] = []
    decode_tps: list[float] = []
    tests = [
        (f"pp{n_prompt}", n_prompt, prompt_seconds, prompt_tps),
        (f"tg{n_gen}", n_gen, generation_seconds, decode_tps),
    ]
    for name, n, run, samples in tests:
        if n <= 0:
            continue
        run(llm, _tokens(llm, min(n, 16) if run is generation_seconds else n, rng))  # warm-up
        for i in range(repetitions):
            if cancel is not None and cancel.is_set():
                raise RunError("bench cancelled")
            seconds = run(llm, _tokens(llm, n, rng))
            samples.append(n / seconds)
            if on_test is not None:
                on_test(name, i + 1, repetitions)
    llm.reset()
    return prompt_tps, decode_tps


def bench_model(
    plan: RunPlan,
    *,
    n_prompt: int = 512,
    n_gen: int = 128,
    repetitions: int = 5,
    history: RunHistory | None = None,
    on_progress: ProgressCallback | None = None,
    on_test: BenchProgress | None = None,
    cancel: threading.Event | None = None,
) -> BenchResult:
    """Load ``plan``, measure pp/tg, unload; with ``history``, store the figures as a bench run."""
    if repetitions < 1:
        raise RunError("repetitions must be at least 1")
    with load_model(
        plan, on_progress=on_progress, cancel=cancel, history=history, kind="bench"
    ) as model:
        prompt, decode = measure(
            model,
            n_prompt=n_prompt,
            n_gen=n_gen,
            repetitions=repetitions,
            on_test=on_test,
            cancel=cancel,
        )
        load, run_id = model.load_stats, model.run_id
    pp, pp_sd = _mean_stdev(prompt)
    tg, tg_sd = _mean_stdev(decode)
    if history is not None and run_id is not None:
        try:
            history.update_speed(run_id, prompt_tps=pp, decode_tps=tg)
        except RigdeckError:
            pass  # the figures are still returned; only the record is lost
    return BenchResult(
        plan=plan,
        n_prompt=n_prompt,
        n_gen=n_gen,
        repetitions=repetitions,
        prompt_tps=pp,
        prompt_tps_stdev=pp_sd,
        decode_tps=tg,
        decode_tps_stdev=tg_sd,
        load=load,
        run_id=run_id,
    )
