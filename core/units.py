"""Byte sizes: parse what users type ("24G", "512MiB") and format at the edge."""

from __future__ import annotations

import re

from rigdeck.core.errors import RigdeckError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a size such as ``24G`` (GiB), ``24GB`` (10^9), ``512MiB`` or ``1073741824``.

    A bare letter (K, M, G, T) means the binary unit, as nvidia-smi and most tools show memory.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise RigdeckError(f"not a size: {text!r} (expected e.g. 24G, 64GiB, 512M)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise RigdeckError(f"unknown size unit {unit!r} in {text!r} (use K, M, G, T, GB or GiB)")
    return int(float(number) * factor)


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


def format_rate(bytes_per_s: float | None) -> str:
    """Format a transfer rate: ``12.3 MiB/s``."""
    if bytes_per_s is None:
        return "N/A"
    return f"{format_bytes(bytes_per_s)}/s"


def format_duration(seconds: float) -> str:
    """Format an uptime-like duration: ``3d 4h``, ``5h 12m``, ``7m 3s``."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s"
