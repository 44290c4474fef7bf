"""The model browser's data: local and Hub GGUFs as rows, each fitted to one machine.

The models pane draws what this module builds. Headers are read once per file (cached by path,
size and mtime), so changing the context, KV type or flash attention only re-runs `fit` on
headers already in memory. Everything here blocks (disk, HTTP) or costs up to a few hundred ms per
row (a fit with suggestions), so callers run it in worker threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

from rigdeck.core.errors import FitError, RigdeckError
from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import (
    FLASH_CHOICES,
    KV_CHOICES,
    FlashAttn,
    KvChoice,
    RunSettings,
    parse_flash,
    parse_kv,
)
from rigdeck.core.models.format.gguf import join_split, read_header
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.format.model_reader import info_from_header, read_model_info
from rigdeck.core.models.run.history import RunRecord
from rigdeck.core.models.sources.hub import Hub, HubFile
from rigdeck.core.models.sources.local import LocalModel

# 0 stands for the model's own training context ("max").
CONTEXT_STEPS: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768, 0)
# A Hub search reads at most this many remote headers up front; each costs one to a few MiB, so
# the rest are read one at a time when the user opens them.
DEFAULT_MAX_HUB_HEADERS = 12
DEFAULT_MAX_HUB_REPOS = 5

Verdict = Literal["gpu", "partial", "cpu", "none", "error", "unread"]


# --- controls ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Controls:
    """What the user set in the pane: every row is fitted with these."""

    context: int = 4096
    kv_type: KvChoice = "f16"
    flash: FlashAttn = "auto"

    @classmethod
    def from_config(cls, context: int, kv_type: str, flash: str) -> Controls:
        """The pane's starting controls; a value the pane cannot show falls back to its default."""
        try:
            kv = parse_kv(kv_type)
        except FitError:
            kv = "f16"
        try:
            fa = parse_flash(flash)
        except FitError:
            fa = "auto"
        return cls(context=context, kv_type=kv, flash=fa)

    def to_state(self) -> dict[str, object]:
        """What the app remembers of the controls between runs (core.state)."""
        return {"context": self.context, "kv_type": self.kv_type, "flash": self.flash}

    @classmethod
    def from_state(cls, data: object, fallback: Controls) -> Controls:
        """Controls remembered by ``to_state``; what is missing or unreadable keeps ``fallback``."""
        if not isinstance(data, dict):
            return fallback
        context = data.get("context", fallback.context)
        if not isinstance(context, int) or isinstance(context, bool) or context < 0:
            context = fallback.context
        try:
            kv = parse_kv(str(data.get("kv_type", fallback.kv_type)))
        except FitError:
            kv = fallback.kv_type
        try:
            flash = parse_flash(str(data.get("flash", fallback.flash)))
        except FitError:
            flash = fallback.flash
        return cls(context=context, kv_type=kv, flash=flash)

    def next_context(self) -> Controls:
        return replace(self, context=_next(CONTEXT_STEPS, self.context))

    def next_kv(self) -> Controls:
        return replace(self, kv_type=_next(KV_CHOICES, self.kv_type))

    def next_flash(self) -> Controls:
        return replace(self, flash=_next(FLASH_CHOICES, self.flash))


_T = TypeVar("_T")


def _next(choices: Sequence[_T], current: _T) -> _T:
    try:
        return choices[(list(choices).index(current) + 1) % len(choices)]
    except ValueError:
        return choices[0]


# --- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One quantization of one model, on disk or on the Hub, with its header if it was read."""

    key: str
    name: str
    quant: str
    size_bytes: int
    source: str
    """hf-cache, ollama, lmstudio, folder, demo or hub."""
    path: Path | None = None
    repo: str | None = None
    hub_file: HubFile | None = None
    info: ModelInfo | None = None
    error: str | None = None
    """Why the header could not be read (then there is no fit)."""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def label(self) -> str:
        return f"{self.name} {self.quant}".strip()


