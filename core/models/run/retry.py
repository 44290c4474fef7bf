"""After a failed load, which placement to try next: one policy for the CLI and the chat pane."""

from __future__ import annotations

from dataclasses import dataclass

from rigdeck.core.models.run.plan import LoadError, RunPlan

# A smaller placement can mend running out of memory and llama.cpp's unexplained refusals;
# it cannot mend a missing or corrupt file or an architecture this build does not know.
RETRYABLE_REASONS: frozenset[str] = frozenset({"out-of-memory", "other"})


@dataclass(frozen=True)
class LoadRetry:
    """The next placement down after ``error``.

    ``named_in_error``: the error's own message already names this placement (the loader does
    so for out-of-memory), so a face need not name it again.
    """

    plan: RunPlan
    named_in_error: bool


def next_placement_down(error: LoadError) -> LoadRetry | None:
    """The closest smaller placement worth trying after ``error``, or None when none can help."""
    if error.reason not in RETRYABLE_REASONS or not error.next_plans:
        return None
    return LoadRetry(error.next_plans[0], named_in_error=error.reason == "out-of-memory")
