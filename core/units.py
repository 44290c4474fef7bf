"""Byte sizes: parse what users type ("24G", "512MiB"), and the one binary-unit formatter.

The faces word sizes through `rigdeck.tui.words`, which uses `format_bytes`; core itself needs it
only for its one-line explanations (why a model does not fit, what limits this machine)."""

from __future__ import annotations

import re

from rigdeck.core.errors import RigdeckError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from "24G", "24GB", "24GiB", "512M", "1.5T" or a plain byte count.

    Memory sizes are binary: a "24 GB" card has 24 GiB, and that is what users type.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise RigdeckError(f"{text!r} is not a size; write it like 24G, 512M or 1.5T")
    value = float(m[1]) * _SCALE[m[2].lower()]
    if value <= 0:
        raise RigdeckError(f"{text!r}: a size must be more than zero")
    return int(value)


def format_bytes(n: int | float | None, *, precision: int = 1) -> str:
    """Format bytes with binary units: ``9.6 GiB``; ``N/A`` for None."""
    if n is None:
        return "N/A"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.{precision}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
