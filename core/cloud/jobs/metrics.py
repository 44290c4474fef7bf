"""Training metrics read from a job's log lines: what the loss chart draws.

Recognised lines (after a torchrun ``[default0]:`` / ``[rank0]:`` prefix, if any):

- dict lines, as the Hugging Face Trainer prints them or as JSON:
  ``{'loss': 2.31, 'learning_rate': 5e-05, 'epoch': 0.1}``, ``{"step": 100, "loss": 2.31}``
- text with ``name value`` / ``name=value`` / ``name: value`` pairs, when the line names a step
  (``step``, ``global_step``, ``iter``, ``iteration``) or a loss: ``step 100 loss 2.31``,
  ``step=100 loss=2.31 lr=3e-4``, ``Step 100/1000 | loss: 2.31``.

Lines from ranks other than 0 are skipped (rank 0 speaks for the job). A line without a step
counts on from the metric's previous step. Metric names are lower-cased.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STEP_KEYS = frozenset({"step", "global_step", "iter", "iteration"})

_RANK_PREFIX = re.compile(r"^\s*\[(?:default|rank)(\d+)\]:\s?")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_PAIR = re.compile(
    rf"(?<![\w./-])([A-Za-z_][\w./-]*?)\s*(?:=|:|\s)\s*({_NUMBER})(?![\w.])", re.IGNORECASE
)
_MAX_DICT_CHARS = 8192


@dataclass(frozen=True, slots=True)
class MetricPoint:
    step: int
    name: str
    value: float


class MetricParser:
    """Turns log lines into `MetricPoint`s; keeps each metric's last step for step-less lines."""

    def __init__(self) -> None:
        self._last_step: dict[str, int] = {}

    def parse(self, line: str) -> list[MetricPoint]:
        prefix = _RANK_PREFIX.match(line)
        if prefix:
            if prefix.group(1) != "0":
                return []
            line = line[prefix.end() :]
        text = line.strip()
        if not text or text.startswith("[rigdeck]"):
            return []
        if text.startswith("{") and text.endswith("}"):
            pairs = _dict_pairs(text)
        else:
            pairs = _text_pairs(text)
        if not pairs:
            return []
        step: int | None = None
        metrics: list[tuple[str, float]] = []
        for name, value in pairs:
            if name in STEP_KEYS and step is None and value.is_integer() and value >= 0:
                step = int(value)
            elif name not in STEP_KEYS:
                metrics.append((name, value))
        points = []
        for name, value in metrics:
            at = step if step is not None else self._last_step.get(name, 0) + 1
            self._last_step[name] = at
            points.append(MetricPoint(at, name, value))
        return points

    def parse_all(self, lines: Iterable[str]) -> list[MetricPoint]:
        return [point for line in lines for point in self.parse(line)]


def _dict_pairs(text: str) -> list[tuple[str, float]]:
    if len(text) > _MAX_DICT_CHARS:
        return []
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = ast.literal_eval(text)  # the Trainer prints Python dicts: single quotes
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return []
    if not isinstance(data, Mapping):
        return []
    pairs = []
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        number = _as_number(value)
        if number is not None:
            pairs.append((key.strip().lower(), number))
    return pairs


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text_pairs(text: str) -> list[tuple[str, float]]:
    pairs = [(m.group(1).lower(), float(m.group(2))) for m in _PAIR.finditer(text)]
    if any(name in STEP_KEYS or "loss" in name for name, _ in pairs):
        return pairs
    return []  # "loaded 100 files" is not a metric: a line must name a step or a loss


class MetricSeries:
    """Points by metric, one per (name, step), the latest kept: a resumed job's repeated steps
    replace the old ones instead of being drawn twice.

    Bounded: at most ``max_metrics`` names (later ones are ignored) and ``max_points`` per name;
    past that every other point is dropped, so the curve keeps its shape in bounded memory.
    """

    def __init__(self, *, max_points: int = 4000, max_metrics: int = 32) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.max_points = max_points
        self.max_metrics = max_metrics
        self._by_name: dict[str, dict[int, float]] = {}
        self._sorted: dict[str, list[tuple[int, float]]] = {}

    def add(self, point: MetricPoint) -> None:
        series = self._by_name.get(point.name)
        if series is None:
            if len(self._by_name) >= self.max_metrics:
                return
            series = self._by_name[point.name] = {}
        series[point.step] = point.value
        self._sorted.pop(point.name, None)
        if len(series) > self.max_points:
            steps = sorted(series)
            keep = set(steps[::2]) | {steps[-1]}
            self._by_name[point.name] = {s: series[s] for s in steps if s in keep}

    def extend(self, points: Iterable[MetricPoint]) -> None:
        for point in points:
            self.add(point)

    def names(self) -> list[str]:
        """Metric names in the order they first appeared."""
        return list(self._by_name)

    def points(self, name: str) -> list[tuple[int, float]]:
        """(step, value) by step; empty for an unknown name."""
        cached = self._sorted.get(name)
        if cached is None:
            cached = sorted(self._by_name.get(name, {}).items())
            self._sorted[name] = cached
        return list(cached)

    def latest(self, name: str) -> MetricPoint | None:
        """The point with the highest step."""
        pts = self.points(name)
        return MetricPoint(pts[-1][0], name, pts[-1][1]) if pts else None

    def finite(self, name: str) -> list[tuple[int, float]]:
        """Points a chart can draw (a diverged run's nan/inf left out)."""
        return [(s, v) for s, v in self.points(name) if math.isfinite(v)]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_name.values())
