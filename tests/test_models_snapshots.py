"""Models pane snapshots on a fixed machine: a GPU box, a CPU-only box, the detail view."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fixed_snapshot import no_gpu_box
from tests.support.models_env import isolate, pane_app, roomy_gpu_box, settle, write_models


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(tmp_path, monkeypatch)
    write_models(tmp_path / "models")
    return tmp_path / "models"


def test_models_gpu_box(snap_compare, tmp_path: Path, models_dir: Path) -> None:
    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[models_dir])
    assert snap_compare(app, terminal_size=(120, 24), run_before=settle)


def test_models_no_gpu(snap_compare, tmp_path: Path, models_dir: Path) -> None:
    app = pane_app(tmp_path, no_gpu_box(), dirs=[models_dir])
    assert snap_compare(app, terminal_size=(120, 24), run_before=settle)


def test_models_detail_view(snap_compare, tmp_path: Path, models_dir: Path) -> None:
    async def open_detail(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        await pilot.press("enter")  # the 70B, first: does not fit, with suggestions
        await pilot.pause()

    app = pane_app(tmp_path, roomy_gpu_box(), dirs=[models_dir])
    assert snap_compare(app, terminal_size=(120, 36), run_before=open_detail)
