"""Vast's search query JSON evaluated against payload rows, the way the real backend reads it.

The SDK turns ``gpu_ram>=24 num_gpus=1 gpu_name=RTX_4090`` into
``{"gpu_ram": {"gte": 24000.0}, "num_gpus": {"eq": "1"}, "gpu_name": {"eq": "RTX 4090"}}``:
numbers often arrive as strings, names with spaces, RAM multiplied by 1000. Values are coerced
to the row's type before comparing; fields a row lacks never match a filter on them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

# Keys of the query object that are not filters.
CONTROL_KEYS = frozenset(
    {"order", "type", "limit", "allocated_storage", "disable_bundling", "select_cols"}
)

_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_OPS = frozenset({"eq", "neq", "in", "notin", *_ORDERED})


class QueryError(ValueError):
    """The query names an operator the backend does not know."""


def matches(row: Row, filters: Mapping[str, Any]) -> bool:
    """Whether `row` passes every filter of `filters` (control keys are skipped)."""
    for name, condition in filters.items():
        if name in CONTROL_KEYS or condition is None:
            continue
        if not isinstance(condition, Mapping):
            condition = {"eq": condition}
        for op, wanted in condition.items():
            if op not in _OPS:
                raise QueryError(f"unknown operator {op!r} on {name}")
            if not _compare(row.get(name), op, wanted):
                return False
    return True


def order_rows(rows: Iterable[Row], order: Sequence[Sequence[str]] | None) -> list[Row]:
    """Rows sorted by ``[[field, "asc"|"desc"], ...]``; missing values sort last either way."""
    result = list(rows)
    # Stable sorts applied from the last key to the first give a lexicographic order.
    for spec in reversed(list(order or [])):
        if not spec:
            continue
        field = str(spec[0])
        descending = len(spec) > 1 and str(spec[1]).lower() == "desc"
        present = [r for r in result if _sortable(r.get(field))]
        absent = [r for r in result if not _sortable(r.get(field))]
        present.sort(key=lambda r: _sort_key(r.get(field)), reverse=descending)
        result = present + absent
    return result


def _sortable(value: Any) -> bool:
    return value is not None


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    if op in ("in", "notin"):
        options = wanted if isinstance(wanted, list) else [wanted]
        found = any(_equal(actual, option) for option in options)
        return found if op == "in" else not found
    if op == "eq":
        return _equal(actual, wanted)
    if op == "neq":
        return not _equal(actual, wanted)
    if actual is None or wanted is None:
        return False
    left, right = _as_number(actual), _as_number(wanted)
    if left is not None and right is not None:
        return _ORDERED[op](left, right)
    return _ORDERED[op](str(actual).lower(), str(wanted).lower())


def _equal(actual: Any, wanted: Any) -> bool:
    if wanted is None or actual is None:
        return actual is None and wanted is None
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return _as_bool(actual) == _as_bool(wanted)
    if isinstance(actual, int | float):
        number = _as_number(wanted)
        return number is not None and abs(float(actual) - number) < 1e-9
    return str(actual).strip().lower() == str(wanted).strip().lower()


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None
