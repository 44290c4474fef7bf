"""A chat that outgrows the context drops its oldest turns, keeps the system prompt, and says so."""

from __future__ import annotations

import itertools

import pytest

from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import RunPlan, Sampling
from rigdeck.core.models.run.session import ChatSession, ContextFull
from rigdeck.core.models.sources.local import demo_model_path

DEMO = demo_model_path()
pytestmark = pytest.mark.skipif(DEMO is None, reason="the demo model is not installed")


def test_the_oldest_turns_go_when_the_context_is_full() -> None:
    assert DEMO is not None
    with load_model(RunPlan(str(DEMO), n_ctx=256, n_threads=1), kind="chat") as model:
        session = ChatSession(
            model, system_prompt="Be brief.", sampling=Sampling(temperature=0, max_tokens=8)
        )
        dropped = []
        for i in range(12):
            generation = session.generate(f"Message number {i}: " + "lorem ipsum " * 12)
            dropped.append(session.last_dropped)
            for _ in generation:
                pass
        # Twelve long messages cannot all fit 256 tokens: some were dropped, the system prompt
        # stays first, the newest message is there, and turns still alternate from a user's.
        messages = session.messages
        assert messages[0].role == "system" and messages[0].content == "Be brief."
        assert messages[1].role == "user"
        assert any("Message number 11" in m.content for m in messages)
        assert not any("Message number 0:" in m.content for m in messages)
        roles = [m.role for m in messages[1:]]
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert dropped[0] == 0 and sum(dropped) == 1 + 2 * 12 - 1 - len(messages) + 1

        # A single message longer than the context cannot be saved by dropping: it says why,
        # and the conversation is left as it was.
        before = session.messages
        with pytest.raises(ContextFull, match="context holds 256"):
            session.generate("word " * 400)
        assert session.messages == before
