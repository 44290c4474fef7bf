"""Small things the app remembers between runs (the theme picked in the palette).

Kept apart from the user's config file, which rigdeck never rewrites.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rigdeck.core.config import state_dir


class AppState:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "state.json"

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a missing or damaged state file only loses remembered choices
        return data if isinstance(data, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.load().get(key, default)

    def set(self, key: str, value: Any) -> None:
        data = self.load()
        data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)  # atomic, so a crash mid-write keeps the old state
