"""One question, one answer: the same model, config and hypothetical machine asked through every
face — `rigdeck fit --json`, the run/bench path's plan, the models pane, the chat pane's fit and a
cloud offer — gives the same placement.

The config sets a q8_0 KV cache with flash attention off, the case the faces used to answer
differently (the panes kept V f16, `rigdeck fit` refused).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rigdeck.core.config import load_settings
from rigdeck.core.models import launch
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.run.llama_chat import LlamaChatRunner
from rigdeck.core.models.run.plan import plan_from_placement
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.tui.cli import main
from rigdeck.tui.panes.models import ModelsPane
from tests.support.fixed_snapshot import gpu_box
from tests.support.models_env import isolate, open_models, pane_app, write_models

GiB = 1 << 30
GPU = "NVIDIA GeForce RTX 4090"
VRAM, RAM, THREADS = 24 * GiB, 64 * GiB, 8
CONFIG = '[models]\ncontext = 8192\nkv_type = "q8_0"\nflash_attn = "off"\n'


def hypothetical_snapshot() -> Snapshot:
    """A reading of the machine the CLI's flags describe: one free 24 GiB RTX 4090, 64 GiB RAM
    all available, 8 cores without SMT (so 8 generation and 8 prompt threads by default)."""
    snap = gpu_box()
    card = replace(
        snap.gpus[0],
        name=GPU,
        memory_total=VRAM,
        memory_used=0,
        mem_clock_max_mhz=None,  # bandwidth from the name table, as for --gpu
        memory_bus_width_bits=None,
        processes=(),
    )
    return replace(
        snap,
        gpus=(card,),
        cpu=replace(snap.cpu, logical_cores=THREADS, physical_cores=THREADS),
        memory=replace(snap.memory, total=RAM, available=RAM),
    )


def answer(p: Placement) -> dict[str, Any]:
    """What a user reads off a placement: where layers go, what each device holds, how fast."""
    return {
        "fits": p.fits,
        "verdict": p.verdict,
        "gpu_layers": p.gpu_layers,
        "total_layers": p.total_layers,
        "n_cpu_moe": p.n_cpu_moe,
        "devices": [
            (d.kind, d.budget_bytes, d.weights_bytes, d.kv_bytes, d.compute_bytes, d.total_bytes)
            for d in p.devices
        ],
        "predicted": (round(p.prompt_tps, 2), round(p.decode_tps, 2)),
        "kv": (p.settings.type_k, p.settings.type_v, p.settings.flash_attn),
    }


def answer_json(r: dict[str, Any]) -> dict[str, Any]:
    s = r["settings"]
    return {
        "fits": r["fits"],
        "verdict": r["verdict"],
        "gpu_layers": r["gpu_layers"],
        "total_layers": r["total_layers"],
        "n_cpu_moe": r["n_cpu_moe"],
        "devices": [
            (
                d["kind"],
                d["budget_bytes"],
                d["weights_bytes"],
                d["kv_bytes"],
                d["compute_bytes"],
                d["total_bytes"],
            )
            for d in r["devices"]
        ],
        "predicted": (r["predicted"]["prompt_tps"], r["predicted"]["decode_tps"]),
        "kv": (s["type_k"], s["type_v"], s["flash_attn"]),
    }


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    isolate(tmp_path, monkeypatch)
    models = write_models(tmp_path / "models")
    config = tmp_path / "rigdeck.toml"
    config.write_text(CONFIG)
    return models["70b"], config


async def test_every_face_gives_the_same_placement(
    setup: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, config = setup
    settings = load_settings(config, env={})
    calibration = speed.load_or_measure_cpu()  # the cached one isolate() wrote

    # `rigdeck fit --json` with the machine given as flags, reading the same machine (its cores
    # decide what --threads can gain) as every other face below.
    monkeypatch.setattr(launch, "sample_machine", hypothetical_snapshot)
    machine = ["--vram", "24G", "--ram", "64G", "--gpu", GPU, "--threads", str(THREADS)]
    rc = main(["--config", str(config), "fit", str(model), *machine, "--json"])
    cli = answer_json(json.loads(capsys.readouterr().out))
    assert rc == 0

    # `rigdeck run` / `serve` / `bench`: the same builder and launch path, this reading.
    run_settings = launch.build_run_settings(settings.models)
    budget = launch.machine_budget(hypothetical_snapshot(), calibration=calibration)
    planned = launch.plan_launch(model, run_settings, budget)
    run = answer(planned.placement)

    # The chat pane's fit, through the runner the pane uses by default.
    fitted = LlamaChatRunner(settings.models).plan_for(model, hypothetical_snapshot())
    assert fitted.placement is not None
    chat = answer(fitted.placement)

    # A cloud offer of the same size, as the cloud pane asks.
    offer = answer(
        launch.fit_on_offer(
            launch.model_info(model),
            run_settings,
            gpu_name=GPU,
            num_gpus=1,
            gpu_ram_bytes=VRAM,
            cpu_ram_bytes=RAM,
            cpu_threads=THREADS,
            cpu_bandwidth_bytes_per_s=calibration.bandwidth(THREADS),
            cpu_flops=calibration.prompt_flops(),
        )
    )

    # The models pane, fed the same reading, with the same [models] config.
    app = pane_app(
        tmp_path,
        hypothetical_snapshot(),
        dirs=[model.parent],
        **{"models.context": 8192, "models.kv_type": "q8_0", "models.flash_attn": "off"},
    )
    async with app.run_test(size=(160, 40)) as pilot:
        pane = await open_models(pilot)
        assert isinstance(pane, ModelsPane)
        row = pane.fitted[f"local:{model}"]
        assert row.placement is not None
        models_pane = answer(row.placement)
        # `r` there hands the chat pane this placement: it loads the plan `rigdeck run` would.
        assert plan_from_placement(model, row.placement) == planned.plan

    assert cli["kv"] == ("q8_0", "f16", False)  # V f16: a quantized V needs flash attention
    assert cli["verdict"] == "partial"  # a 70B on 24 GiB: the layer count is the question
    assert run == cli
    assert chat == cli
    assert models_pane == cli
    # An offer's CPU is only its plain figures, not this machine's measured llama.cpp rates:
    # where the layers go and what each device holds agree; the CPU's speed is the offer's own.
    assert {k: v for k, v in offer.items() if k != "predicted"} == {
        k: v for k, v in cli.items() if k != "predicted"
    }


def test_every_plan_loads_with_the_threads_the_speed_was_predicted_for(
    setup: tuple[Path, Path],
) -> None:
    model, config = setup
    settings = load_settings(config, env={})
    budget = launch.machine_budget(hypothetical_snapshot(), calibration=speed.load_or_measure_cpu())
    planned = launch.plan_launch(model, launch.build_run_settings(settings.models), budget)
    fitted = LlamaChatRunner(settings.models).plan_for(model, hypothetical_snapshot())
    assert planned.plan.n_threads == fitted.plan.n_threads == THREADS
    assert planned.plan == fitted.plan
    assert (planned.plan.type_k, planned.plan.type_v, planned.plan.flash_attn) == (
        "q8_0",
        "f16",
        False,
    )
