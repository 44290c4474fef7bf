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
from typing import Literal

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.gguf import join_split, read_gguf, read_header
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run.history import RunRecord
from rigdeck.core.models.sources.hub import Hub, HubFile
from rigdeck.core.models.sources.local import LocalModel
from rigdeck.core.units import format_bytes

# 0 stands for the model's own training context ("max").
CONTEXT_STEPS: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768, 0)
KV_CHOICES: tuple[str, ...] = ("f16", "q8_0", "q4_0")
FLASH_CHOICES: tuple[str, ...] = ("auto", "on", "off")
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
    kv_type: str = "f16"
    flash: str = "auto"

    @classmethod
    def from_config(cls, context: int, kv_type: str, flash: str) -> Controls:
        return cls(
            context=context,
            kv_type=kv_type if kv_type in KV_CHOICES else "f16",
            flash=flash if flash in FLASH_CHOICES else "auto",
        )

    def next_context(self) -> Controls:
        return replace(self, context=_next(CONTEXT_STEPS, self.context))

    def next_kv(self) -> Controls:
        return replace(self, kv_type=_next(KV_CHOICES, self.kv_type))

    def next_flash(self) -> Controls:
        return replace(self, flash=_next(FLASH_CHOICES, self.flash))

    @property
    def flash_attn(self) -> bool | None:
        return {"on": True, "off": False}.get(self.flash)

    def run_settings(self) -> RunSettings:
        # llama.cpp quantizes V only with flash attention; with it off the K cache alone is.
        type_v = self.kv_type if self.flash != "off" else "f16"
        return RunSettings(
            n_ctx=self.context, type_k=self.kv_type, type_v=type_v, flash_attn=self.flash_attn
        )

    @property
    def context_label(self) -> str:
        return "model max" if self.context == 0 else tokens_label(self.context)

    @property
    def kv_label(self) -> str:
        if self.kv_type != "f16" and self.flash == "off":
            return f"K {self.kv_type}, V f16"
        return self.kv_type


def _next(choices: Sequence, current: object):  # type: ignore[no-untyped-def]
    try:
        return choices[(list(choices).index(current) + 1) % len(choices)]
    except ValueError:
        return choices[0]


def tokens_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


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
        return ModelInfo.from_header(read_gguf(model.path)), None
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
                spent_bytes += source.bytes_fetched
                spent_requests += source.requests + 1  # the HEAD that resolved it
        header = (
            headers[0] if len(headers) == 1 else join_split(headers, [p.path for p in file.parts])
        )
        return HeaderRead(ModelInfo.from_header(header), None, spent_bytes, spent_requests)
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
    controls: Controls,
    runs: Mapping[str, Sequence[RunRecord]] | None = None,
    cancel: threading.Event | None = None,
) -> list[FittedRow]:
    """Every row fitted with the same settings; stops early (returning what it has) on cancel."""
    settings = controls.run_settings()
    out = []
    for row in rows:
        if cancel is not None and cancel.is_set():
            break
        run = pick_run(runs.get(_norm(row.path), ()), controls) if runs and row.path else None
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


def pick_run(records: Sequence[RunRecord], controls: Controls) -> RunRecord | None:
    """The newest run with the pane's context and KV type, else the newest run at all."""
    for r in records:
        s = r.settings
        if s.get("n_ctx") == controls.context and s.get("type_k") == controls.kv_type:
            return r
    return records[0] if records else None


# --- words -------------------------------------------------------------------------------------


def verdict_label(fitted: FittedRow) -> str:
    p = fitted.placement
    verdict = fitted.verdict
    if verdict == "error":
        return "unreadable"
    if verdict == "unread":
        return "header not read"
    assert p is not None
    if verdict == "none":
        return "does not fit"
    if verdict == "gpu":
        return "all on GPU"
    if verdict == "cpu":
        return "CPU only"
    if p.n_cpu_moe:
        return f"GPU, {p.n_cpu_moe} MoE on CPU"
    return f"{p.gpu_layers} of {p.total_layers} layers"


def tps_label(tps: float | None) -> str:
    if not tps:
        return "-"
    return f"{tps:.1f}" if tps < 10 else f"{tps:.0f}"


def gb(n: int | None) -> str:
    """Memory with one decimal; binary units, written GB the way users say memory sizes."""
    return "-" if n is None else f"{n / (1 << 30):.1f} GB"


def measured_summary(run: RunRecord) -> str:
    """``predicted 5.1 GB / measured 5.0 GB, 38 tok/s (predicted 41)`` for one recorded run.

    Memory is VRAM for a run that offloaded to a GPU, host RAM for a CPU run.
    """
    parts = []
    on_gpu = run.measured_vram_bytes is not None and (run.predicted_vram_bytes or 0) > 0
    if on_gpu:
        parts.append(
            f"predicted {gb(run.predicted_vram_bytes)} / measured {gb(run.measured_vram_bytes)}"
        )
    elif run.measured_ram_bytes is not None:
        parts.append(
            f"predicted {gb(run.predicted_ram_bytes)} / measured {gb(run.measured_ram_bytes)} RAM"
        )
    if run.measured_decode_tps:
        speed = f"{tps_label(run.measured_decode_tps)} tok/s"
        if run.predicted_decode_tps:
            speed += f" (predicted {tps_label(run.predicted_decode_tps)})"
        parts.append(speed)
    return ", ".join(parts) or "nothing measured"


def measured_line(run: RunRecord) -> str:
    """The summary with the settings the run used, which may differ from the pane's."""
    s = run.settings
    ctx = s.get("n_ctx")
    ctx_text = tokens_label(ctx) if isinstance(ctx, int) and ctx else "model max"
    return f"last run (ctx {ctx_text}, KV {s.get('type_k', '?')}): {measured_summary(run)}"


def budget_line(budget: HardwareBudget) -> str:
    gpus = (
        ", ".join(
            f"GPU {g.index} {g.name} {format_bytes(g.free_bytes)} free of {format_bytes(g.total_bytes)}"
            for g in budget.gpus
        )
        or "no GPU"
    )
    return (
        f"{gpus} · RAM {format_bytes(budget.ram_available_bytes)} available of "
        f"{format_bytes(budget.ram_total_bytes)} · {budget.cpu_threads} CPU threads"
    )