@dataclass(frozen=True)
class FittedRow:
    row: ModelRow
    placement: Placement | None = None
    error: str | None = None
    run: RunRecord | None = None
    """The newest run of this file recorded on this machine, if any."""

    @property
    def verdict(self) -> Verdict:
        if self.placement is not None:
            return self.placement.verdict if self.placement.fits else "none"
        if self.error or self.row.error:
            return "error"
        return "unread"


class InfoCache:
    """ModelInfo (or the reason there is none) per file, keyed by path, size and mtime.

    Shared by the scan and fit workers, hence the lock; a changed file is simply re-read.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, int, int], tuple[ModelInfo | None, str | None]] = {}
        self._lock = threading.Lock()
        self.reads = 0

    def get(self, model: LocalModel) -> tuple[ModelInfo | None, str | None]:
        try:
            stats = [p.stat() for p in model.parts]
        except OSError as exc:
            return None, f"cannot read {model.path.name}: {exc.strerror or exc}"
        key = (str(model.path), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
        with self._lock:
            hit = self._items.get(key)
        if hit is not None:
            return hit
        value = _read_local(model)
        with self._lock:
            self._items[key] = value
            self.reads += 1
        return value


def _read_local(model: LocalModel) -> tuple[ModelInfo | None, str | None]:
    if not model.complete:
        return None, f"split model is missing parts ({len(model.parts)} found)"
    try:
        return read_model_info(model.path), None
    except RigdeckError as exc:
        return None, _one_line(str(exc), model.path)
    except (OSError, ValueError) as exc:
        return None, _one_line(f"cannot read the header: {exc}", model.path)


def _one_line(text: str, path: Path | None = None) -> str:
    line = " ".join(text.split())
    if path is not None:
        line = line.replace(f"{path}: ", "").replace(str(path), path.name)
    return line


def display_name(name: str, quant: str | None) -> str:
    """The name without its quant suffix, which has a column of its own."""
    if (
        quant
        and len(name) > len(quant) + 1
        and name.lower().endswith(quant.lower())
        and (name[-len(quant) - 1] in "-._")
    ):
        return name[: -len(quant) - 1]
    return name


def local_rows(models: Iterable[LocalModel], cache: InfoCache) -> list[ModelRow]:
    """A row per runnable local model (vision projectors are not models of their own)."""
    rows = []
    for m in models:
        if m.is_projector:
            continue
        info, error = cache.get(m)
        quant = m.quant or (info.quant if info else "") or "?"
        rows.append(
            ModelRow(
                key=f"local:{m.path}",
                name=display_name(m.name, quant),
                quant=quant,
                size_bytes=m.size_bytes,
                source=m.source,
                path=m.path,
                repo=m.repo,
                info=info,
                error=error,
            )
        )
    return rows


# --- the Hub -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSearch:
    """What a search found, and what reading remote headers cost."""

    query: str
    rows: tuple[ModelRow, ...]
    repos: int
    header_bytes: int
    header_requests: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeaderRead:
    info: ModelInfo | None
    error: str | None
    bytes: int
    requests: int


def read_hub_header(
    hub: Hub, file: HubFile, *, cancel: threading.Event | None = None
) -> HeaderRead:
    """The header of a Hub file (every part of a split) over HTTP range reads, counted."""
    spent_bytes = spent_requests = 0
    headers = []
    try:
        for part in file.parts:
            source = hub.open(file.repo_id, part.path, revision=file.revision, cancel=cancel)
            try:
                headers.append(read_header(source))
            finally:
                source.close()  # the parser is done: hang up the rest of the stream
                spent_bytes += source.bytes_received
                spent_requests += source.requests + 1  # the HEAD that resolved it
        header = (
            headers[0] if len(headers) == 1 else join_split(headers, [p.path for p in file.parts])
        )
        info = info_from_header(header, file.parts[0].path)
        return HeaderRead(info, None, spent_bytes, spent_requests)
    except RigdeckError as exc:
        return HeaderRead(None, _one_line(str(exc)), spent_bytes, spent_requests)


def hub_row(file: HubFile, info: ModelInfo | None = None, error: str | None = None) -> ModelRow:
    return ModelRow(
        key=f"hub:{file.repo_id}/{file.path}",
        name=display_name(file.name, file.quant),
        quant=file.quant or "?",
        size_bytes=file.size_bytes,
        source="hub",
        repo=file.repo_id,
        hub_file=file,
        info=info,
        error=error,
    )


def search_hub(
    hub: Hub,
    query: str,
    *,
    skip: Iterable[tuple[str, str]] = (),
    max_repos: int = DEFAULT_MAX_HUB_REPOS,
    max_headers: int = DEFAULT_MAX_HUB_HEADERS,
    cancel: threading.Event | None = None,
) -> HubSearch:
    """GGUF repos matching ``query``, a row per quantization, the first headers read.

    ``skip`` holds (repo, file name) pairs already on disk, so a cached file is listed once, as
    the local row. Raises HubError when the search itself fails (no network); a repo that cannot
    be listed is one line in ``errors``.
    """
    known = set(skip)
    repos = hub.search(query, limit=max_repos)
    rows: list[ModelRow] = []
    errors: list[str] = []
    spent_bytes = spent_requests = headers = 0
    for repo in repos:
        if cancel is not None and cancel.is_set():
            break
        try:
            files = hub.list_files(repo.repo_id)
        except RigdeckError as exc:
            errors.append(_one_line(str(exc)))
            continue
        for file in files:
            if file.is_projector or (file.repo_id, Path(file.path).name) in known:
                continue
            if headers < max_headers and file.complete:
                headers += 1
                read = read_hub_header(hub, file, cancel=cancel)
                spent_bytes += read.bytes
                spent_requests += read.requests
                rows.append(hub_row(file, read.info, read.error))
            else:
                rows.append(
                    hub_row(
                        file,
                        None,
                        None
                        if file.complete
                        else "the repo lists only some parts of this split model",
                    )
                )
    return HubSearch(query, tuple(rows), len(repos), spent_bytes, spent_requests, tuple(errors))


# --- fitting -----------------------------------------------------------------------------------


def fit_row(
    row: ModelRow, budget: HardwareBudget, settings: RunSettings, run: RunRecord | None = None
) -> FittedRow:
    if row.info is None:
        return FittedRow(row, None, row.error, run)
    try:
        return FittedRow(row, fit(row.info, budget, settings), None, run)
    except RigdeckError as exc:
        return FittedRow(row, None, _one_line(str(exc)), run)


def fit_rows(
    rows: Iterable[ModelRow],
    budget: HardwareBudget,
    settings: RunSettings,
    runs: Mapping[str, Sequence[RunRecord]] | None = None,
    cancel: threading.Event | None = None,
) -> list[FittedRow]:
    """Every row fitted with the same settings; stops early (returning what it has) on cancel."""
    out = []
    for row in rows:
        if cancel is not None and cancel.is_set():
            break
        run = pick_run(runs.get(_norm(row.path), ()), settings) if runs and row.path else None
        out.append(fit_row(row, budget, settings, run))
    return out


# --- run history -------------------------------------------------------------------------------


def _norm(path: Path | str | None) -> str:
    return os.path.abspath(os.fspath(path)) if path is not None else ""


def runs_by_path(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records grouped by model file, newest first (as `RunHistory.latest_runs` returns them)."""
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(_norm(r.model_path), []).append(r)
    return out


def pick_run(records: Sequence[RunRecord], settings: RunSettings) -> RunRecord | None:
    """The newest run with the pane's context and KV type, else the newest run at all."""
    for r in records:
        s = r.settings
        if s.get("n_ctx") == settings.n_ctx and s.get("type_k") == settings.type_k:
            return r
    return records[0] if records else None
