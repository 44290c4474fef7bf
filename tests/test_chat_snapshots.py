"""Chat pane snapshots: the first-run offer and an injected conversation (a streamed reply is
not deterministic, so no model runs here)."""

from __future__ import annotations

from textual.containers import VerticalScroll

from rigdeck.core.models.run.plan import GenerationStats, LoadStats, RunPlan
from rigdeck.tui.app import RigdeckApp
from rigdeck.tui.panes.chat import ChatPane
from rigdeck.tui.panes.chat.status import ChatOffer, ChatStatus, Measured, StatusView, reply_line
from rigdeck.tui.widgets.chat_message import ChatMessageView
from tests.support.fixed_snapshot import no_gpu_box
from tests.test_snapshots import fixed_app as snapshot_app
from tests.test_snapshots import settle

ANSWER = """Three ways to make a training run faster:

1. **Mixed precision** (`bf16`): half the memory traffic.
2. A bigger batch, until the GPU is busy.
3. Data loading in worker processes:

```python
loader = DataLoader(ds, batch_size=64, num_workers=8)
```
"""


def fixed_app(tmp_path) -> RigdeckApp:
    return snapshot_app(tmp_path, no_gpu_box())


async def show_chat(pilot) -> None:
    await settle(pilot)
    await pilot.press("3")
    await pilot.pause()


def test_chat_first_run_offers_the_demo(snap_compare, tmp_path):
    assert snap_compare(fixed_app(tmp_path), terminal_size=(100, 30), run_before=show_chat)


def test_chat_conversation(snap_compare, tmp_path):
    async def inject(pilot) -> None:
        await show_chat(pilot)
        pane = pilot.app.query_one(ChatPane)
        plan = RunPlan(
            "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            n_ctx=4096,
            predicted_ram_bytes=399_000_000,
            predicted_decode_tps=91.0,
            predicted_buffers=(("CPU KV", 94_000_000), ("CPU weights", 97_000_000)),
        )
        load = LoadStats(
            load_seconds=0.4,
            host_rss_delta_bytes=223_000_000,
            gpu_bytes=None,
            llama_buffers={"CPU_Mapped model": 96_600_000, "CPU KV": 94_000_000},
        )
        reply = GenerationStats(
            prompt_tokens=40,
            prompt_tokens_evaluated=40,
            decode_tokens=61,
            prompt_tps=190.0,
            decode_tps=76.3,
            wall_decode_tps=75.0,
            time_to_first_token_s=0.2,
            total_s=1.0,
            finish_reason="stop",
            timing_source="llama.cpp",
        )
        # A finished reply's status, drawn through the status line's own surface: the pane's
        # states are driven in test_chat_pane.py; this picture is about the drawing.
        pane.query_one(ChatStatus).show(
            StatusView(
                label="SmolLM2-135M demo",
                plan=plan,
                measured=Measured(plan, load, reply),
                activity=reply_line(reply),
            )
        )
        pane.query_one(ChatOffer).show("")
        log = pane.query_one("#chat-log", VerticalScroll)
        await log.mount_all(
            [
                ChatMessageView("user", "How do I make my training run faster?"),
                ChatMessageView("assistant", ANSWER),
            ]
        )
        log.focus()
        await pilot.pause()

    assert snap_compare(fixed_app(tmp_path), terminal_size=(100, 30), run_before=inject)
