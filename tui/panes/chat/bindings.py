"""The chat pane's keys, each with an id and a tooltip (the footer and the help screen show them).

ctrl keys and F-keys work while typing (the input eats letters); single letters work once escape
has left the input. TextArea keeps ctrl+a/c/d/e/k/u/v/w/x/y/z and F6/F7; ctrl+b is tmux's
prefix; ctrl+enter never reaches many terminals.
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

CHAT_BINDINGS: list[BindingType] = [
    Binding(
        "ctrl+s,f5",
        "send",
        "Send",
        id="chat.send",
        tooltip="Send the message (F5 where ctrl+s is taken)",
    ),
    Binding(
        "ctrl+g",
        "stop",
        "Stop",
        id="chat.stop",
        tooltip="Stop the reply being generated (within one token)",
    ),
    Binding(
        "ctrl+r",
        "regenerate",
        "Regenerate",
        id="chat.regenerate",
        tooltip="Replace the last answer with a new one",
    ),
    Binding(
        "ctrl+l",
        "clear",
        "Clear",
        id="chat.clear",
        tooltip="Forget the conversation (the system prompt stays)",
    ),
    Binding(
        "ctrl+o",
        "options",
        "Options",
        id="chat.options",
        tooltip="System prompt, temperature, top-p, max tokens, seed",
    ),
    Binding(
        "escape",
        "leave_input",
        "Leave input",
        id="chat.leave_input",
        show=False,
        tooltip="Move focus to the conversation so single-letter keys work",
    ),
    Binding("i", "focus_input", "Type", id="chat.focus_input", tooltip="Back to the message input"),
    Binding(
        "m",
        "demo",
        "Demo model",
        id="chat.demo",
        tooltip="Load the small demo model (SmolLM2-135M) and chat with it",
    ),
    Binding(
        "n",
        "retry",
        "Next placement",
        id="chat.retry",
        tooltip="After a failed load: try the next smaller placement",
    ),
    Binding(
        "y",
        "copy",
        "Copy answer",
        id="chat.copy",
        tooltip="Copy the last answer to the clipboard",
    ),
    Binding(
        "w",
        "save",
        "Save",
        id="chat.save",
        tooltip="Save the conversation as Markdown and JSON in the user data folder",
    ),
    Binding(
        "e",
        "serve",
        "Serve",
        id="chat.serve",
        tooltip="Start / stop an OpenAI-compatible endpoint for this model",
    ),
    Binding(
        "u",
        "unload",
        "Unload",
        id="chat.unload",
        tooltip="Unload the model and free its memory",
    ),
]
