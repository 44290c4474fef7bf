"""A loaded model and its replies: streaming, stop strings, cancel, chat sessions."""

from __future__ import annotations

import codecs
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from rigdeck.core.errors import RigdeckError, RunError
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_glue import llama_modules
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD
from rigdeck.core.models.run.plan import ChatMessage, GenerationStats, LoadStats, RunPlan, Sampling

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# A loaded model and its replies


def _split_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """(text safe to show, text held back as a possible stop-string start, stop string hit)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        return text[: min(hits)], "", True
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold], text[len(text) - hold :], False


class LoadedModel:
    """A model in memory. One reply at a time; ``close()`` (or ``with``) frees it."""

    def __init__(
        self,
        llm: Any,
        plan: RunPlan,
        load_stats: LoadStats,
        *,
        formatter: Any,
        history: RunHistory | None = None,
        run_id: int | None = None,
    ) -> None:
        self._llm = llm
        self._formatter = formatter
        self._busy = threading.Lock()
        self._history = history
        self._current_cancel: threading.Event | None = None
        self.plan = plan
        self.load_stats = load_stats
        self.run_id = run_id

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks); None once closed."""
        return self._llm

    @property
    def n_ctx(self) -> int:
        return int(self._live().n_ctx())

    def _live(self) -> Any:
        if self._llm is None:
            raise RunError("the model was unloaded; load it again")
        return self._llm

    def close(self) -> None:
        current = self._current_cancel
        if current is not None:
            current.set()
        with self._busy:
            llm, self._llm = self._llm, None
            if llm is not None:
                llm.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the KV cache: the next prompt is evaluated in full."""
        with self._busy:
            self._live().reset()

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        """Tokens of the messages through the model's chat template, and its stop strings."""
        llm = self._live()
        result = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        try:
            tokens = llm.tokenize(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
        except RuntimeError as exc:
            raise RunError(f"could not tokenize the prompt: {exc}") from None
        stops = result.stop if isinstance(result.stop, list) else [result.stop or ""]
        return list(tokens), [s for s in stops if s]

    def generate(
        self,
        messages: Sequence[ChatMessage],
        sampling: Sampling | None = None,
        *,
        cancel: threading.Event | None = None,
        on_finish: Callable[[str, GenerationStats], None] | None = None,
    ) -> Generation:
        """Start a reply to a conversation; iterate the result for text pieces."""
        sampling = sampling or Sampling()
        tokens, stops = self.chat_prompt(messages)
        n_ctx = self.n_ctx
        if len(tokens) >= n_ctx:
            raise ContextFull(len(tokens), n_ctx)
        max_new = min(sampling.max_tokens, n_ctx - len(tokens))
        return Generation(self, tokens, stops, sampling, max_new, cancel, on_finish)

    def _claim(self, cancel: threading.Event) -> None:
        # A stopped reply releases the model within one token; wait that long, not forever.
        if not self._busy.acquire(timeout=_CLAIM_TIMEOUT_S):
            raise RunError("a reply is already being generated; stop it first")
        if self._llm is None:
            self._busy.release()
            raise RunError("the model was unloaded; load it again")
        self._current_cancel = cancel

    def _generation_done(self, stats: GenerationStats) -> None:
        self._current_cancel = None
        self._busy.release()
        if (
            self._history is not None
            and self.run_id is not None
            and stats.finish_reason != "cancelled"
            and stats.decode_tps
        ):
            try:
                self._history.update_speed(
                    self.run_id, prompt_tps=stats.prompt_tps, decode_tps=stats.decode_tps
                )
            except RigdeckError:
                log.warning("could not record the reply's speed", exc_info=True)


_CLAIM_TIMEOUT_S = 10.0


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class Generation(Iterator[str]):
    """A reply being generated: iterate for text pieces; ``stats`` is set once it ends.

    ``cancel()`` (or setting the cancel event) stops it within one token: the event is checked
    after every token, before the next one is decoded.

    The tokens are decoded on the llama thread (see ``llama_thread``): iterating from any other
    thread starts the whole reply there at the first ``next()`` and hands the pieces over
    through a queue, so decoding never waits on the reader.
    """

    def __init__(
        self,
        model: LoadedModel,
        prompt: list[int],
        stops: list[str],
        sampling: Sampling,
        max_new: int,
        cancel: threading.Event | None,
        on_finish: Callable[[str, GenerationStats], None] | None,
    ) -> None:
        self.cancel_event = cancel or threading.Event()
        self.prompt_tokens = len(prompt)
        self.decode_tokens = 0
        self.text = ""
        self.stats: GenerationStats | None = None
        self._model = model
        self._on_finish = on_finish
        self._pieces = self._run(prompt, stops, sampling, max_new)
        self._handed: queue.SimpleQueue[object] | None = None
        self._hand_lock = threading.Lock()

    def cancel(self) -> None:
        self.cancel_event.set()

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        handed = self._handover()
        if handed is None:
            return next(self._pieces)
        item = handed.get()
        if item is _END:
            handed.put(_END)  # so every later (or concurrent) reader sees the end too
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        assert isinstance(item, str)
        return item

    def _handover(self) -> queue.SimpleQueue[object] | None:
        """The queue the llama thread puts pieces on; None on the llama thread itself."""
        with self._hand_lock:
            if self._handed is None and not LLAMA_THREAD.is_current():
                self._handed = queue.SimpleQueue()
                LLAMA_THREAD.submit(self._pump)
            return self._handed

    def _pump(self) -> None:
        handed = self._handed
        assert handed is not None
        try:
            for piece in self._pieces:
                handed.put(piece)
        except BaseException as exc:  # the reader raises it
            handed.put(_Failed(exc))
        finally:
            handed.put(_END)

    def close(self) -> None:
        """Stop and release the model now (also what abandoning the iterator does, eventually)."""
        self.cancel_event.set()
        try:
            for _ in self:
                pass
        except ValueError:  # being iterated by another thread: it sees the event within a token
            pass

    def consume(self) -> GenerationStats:
        """Run to the end, discarding pieces; return the stats."""
        for _ in self:
            pass
        assert self.stats is not None
        return self.stats

    def _run(
        self, prompt: list[int], stops: list[str], sampling: Sampling, max_new: int
    ) -> Iterator[str]:
        model = self._model
        _, lowlevel = llama_modules()
        cancel = self.cancel_event
        model._claim(cancel)
        llm = model._llm
        vocab = llm._model.vocab
        is_eog = lowlevel.llama_vocab_is_eog
        detokenize = llm.detokenize
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        finish: Literal["stop", "length", "cancelled"] = "length"
        held = ""
        started = time.monotonic()
        first_at: float | None = None
        last_at = started
        failure: BaseException | None = None
        try:
            lowlevel.llama_perf_context_reset(llm.ctx)
            seed = sampling.seed if sampling.seed is not None else model.plan.seed
            llm.set_seed(seed if seed is not None else lowlevel.LLAMA_DEFAULT_SEED)
            tokens = llm.generate(
                prompt,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                temp=sampling.temperature,
                repeat_penalty=sampling.repeat_penalty,
                reset=True,
            )
            try:
                if cancel.is_set():
                    finish = "cancelled"
                else:
                    for token in tokens:
                        if cancel.is_set():
                            finish = "cancelled"
                            break
                        if is_eog(vocab, token):
                            finish = "stop"
                            break
                        self.decode_tokens += 1
                        last_at = time.monotonic()
                        if first_at is None:
                            first_at = last_at
                        text = held + decoder.decode(detokenize([token]))
                        shown, held, hit = _split_stop(text, stops)
                        if shown:
                            self.text += shown
                            yield shown
                        if hit:
                            finish = "stop"
                            break
                        if self.decode_tokens >= max_new:
                            break
                        if cancel.is_set():  # checked again so a stop while we were away
                            finish = "cancelled"  # costs no further decode
                            break
            finally:
                tokens.close()
            tail = held + decoder.decode(b"", final=True) if finish != "stop" else ""
            if tail:
                self.text += tail
                yield tail
        except GeneratorExit:
            finish = "cancelled"
            raise
        except Exception as exc:
            failure = exc
        finally:
            stats = self._stats(lowlevel, llm, started, first_at, last_at, finish)
            self.stats = stats
            model._generation_done(stats)
            if self._on_finish is not None:
                self._on_finish(self.text, stats)
        if failure is not None:
            raise RunError(f"generation failed: {failure}") from None

    def _stats(
        self,
        lowlevel: ModuleType,
        llm: Any,
        started: float,
        first_at: float | None,
        last_at: float,
        finish: Literal["stop", "length", "cancelled"],
    ) -> GenerationStats:
        total = time.monotonic() - started
        n = self.decode_tokens
        wall_decode = (
            (n - 1) / (last_at - first_at) if first_at and n > 1 and last_at > first_at else None
        )
        try:
            perf = lowlevel.llama_perf_context(llm.ctx)
            p_n, p_ms, e_n, e_ms = perf.n_p_eval, perf.t_p_eval_ms, perf.n_eval, perf.t_eval_ms
        except Exception:  # built without perf counters, or an older binding
            perf = None
        if perf is not None and (p_n > 0 or e_n > 0):
            return GenerationStats(
                prompt_tokens=self.prompt_tokens,
                prompt_tokens_evaluated=int(p_n),
                decode_tokens=n,
                prompt_tps=p_n / (p_ms / 1000) if p_n > 0 and p_ms > 0 else None,
                decode_tps=e_n / (e_ms / 1000) if e_n > 0 and e_ms > 0 else None,
                wall_decode_tps=wall_decode,
                time_to_first_token_s=(first_at - started) if first_at else None,
                total_s=total,
                finish_reason=finish,
                timing_source="llama.cpp",
            )
        ttft = (first_at - started) if first_at else None
        return GenerationStats(
            prompt_tokens=self.prompt_tokens,
            prompt_tokens_evaluated=self.prompt_tokens,
            decode_tokens=n,
            prompt_tps=self.prompt_tokens / ttft if ttft else None,
            decode_tps=wall_decode,
            wall_decode_tps=wall_decode,
            time_to_first_token_s=ttft,
            total_s=total,
            finish_reason=finish,
            timing_source="measured",
        )


# --------------------------------------------------------------------------------------------
# Chat sessions


class ContextFull(RunError):
    """The conversation's prompt leaves no room in the context for a reply."""

    def __init__(self, tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"the conversation is {tokens} tokens but the context holds {n_ctx}:"
            " clear the chat or load with a longer context"
        )
        self.tokens = tokens
        self.n_ctx = n_ctx


class ChatSession:
    """A conversation with a loaded model: system prompt, turns, sampling, save.

    ``generate``/``regenerate`` return a ``Generation``; when it ends (or is stopped) the reply,
    possibly partial, becomes the assistant's turn. A conversation that outgrows the context
    drops its oldest turns (the system prompt and the newest message stay) until it fits;
    ``last_dropped`` says how many turns the last start dropped.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        system_prompt: str = "",
        sampling: Sampling | None = None,
    ) -> None:
        self.model = model
        self.system_prompt = system_prompt
        self.sampling = sampling or Sampling()
        self._turns: list[ChatMessage] = []
        self._current: Generation | None = None
        self.last_stats: GenerationStats | None = None
        self.last_dropped = 0

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        system = (ChatMessage("system", self.system_prompt),) if self.system_prompt else ()
        return system + tuple(self._turns)

    def generate(self, user_text: str) -> Generation:
        """Add a user turn and start the reply."""
        self._finish_current()
        self._turns.append(ChatMessage("user", user_text))
        try:
            return self._start()
        except RunError:
            self._turns.pop()  # keep user/assistant turns alternating for the next try
            raise

    def regenerate(self) -> Generation:
        """Drop the last reply and generate it again from the same conversation."""
        self._finish_current()
        if self._turns and self._turns[-1].role == "assistant":
            self._turns.pop()
        if not self._turns or self._turns[-1].role != "user":
            raise RunError("nothing to regenerate: send a message first")
        return self._start()

    def stop(self) -> None:
        """Stop the reply being generated (within one token); its text so far is kept."""
        if self._current is not None:
            self._current.cancel()

    def clear(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self._finish_current()
        self._turns.clear()
        self.last_stats = None

    def _finish_current(self) -> None:
        current, self._current = self._current, None
        if current is not None and current.stats is None:
            current.close()

    def _start(self) -> Generation:
        self.last_dropped = 0
        kept = list(self._turns)
        while True:
            try:
                generation = self.model.generate(
                    self.messages, self.sampling, on_finish=self._on_reply
                )
                break
            except ContextFull:
                if len(self._turns) <= 1:
                    # The newest message alone is too long: dropping cannot help, so the
                    # conversation stays as it was.
                    self._turns[:] = kept
                    self.last_dropped = 0
                    raise
                # The oldest exchange goes (a user turn and the reply to it), so the turns keep
                # alternating and the conversation still starts with the user.
                drop = 2 if len(self._turns) > 2 and self._turns[1].role == "assistant" else 1
                del self._turns[:drop]
                self.last_dropped += drop
        self._current = generation
        return generation

    def _on_reply(self, text: str, stats: GenerationStats) -> None:
        self._turns.append(ChatMessage("assistant", text))
        self.last_stats = stats

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.plan.model_path,
            "settings": self.model.plan.settings(),
            "sampling": asdict(self.sampling),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "messages": [asdict(m) for m in self.messages],
        }

    def to_markdown(self) -> str:
        lines = [f"# Chat with {Path(self.model.plan.model_path).name}", ""]
        for message in self.messages:
            lines += [f"## {message.role.capitalize()}", "", message.content.rstrip(), ""]
        return "\n".join(lines)

    def save(
        self, path: str | os.PathLike[str], fmt: Literal["json", "markdown"] | None = None
    ) -> Path:
        """Write the conversation as JSON or Markdown (by ``fmt`` or the file's suffix)."""
        target = Path(path)
        if fmt is None:
            fmt = "markdown" if target.suffix.lower() in (".md", ".markdown") else "json"
        body = (
            self.to_markdown()
            if fmt == "markdown"
            else json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        )
        temp = target.with_name(f".{target.name}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(body, encoding="utf-8")
            os.replace(temp, target)  # never leave a half-written chat behind
        except OSError as exc:
            with suppress(OSError):
                temp.unlink()
            raise RunError(f"could not save the chat to {target}: {exc.strerror or exc}") from None
        return target
