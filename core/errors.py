"""User-facing errors: one line a person can act on, never a traceback on screen."""

from __future__ import annotations


class RigdeckError(Exception):
    """Base for every error rigdeck shows to a user.

    The message is a single line; the TUI shows it as a notification, the CLI as one red line
    and exit code 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(RigdeckError):
    """A config or theme file could not be read; the message names file, line and column."""


class ProcessActionError(RigdeckError):
    """A signal to a process was refused (permission, gone, read-only mode)."""


class ModelFileError(RigdeckError):
    """A model file is missing, truncated, hostile or not a GGUF."""


class HubError(RigdeckError):
    """The Hugging Face Hub (or a server speaking its protocol) answered with an error."""


class FitError(RigdeckError):
    """A model could not be fitted because its description is incomplete or inconsistent."""


class RunError(RigdeckError):
    """A local model run failed: load, out of memory, unsupported architecture."""
