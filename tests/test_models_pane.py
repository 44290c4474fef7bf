"""The models pane under Pilot: rows, verdicts, controls that re-fit, details, run, Hub."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub.utils import _http as hf_http
from rich.text import Text
from textual.widgets import DataTable, Static

from rigdeck.core.models.fit.budget import budget_from_snapshot
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.fit.speed import CpuCalibration
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run.history import RunHistory, RunRecord
from rigdeck.core.models.sources import local as catalog
from rigdeck.tui.panes.chat import ChatPane
from rigdeck.tui.panes.models import ModelsPane
from rigdeck.tui.widgets.fit_detail import FitDetailScreen
from tests.support.fake_hub import FakeHub
from tests.support.fixed_snapshot import no_gpu_box
from tests.support.gguf_factory import write_model
from tests.support.models_env import (
    CALIBRATION,
    GiB,
    isolate,
    models_app,
    open_models,
    pane_app,
    roomy_gpu_box,
    settle,
    write_models,
)

MiB = 1 << 20
REPO = "bartowski/Llama-3.1-8B-Tiny-GGUF"
BIG_REPO = "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF"


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    isolate(tmp_path, monkeypatch)
    return write_models(tmp_path / "models")


def _key(path: Path) -> str:
    return f"local:{path}"


def _cell(pane: ModelsPane, key: str, column: int) -> str:
    value = pane.query_one("#models-table", DataTable).get_row(key)[column]
    return value.plain if isinstance(value, Text) else str(value)


def _select(pane: ModelsPane, key: str) -> None:
    table = pane.query_one("#models-table", DataTable)
    table.move_cursor(row=table.get_row_index(key))


def _expected(path: Path, snapshot, settings: RunSettings):  # type: ignore[no-untyped-def]
    calibration = CpuCalibration(threads=1, measured_at=0, **CALIBRATION)
    info = ModelInfo.from_header(read_gguf(path))
    return fit(info, budget_from_snapshot(snapshot, calibration=calibration), settings)


async def test_rows_and_verdicts_on_a_gpu_box(tmp_path: Path, models: dict[str, Path]) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        table = pane.query_one("#models-table", DataTable)
        keys = [k.value for k in table.rows]
        demo = catalog.demo_model_path()
        assert demo is not None and _key(demo) in keys
        assert {_key(models["8b"]), _key(models["70b"]), _key(models["broken"])} <= set(keys)

        assert _cell(pane, _key(models["8b"]), 4) == "all on GPU"
        assert _cell(pane, _key(models["70b"]), 4) == "does not fit"
        assert _cell(pane, _key(demo), 3) == "demo"
        # Colour follows the verdict: the theme's success and error colours.
        colours = app.get_css_variables()
        fits = table.get_row(_key(models["8b"]))[4]
        short = table.get_row(_key(models["70b"]))[4]
        assert fits.style.color.name.lower() == colours["success"].lower()
        assert short.style.color.name.lower() == colours["error"].lower()
        # The VRAM figure is the fit's own.
        expected = _expected(models["8b"], roomy_gpu_box(), RunSettings())
        assert f"{expected.gpu_bytes / GiB:.1f}/" in _cell(pane, _key(models["8b"]), 5)


async def test_no_gpu_box_fits_on_the_cpu_and_says_so(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    app = pane_app(tmp_path, no_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert _cell(pane, _key(models["8b"]), 4) == "CPU only"
        assert _cell(pane, _key(models["8b"]), 5) == "no GPU"
        assert _cell(pane, _key(models["70b"]), 4) == "does not fit"
        notice = str(pane.query_one("#models-notice", Static).render())
        assert "No GPU" in notice and "driver" in notice


async def test_a_quantized_kv_with_flash_attention_off_keeps_v_f16_and_says_why(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    app = pane_app(
        tmp_path,
        roomy_gpu_box(),
        dirs=[tmp_path / "models"],
        **{"models.kv_type": "q8_0", "models.flash_attn": "off"},
    )
    async with app.run_test(size=(120, 36)) as pilot:
        pane = await open_models(pilot)
        placement = pane.fitted[_key(models["8b"])].placement
        assert placement is not None
        assert (placement.settings.type_k, placement.settings.type_v) == ("q8_0", "f16")
        controls = str(pane.query_one("#models-controls", Static).render())
        assert "KV K q8_0, V f16 [v]" in controls and "hub:" in controls
        notice = str(pane.query_one("#models-notice", Static).render())
        assert "K q8_0, V f16 (a quantized V needs flash attention)" in notice

        await pilot.press("a")  # off -> auto: V is quantized too
        await settle(pilot)
        placement = pane.fitted[_key(models["8b"])].placement
        assert placement is not None and placement.settings.type_v == "q8_0"
        assert "quantized V" not in str(pane.query_one("#models-notice", Static).render())


async def test_kv_type_and_context_refit_every_row(tmp_path: Path, models: dict[str, Path]) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    snap = roomy_gpu_box()
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        key = _key(models["8b"])
        f16 = pane.fitted[key].placement
        assert f16 is not None
        assert f16.gpu_bytes == _expected(models["8b"], snap, RunSettings()).gpu_bytes

        await pilot.press("v")  # f16 -> q8_0
        await settle(pilot)
        q8 = pane.fitted[key].placement
        assert pane.controls.kv_type == "q8_0"
        want = _expected(models["8b"], snap, RunSettings(type_k="q8_0", type_v="q8_0"))
        assert q8 is not None and q8.gpu_bytes == want.gpu_bytes < f16.gpu_bytes
        assert q8.settings.type_v == "q8_0"
        assert f"{want.gpu_bytes / GiB:.1f}/" in _cell(pane, key, 5)

        await pilot.press("c")  # 4k -> 8k
        await settle(pilot)
        longer = pane.fitted[key].placement
        want = _expected(models["8b"], snap, RunSettings(n_ctx=8192, type_k="q8_0", type_v="q8_0"))
        assert longer is not None and longer.gpu_bytes == want.gpu_bytes > q8.gpu_bytes
        # Every row was re-fitted, not only the selected one.
        big = pane.fitted[_key(models["70b"])].placement
        assert big is not None and big.settings.n_ctx == 8192

        await pilot.press("a", "a")  # auto -> on -> off: V falls back to f16
        await settle(pilot)
        off = pane.fitted[key].placement
        assert off is not None and off.settings.flash_attn is False
        assert (off.settings.type_k, off.settings.type_v) == ("q8_0", "f16")


async def test_detail_view_shows_components_and_suggestions(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        _select(pane, _key(models["70b"]))
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FitDetailScreen)
        devices = screen.query_one("#fit-devices", DataTable)
        assert [devices.get_row_at(i)[0] for i in range(devices.row_count)] == [
            "GPU 0 NVIDIA GeForce RTX 3080",
            "RAM (CPU)",
        ]
        assert [str(c.label) for c in devices.columns.values()][:6] == [
            "Device",
            "Weights",
            "KV",
            "Compute",
            "Other",
            "Total",
        ]
        placement = pane.fitted[_key(models["70b"])].placement
        assert placement is not None and placement.suggestions
        text = str(screen.query_one("#fit-suggestions", Static).render())
        assert placement.suggestions[0].label in text
        assert "does not fit" in str(screen.query_one("#fit-why", Static).render())
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, FitDetailScreen)


async def test_run_posts_the_fitted_placement(tmp_path: Path, models: dict[str, Path]) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        key = _key(models["8b"])
        _select(pane, key)
        await pilot.press("r")
        await pilot.pause()
        assert len(app.run_requests) == 1
        request = app.run_requests[0]
        assert request.path == models["8b"]
        assert request.placement is pane.fitted[key].placement
        assert request.placement.verdict == "gpu"
        assert "Q4_K_M" in request.label

        # Enter in the detail view runs it too.
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FitDetailScreen)
        await pilot.press("enter")
        await pilot.pause()
        assert len(app.run_requests) == 2
        assert not isinstance(app.screen, FitDetailScreen)

        # A model that does not fit is refused with a word, not started.
        _select(pane, _key(models["70b"]))
        await pilot.press("r")
        await pilot.pause()
        assert len(app.run_requests) == 2


async def test_the_app_hands_a_run_to_the_chat_pane(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple] = []
    monkeypatch.setattr(
        ChatPane,
        "start_model",
        lambda self, path, placement, label: started.append((path, placement, label)),
    )
    app = models_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        key = _key(models["8b"])
        assert _cell(pane, key, 4) == "all on GPU"  # the app fed it a reading
        _select(pane, key)
        await pilot.press("r")
        await pilot.pause()
        assert started == [(models["8b"], pane.fitted[key].placement, started[0][2])]
        assert app.query_one("#panes").active == "chat"


async def test_hostile_gguf_is_one_row_saying_why(tmp_path: Path, models: dict[str, Path]) -> None:
    truncated = tmp_path / "models" / "cut-Q8_0.gguf"
    with models["8b"].open("rb") as f:  # a sparse 4.6 GiB file: read only its head
        truncated.write_bytes(f.read(5000))
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        for path in (models["broken"], truncated):
            key = _key(path)
            assert _cell(pane, key, 4) == "unreadable"
            _select(pane, key)
            await pilot.pause()
            info = str(pane.query_one("#models-info", Static).render())
            assert info.count("\n") == 0 and "cannot fit" in info
        assert "absurd" in pane.fitted[_key(models["broken"])].error  # type: ignore[operator]
        assert _cell(pane, _key(models["8b"]), 4) == "all on GPU"  # the rest still works


async def test_measured_next_to_predicted(tmp_path: Path, models: dict[str, Path]) -> None:
    RunHistory().record(
        RunRecord(
            model_path=str(models["8b"]),
            settings={"n_ctx": 4096, "type_k": "f16", "type_v": "f16", "gpu_layers": -1},
            predicted_vram_bytes=int(5.1 * GiB),
            measured_vram_bytes=int(5.0 * GiB),
            predicted_decode_tps=41.0,
            measured_decode_tps=38.0,
        )
    )
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        key = _key(models["8b"])
        assert _cell(pane, key, 8) == (
            "predicted 5.1 GiB / measured 5.0 GiB, 38 tok/s (predicted 41)"
        )
        assert _cell(pane, _key(models["70b"]), 8) == ""
        _select(pane, key)
        await pilot.pause()
        info = str(pane.query_one("#models-info", Static).render())
        assert "last run (ctx 4k, KV f16): predicted 5.1 GiB / measured 5.0 GiB" in info


async def test_no_models_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)
    monkeypatch.setattr(catalog, "demo_model_path", lambda: None)
    app = pane_app(tmp_path, no_gpu_box())
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert pane.query_one("#models-table", DataTable).row_count == 0
        notice = str(pane.query_one("#models-notice", Static).render())
        assert "No local GGUF models found" in notice and "[models] dirs" in notice


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    files = tmp_path / "published"
    files.mkdir()
    q4 = write_model(
        files / "Llama-3.1-8B-Tiny-Q4_K_M.gguf", "llama-3.1-8b-tiny", with_tokenizer=False
    )
    q8 = write_model(
        files / "Llama-3.1-8B-Tiny-Q8_0.gguf",
        "llama-3.1-8b-tiny",
        quant="Q8_0",
        with_tokenizer=False,
    )
    with FakeHub() as server:
        server.add_repo(REPO, {q4.name: q4, q8.name: q8, "README.md": b"# card"}, downloads=10)
        # A 40 GB sparse 70B nobody downloads: its header must cost a few MiB, not the file.
        big = write_model(
            files / "Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf", "llama-3.1-70b", with_tokenizer=False
        )
        server.add_repo(BIG_REPO, {big.name: big}, sha256={big.name: "0" * 64}, downloads=5)
        server.add_repo("someone/unrelated", {"x.bin": b"x"}, tags=("pytorch",))
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


async def test_hub_search_fits_quants_and_downloads(
    tmp_path: Path, models: dict[str, Path], fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress: list[int] = []
    original = ModelsPane.on_models_pane_download_update

    def spy(self: ModelsPane, message: ModelsPane.DownloadUpdate) -> None:
        progress.append(message.progress.done_bytes)
        original(self, message)

    monkeypatch.setattr(ModelsPane, "on_models_pane_download_update", spy)
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        await pilot.press("slash")
        await pilot.press(*"llama")
        await pilot.press("enter")
        await settle(pilot)
        hub = {(r.repo, r.quant): r for r in pane.hub_rows}
        assert set(hub) == {(REPO, "Q4_K_M"), (REPO, "Q8_0"), (BIG_REPO, "Q4_K_M")}
        for row in hub.values():
            assert _cell(pane, row.key, 3) == "hub"
        assert _cell(pane, hub[REPO, "Q8_0"].key, 4) == "all on GPU"
        assert _cell(pane, hub[BIG_REPO, "Q4_K_M"].key, 4) == "does not fit"
        assert "3 files in 2 repos" in pane.hub_status
        # A remote fit costs a few MiB of range reads, never the 40 GB file.
        cdn = sum(s.body_bytes for s in fake_hub.served(server="cdn"))
        assert 0 < cdn < 3 * 4 * MiB
        hub = {quant: r for (repo, quant), r in hub.items() if repo == REPO}

        _select(pane, hub["Q4_K_M"].key)
        await pilot.press("g")
        await settle(pilot)
        size = hub["Q4_K_M"].size_bytes
        assert progress and progress[-1] == size and progress == sorted(progress)
        cached = list((tmp_path / "hf" / "hub").rglob("Llama-3.1-8B-Tiny-Q4_K_M.gguf"))
        assert len(cached) == 1 and cached[0].stat().st_size == size
        # The rescan lists it as a cached local model; its Hub row is gone.
        local = [r for r in pane.local_rows if r.source == "hf-cache"]
        assert [(r.repo, r.quant) for r in local] == [(REPO, "Q4_K_M")]
        assert sorted(r.quant for r in pane.hub_rows if r.repo == REPO) == ["Q8_0"]
        assert not pane.query_one("#models-download").has_class("-active")


async def test_hub_without_network_is_one_line(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub retries connection errors with waits of 1..8 s: record, do not sleep.
    waits: list[float] = []
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=waits.append))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on discard
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        await pilot.press("slash", *"llama", "enter")
        await settle(pilot)
        assert pane.hub_status.startswith("unavailable:")
        assert "\n" not in pane.hub_status
        assert pane.hub_rows == []
        assert _cell(pane, _key(models["8b"]), 4) == "all on GPU"


def test_every_binding_has_an_id_and_a_tooltip() -> None:
    taken = {"q", "question_mark", "f1", "colon", "1", "2", "3", "4", "d", "ctrl+p"}
    for binding in ModelsPane.BINDINGS:
        assert binding.id and binding.id.startswith("models.")
        assert binding.tooltip
        assert not set(binding.key.split(",")) & taken


async def test_download_cancels_and_resumes(
    tmp_path: Path, models: dict[str, Path], fake_hub: FakeHub
) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        await pilot.press("slash", *"tiny", "enter")
        await settle(pilot)
        row = next(r for r in pane.hub_rows if r.quant == "Q8_0")
        reached, release = fake_hub.hold_after(MiB // 2)  # the cdn stalls mid-file
        _select(pane, row.key)
        await pilot.press("g")
        for _ in range(500):  # until the server says it is holding, not a guess at a time
            if reached.is_set():
                break
            await pilot.pause(0.01)
        assert reached.is_set()
        assert pane.query_one("#models-download").has_class("-active")
        await pilot.press("x")
        release.set()
        await settle(pilot)
        assert not pane.query_one("#models-download").has_class("-active")
        cache = tmp_path / "hf" / "hub"
        assert list(cache.rglob("*.incomplete"))  # kept for resume
        assert not list(cache.rglob("Llama-3.1-8B-Tiny-Q8_0.gguf"))

        _select(pane, row.key)
        await pilot.press("g")
        await settle(pilot)
        done = list(cache.rglob("Llama-3.1-8B-Tiny-Q8_0.gguf"))
        assert len(done) == 1 and done[0].stat().st_size == row.size_bytes
        assert not list(cache.rglob("*.incomplete"))


async def test_hub_rows_beyond_the_first_headers_read_theirs_on_enter(
    tmp_path: Path, models: dict[str, Path], fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ModelsPane, "max_hub_headers", 1)
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[tmp_path / "models"])
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        await pilot.press("slash", *"tiny", "enter")
        await settle(pilot)
        unread = [r for r in pane.hub_rows if r.info is None]
        assert len(unread) == len(pane.hub_rows) - 1
        row = unread[0]
        assert _cell(pane, row.key, 4) == "header not read"
        _select(pane, row.key)
        await pilot.press("enter")
        await settle(pilot)
        assert _cell(pane, row.key, 4) in {"all on GPU", "does not fit"}
        assert pane.fitted[row.key].placement is not None
