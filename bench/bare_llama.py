"""Bare llama-cpp-python in a process of its own, driven over stdin/stdout by bench/run.py.

The reference side of bench/run.py: what a user gets from llama-cpp-python alone, with nothing of
rigdeck imported. It lives in its own process because ggml's thread teams are per process: a
reference loaded next to rigdeck's runner would share (and suffer from) the runner's threads, and
would not be what a user of bare llama.cpp runs.

    python bench/bare_llama.py        # then JSON requests, one per line, one JSON answer each

Requests: {"op": "load", "path", "kwargs"}, {"op": "bench", "n_prompt", "n_gen", "seed"},
{"op": "chat", "prompt", "max_tokens", "sampling"}; end of input ends it.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PARAGRAPH = (
    "The lighthouse stood on a spit of black rock at the edge of the northern sea. Every evening "
    "the keeper climbed the one hundred and twelve steps, trimmed the wick, wound the clockwork "
    "that turned the great lens, and wrote the weather in a ledger that nobody ever read. "
)
CHAT_PROMPT = PARAGRAPH * 5 + "Continue this story in detail."


def pp_tps(llm: Any, tokens: list[int], lowlevel: Any) -> float:
    """Prompt tokens/s: the tokens decoded as one prompt from an empty cache, device synced."""
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    lowlevel.llama_synchronize(llm.ctx)
    return len(tokens) / (time.perf_counter() - started)


def tg_tps(llm: Any, tokens: list[int], lowlevel: Any) -> float:
    """Generation tokens/s: one token per decode from an empty cache, device synced each time."""
    llm.reset()
    started = time.perf_counter()
    for token in tokens:
        llm.eval([token])
        lowlevel.llama_synchronize(llm.ctx)
    return len(tokens) / (time.perf_counter() - started)


def random_tokens(llm: Any, n: int, rng: random.Random) -> list[int]:
    tokens = [rng.randrange(llm.n_vocab()) for _ in range(n)]
    tokens[0] = max(llm.token_bos(), 0)
    return tokens


def chat_figures(
    run: Callable[[], Iterator[str]], llm: Any, lowlevel: Any
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


def _chat_pieces(llm: Any, prompt: str, max_tokens: int, sampling: dict[str, Any]) -> Iterator[str]:
    stream = llm.create_chat_completion(
        [{"role": "user", "content": prompt}],
        **{"temperature": 0.0, **sampling},
        max_tokens=max_tokens,
        stream=True,
    )
    for chunk in stream:
        yield chunk["choices"][0]["delta"].get("content") or ""


def _serve() -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as lowlevel

    llm: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        answer: dict[str, Any] = {}
        if op == "load":
            llm = llama_cpp.Llama(
                model_path=request["path"], **{"verbose": False, **request["kwargs"]}
            )
        elif op == "bench":
            rng = random.Random(request["seed"])
            n_prompt, n_gen = request["n_prompt"], request["n_gen"]
            # The same untimed warm-up rigdeck's measure() does, so neither side is timed cold.
            pp_tps(llm, random_tokens(llm, n_prompt, rng), lowlevel)
            answer["pp"] = pp_tps(llm, random_tokens(llm, n_prompt, rng), lowlevel)
            tg_tps(llm, random_tokens(llm, min(n_gen, 16), rng), lowlevel)
            answer["tg"] = tg_tps(llm, random_tokens(llm, n_gen, rng), lowlevel)
        elif op == "chat":
            reply = functools.partial(
                _chat_pieces,
                llm,
                request["prompt"],
                request["max_tokens"],
                request.get("sampling", {}),
            )
            prompt, decode, n = chat_figures(reply, llm, lowlevel)
            answer.update(prompt=prompt, decode=decode, tokens=n)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    if llm is not None:
        llm.close()


class BareLlama:
    """The reference process: ``load`` once, then ``bench`` and ``chat`` as often as wanted."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self._child.pid

    def _ask(self, **request: Any) -> dict[str, Any]:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps(request) + "\n")
        self._child.stdin.flush()
        line = self._child.stdout.readline()
        if not line:
            code = self._child.wait()
            raise RuntimeError(f"the bare llama-cpp-python process ended (exit {code})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def load(self, path: Path, kwargs: dict[str, Any]) -> None:
        self._ask(op="load", path=str(path), kwargs=kwargs)

    def bench(self, n_prompt: int, n_gen: int, seed: int) -> tuple[float, float]:
        answer = self._ask(op="bench", n_prompt=n_prompt, n_gen=n_gen, seed=seed)
        return float(answer["pp"]), float(answer["tg"])

    def chat(
        self, prompt: str, max_tokens: int, sampling: dict[str, Any] | None = None
    ) -> tuple[float | None, float | None, int]:
        answer = self._ask(op="chat", prompt=prompt, max_tokens=max_tokens, sampling=sampling or {})
        return answer["prompt"], answer["decode"], int(answer["tokens"])

    def close(self) -> None:
        if self._child.poll() is None:
            assert self._child.stdin is not None
            self._child.stdin.close()  # the request loop ends with its input
            self._child.wait(timeout=60)


if __name__ == "__main__":
    _serve()
