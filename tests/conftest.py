"""Shared fixtures. Tests never touch the user's config, state or the internet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Helpers import as `tests.support.x` or `support.x`, whichever a test prefers.
for entry in (str(TESTS.parent), str(TESTS)):
    if entry not in sys.path:
        sys.path.insert(0, entry)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point config, state and data dirs at a temp folder so tests never see a real user's."""
    home = tmp_path_factory.mktemp("xdg")
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    for var in list(__import__("os").environ):
        if var.startswith("RIGDECK_"):
            monkeypatch.delenv(var, raising=False)
    yield
