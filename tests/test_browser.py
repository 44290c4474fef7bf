"""The model browser's UI-free logic: controls, header cache, rows, fits; and how the faces word
verdicts and recorded runs (tui/words.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rigdeck.core.models import browser
from rigdeck.core.models.browser import Controls, InfoCache
from rigdeck.core.models.fit.budget import budget_from_snapshot
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.settings import RunSettings, build_run_settings
from rigdeck.core.models.run.history import RunRecord
from rigdeck.core.models.sources.local import discover
from rigdeck.tui import words
from tests.support.fixed_snapshot import no_gpu_box
from tests.support.gguf_factory import write_model
from tests.support.models_env import GiB, roomy_gpu_box


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    write_model(root / "Llama-3.1-8B-Instruct-Q4_K_M.gguf", "llama-3.1-8b", with_tokenizer=False)
    write_model(root / "tiny-Q8_0.gguf", "qwen2.5-7b-tiny", quant="Q8_0", with_tokenizer=False)
    (root / "mmproj-tiny-f16.gguf").write_bytes(
        (root / "tiny-Q8_0.gguf").read_bytes()
    )  # a projector: listed by discovery, not a row
    (root / "garbage-Q4_0.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 40)
    return root


def _rows(folder: Path, cache: InfoCache | None = None) -> list[browser.ModelRow]:
    models = discover([folder], home=folder / "nohome", env={}, demo=False)
    return browser.local_rows(models, cache or InfoCache())


def _settings(c: Controls) -> RunSettings:
    return build_run_settings(ctx=c.context, kv=c.kv_type, flash=c.flash)


def test_controls_cycle_and_settings() -> None:
    c = Controls()
    contexts = []
    for _ in range(len(browser.CONTEXT_STEPS)):
        c = c.next_context()
        contexts.append(c.context)
    assert contexts == [8192, 16384, 32768, 0, 2048, 4096]
    assert words.context(Controls(context=0).context) == "model max"
    assert words.context(Controls(context=8192).context) == "8k"
    assert [Controls().next_kv().kv_type, Controls().next_kv().next_kv().kv_type] == [
        "q8_0",
        "q4_0",
    ]
    assert Controls().next_flash().flash == "on"
    assert _settings(Controls(flash="on")).flash_attn is True
    assert _settings(Controls()).flash_attn is None
    # llama.cpp quantizes V only with flash attention: with it off only K is.
    off = _settings(Controls(kv_type="q4_0", flash="off"))
    assert (off.type_k, off.type_v, off.flash_attn) == ("q4_0", "f16", False)
    assert words.kv(off) == "K q4_0, V f16 (a quantized V needs flash attention)"
    auto = _settings(Controls(kv_type="q8_0"))
    assert (auto.type_k, auto.type_v) == ("q8_0", "q8_0")
    assert Controls.from_config(4096, "bogus", "maybe") == Controls()


def test_rows_skip_projectors_and_explain_unreadable_files(folder: Path) -> None:
    rows = {r.name: r for r in _rows(folder)}
    assert set(rows) == {"Llama-3.1-8B-Instruct", "tiny", "garbage"}
    good = rows["Llama-3.1-8B-Instruct"]
    assert good.info is not None and good.error is None and good.quant == "Q4_K_M"
    assert good.source == "folder" and good.is_local
    bad = rows["garbage"]
    assert bad.info is None and bad.error and "\n" not in bad.error
    assert str(folder) not in bad.error  # one short line, not a path dump


def test_header_cache_rereads_only_changed_files(folder: Path) -> None:
    cache = InfoCache()
    _rows(folder, cache)
    first = cache.reads
    assert first == 3
    _rows(folder, cache)
    assert cache.reads == first  # nothing changed: no header read
    tiny = folder / "tiny-Q8_0.gguf"
    st = tiny.stat()
    os.utime(tiny, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    _rows(folder, cache)
    assert cache.reads == first + 1


def test_fit_rows_match_fit_and_follow_the_controls(folder: Path) -> None:
    rows = _rows(folder)
    budget = budget_from_snapshot(roomy_gpu_box())
    fitted = {f.row.name: f for f in browser.fit_rows(rows, budget, RunSettings())}
    llama = fitted["Llama-3.1-8B-Instruct"]
    assert llama.row.info is not None
    assert llama.placement == fit(llama.row.info, budget, RunSettings())
    assert llama.verdict == "gpu" and words.row_verdict(llama) == "all on GPU"
    assert fitted["garbage"].verdict == "error"
    assert words.row_verdict(fitted["garbage"]) == "unreadable"

    longer = {f.row.name: f for f in browser.fit_rows(rows, budget, RunSettings(n_ctx=32768))}
    assert longer["Llama-3.1-8B-Instruct"].placement.gpu_bytes > llama.placement.gpu_bytes  # type: ignore[union-attr]

    cpu = browser.fit_rows(rows, budget_from_snapshot(no_gpu_box()), RunSettings())
    assert {f.row.name: words.row_verdict(f) for f in cpu}["tiny"] == "CPU only"

    stop = threading.Event()
    stop.set()
    assert browser.fit_rows(rows, budget, RunSettings(), cancel=stop) == []


def test_partial_verdict_names_the_layers(folder: Path) -> None:
    row = next(r for r in _rows(folder) if r.name == "Llama-3.1-8B-Instruct")
    snap = roomy_gpu_box()
    small = snap.__class__(
        **{
            **snap.__dict__,
            "gpus": tuple(
                g.__class__(**{**g.__dict__, "memory_used": 6_500_000_000}) for g in snap.gpus
            ),
        }
    )
    fitted = browser.fit_row(row, budget_from_snapshot(small), RunSettings())
    p = fitted.placement
    assert p is not None and p.verdict == "partial"
    assert words.row_verdict(fitted) == f"{p.gpu_layers} of {p.total_layers} layers"


def _record(path: str, n_ctx: int, kv: str, tps: float) -> RunRecord:
    return RunRecord(
        model_path=path,
        settings={"n_ctx": n_ctx, "type_k": kv},
        predicted_vram_bytes=int(5.1 * GiB),
        measured_vram_bytes=int(5.0 * GiB),
        predicted_decode_tps=41.0,
        measured_decode_tps=tps,
    )


def test_measured_against_predicted_words() -> None:
    run = _record("/m/a.gguf", 4096, "f16", 38.2)
    assert words.last_run_summary(run) == (
        "predicted 5.1 GiB / measured 5.0 GiB, 38 tok/s (predicted 41)"
    )
    assert words.last_run_line(run).startswith("last run (ctx 4k, KV f16): predicted 5.1 GiB")
    cpu = RunRecord(
        model_path="/m/a.gguf",
        predicted_ram_bytes=int(2.5 * GiB),
        measured_ram_bytes=int(2.4 * GiB),
        measured_decode_tps=7.25,
        predicted_decode_tps=8.0,
    )
    assert words.last_run_summary(cpu) == (
        "predicted 2.5 GiB / measured 2.4 GiB RAM, 7.2 tok/s (predicted 8.0)"
    )
    assert words.last_run_summary(RunRecord(model_path="/m/a.gguf")) == "nothing measured"


def test_runs_pick_the_pane_settings_first() -> None:
    newest = _record("/m/a.gguf", 8192, "f16", 30)
    older = _record("/m/a.gguf", 4096, "q8_0", 35)
    by_path = browser.runs_by_path([newest, older, _record("/m/b.gguf", 4096, "f16", 9)])
    assert list(by_path) == ["/m/a.gguf", "/m/b.gguf"]
    assert (
        browser.pick_run(by_path["/m/a.gguf"], RunSettings(type_k="q8_0", flash_attn=True)) is older
    )
    assert browser.pick_run(by_path["/m/a.gguf"], RunSettings()) is newest  # no exact match
    assert browser.pick_run([], RunSettings()) is None
