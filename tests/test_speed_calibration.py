"""The CPU speed model calibrated against llama.cpp: threads as llama.cpp picks them, rates that
reproduce the bench they came from, prompts compute-bound, decode memory- and core-bound, a
cache per machine, and predictions that learn from measured runs."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from rigdeck.core.config import ModelSettings
from rigdeck.core.machine import MachineFingerprint
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import (
    DEFAULT_CPU_REPACK_TYPES,
    HardwareBudget,
    budget_from_snapshot,
)
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.layout import cpu_work, repacked_on_cpu
from rigdeck.core.models.fit.settings import RunSettings, build_run_settings
from rigdeck.core.models.format.model_reader import read_model_info
from rigdeck.core.models.run import calibrate
from rigdeck.core.models.run.fitted import fit_and_plan
from rigdeck.core.models.run.history import RunHistory, RunRecord
from rigdeck.core.models.run.learned import blend
from rigdeck.core.models.run.loader import llama_kwargs
from rigdeck.core.models.run.plan import LoadCancelled
from rigdeck.core.models.run.serve import server_command
from rigdeck.tui.cli_calibrate import drift_note
from tests.support.fixed_snapshot import no_gpu_box
from tests.support.gguf_factory import write_model

GiB = 1 << 30
NUMPY = speed.CpuCalibration(
    bandwidth_1t=15e9, bandwidth_all=30e9, threads=2, sgemm_flops=330e9, measured_at=0.0
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "8b": write_model(folder / "8b.gguf", "llama-3.1-8b", with_tokenizer=False),
        "8b-q8": write_model(
            folder / "8b-q8.gguf", "llama-3.1-8b", quant="Q8_0", with_tokenizer=False
        ),
        "small": write_model(
            folder / "small.gguf", "llama-3.1-8b-tiny", quant="Q8_0", with_tokenizer=False
        ),
    }


def cpu_budget(rates: speed.CpuRates, threads: int = 2, batch: int = 2) -> HardwareBudget:
    return HardwareBudget(
        gpus=(),
        ram_total_bytes=64 * GiB,
        ram_available_bytes=64 * GiB,
        cpu_threads=threads,
        cpu_threads_batch=batch,
        cpu_rates=rates,
    )


def bench_rates(path: Path, decode_tps: float, prompt_tps: float) -> speed.CpuRates:
    info = read_model_info(path)
    decode_bytes, layers, flops = cpu_work(info)
    return speed.rates_from_bench(
        decode_bytes=decode_bytes,
        layers=layers,
        prompt_flops=flops,
        repacked=repacked_on_cpu(info, DEFAULT_CPU_REPACK_TYPES),
        decode_tps=decode_tps,
        prompt_tps=prompt_tps,
        threads=2,
        threads_batch=2,
        numpy=NUMPY,
        physical_cores=2,
        logical_cores=2,
    )


def test_threads_default_to_one_per_physical_core_and_every_core_for_prompts() -> None:
    snap = no_gpu_box()
    smt = replace(snap, cpu=replace(snap.cpu, logical_cores=16, physical_cores=8))
    no_smt = replace(snap, cpu=replace(snap.cpu, logical_cores=2, physical_cores=2))
    b = budget_from_snapshot(smt)
    assert (b.cpu_threads, b.batch_threads) == (8, 16)
    b = budget_from_snapshot(no_smt)  # a VM without SMT: two, not half of two
    assert (b.cpu_threads, b.batch_threads) == (2, 2)
    b = budget_from_snapshot(smt, threads=3)  # --threads sets both, as llama-bench's -t
    assert (b.cpu_threads, b.batch_threads) == (3, 3)


def test_the_config_sets_threads_and_the_flag_wins() -> None:
    config = ModelSettings(threads=6, threads_batch=12)
    s = build_run_settings(config)
    assert (s.n_threads, s.n_threads_batch) == (6, 12)
    s = build_run_settings(config, threads=2)
    assert (s.n_threads, s.n_threads_batch) == (2, 2)
    s = build_run_settings(ModelSettings())
    assert (s.n_threads, s.n_threads_batch) == (None, None)  # the budget's (llama.cpp's) choice


def test_a_plan_loads_and_serves_with_both_thread_counts(models: dict[str, Path]) -> None:
    rates = bench_rates(models["small"], 100.0, 300.0)
    budget = replace(
        cpu_budget(rates, threads=4, batch=8), cpu_rates=replace(rates, logical_cores=8)
    )
    fitted = fit_and_plan(models["small"], RunSettings(n_ctx=1024), budget)
    assert (fitted.plan.n_threads, fitted.plan.n_threads_batch) == (4, 8)
    kwargs = llama_kwargs(fitted.plan)
    assert (kwargs["n_threads"], kwargs["n_threads_batch"]) == (4, 8)
    command = server_command(fitted.plan, host="127.0.0.1", port=8000, model_alias="small")
    assert command[command.index("--n_threads") + 1] == "4"
    assert command[command.index("--n_threads_batch") + 1] == "8"


def test_rates_reproduce_the_bench_they_come_from(models: dict[str, Path]) -> None:
    rates = bench_rates(models["small"], decode_tps=120.0, prompt_tps=360.0)
    p = fit(read_model_info(models["small"]), cpu_budget(rates), RunSettings(n_ctx=1024))
    assert p.decode_tps == pytest.approx(120.0, rel=0.01)
    assert p.prompt_tps == pytest.approx(360.0, rel=0.01)


def test_decode_scales_with_cores_not_with_threads_beyond_them(models: dict[str, Path]) -> None:
    rates = replace(bench_rates(models["8b"], 3.0, 20.0), physical_cores=4, logical_cores=8)
    info = read_model_info(models["8b"])
    tps = {
        n: fit(info, cpu_budget(rates, n, n), RunSettings(n_ctx=1024)).decode_tps
        for n in (1, 2, 4, 8, 16)
    }
    assert tps[1] < tps[2] < tps[4]
    # The shared memory bus: doubling cores gains less than double.
    assert tps[4] < 2 * tps[2]
    # SMT siblings add a little, oversubscribing nothing.
    assert tps[4] < tps[8] < 1.2 * tps[4]
    assert tps[16] == pytest.approx(tps[8])


def test_prompts_are_compute_bound_and_repacked_types_run_faster(models: dict[str, Path]) -> None:
    rates = bench_rates(models["8b"], 3.0, 20.0)
    q4 = read_model_info(models["8b"])
    q8 = read_model_info(models["8b-q8"])
    one = fit(q4, cpu_budget(rates, 2, 1), RunSettings(n_ctx=1024)).prompt_tps
    two = fit(q4, cpu_budget(rates, 2, 2), RunSettings(n_ctx=1024)).prompt_tps
    assert two == pytest.approx(2 * one, rel=0.01)  # FLOPs over threads
    plain = fit(q8, cpu_budget(rates, 2, 2), RunSettings(n_ctx=1024)).prompt_tps
    assert repacked_on_cpu(q4, DEFAULT_CPU_REPACK_TYPES)
    assert not repacked_on_cpu(q8, DEFAULT_CPU_REPACK_TYPES)
    assert plain < two / 2  # Q8_0 is not repacked: the plain dot-product rate


def test_a_small_model_pays_per_block_overheads(models: dict[str, Path]) -> None:
    """The same rates predict the small model far below its bytes-only speed."""
    rates = bench_rates(models["8b"], 3.0, 20.0)
    info = read_model_info(models["small"])
    decode_bytes, _, _ = cpu_work(info)
    bytes_only = 1 / speed.overlap(
        decode_bytes / (2 * rates.decode_bytes_per_thread_s),
        speed.memory_seconds(decode_bytes, rates.memory_bandwidth),
    )
    p = fit(info, cpu_budget(rates), RunSettings(n_ctx=1024))
    assert p.decode_tps < 0.9 * bytes_only


def test_the_calibration_is_cached_per_machine(tmp_path: Path) -> None:
    rates = speed.rates_from_numpy(NUMPY, 2, 2)
    cache = tmp_path / "llama_calibration.json"
    calibrate.store_rates(rates, cache, machine_key="this-machine")
    assert calibrate.cached_rates(cache, machine_key="this-machine") == rates
    # Another CPU, RAM or llama.cpp build is another fingerprint: measured anew.
    assert calibrate.cached_rates(cache, machine_key="another-machine") is None
    assert calibrate.cached_rates(cache, machine_key="this-machine", max_age_s=-1) is None


def test_predictions_converge_on_measured_runs(models: dict[str, Path], tmp_path: Path) -> None:
    from rigdeck.core.machine import fingerprint

    rates = bench_rates(models["small"], 100.0, 300.0)
    budget = cpu_budget(rates)
    history = RunHistory(tmp_path / "runs.sqlite3")
    first = fit_and_plan(models["small"], RunSettings(n_ctx=1024), budget, history=history)
    assert first.plan.predicted_decode_tps == pytest.approx(first.placement.decode_tps)
    predicted = first.plan.predicted_decode_tps
    assert predicted is not None
    measured = predicted * 0.6  # this machine is slower than the model says
    errors = []
    for _ in range(4):
        history.record(
            RunRecord(
                model_path=str(models["small"]),
                settings=first.plan.settings(),
                kind="bench",
                machine=fingerprint(),
                measured_decode_tps=measured,
                measured_prompt_tps=250.0,
            )
        )
        again = fit_and_plan(models["small"], RunSettings(n_ctx=1024), budget, history=history)
        assert again.placement.decode_tps == again.plan.predicted_decode_tps
        errors.append(abs((again.plan.predicted_decode_tps or 0) - measured) / measured)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.15
    # Runs on another machine or with other settings teach this one nothing.
    other = RunHistory(tmp_path / "other.sqlite3")
    other.record(
        RunRecord(
            model_path=str(models["small"]),
            settings=first.plan.settings(),
            machine=MachineFingerprint("h", "os", "another cpu", 64, 1),
            measured_decode_tps=measured,
        )
    )
    other.record(
        RunRecord(
            model_path=str(models["small"]),
            settings={**first.plan.settings(), "n_ctx": 4096},
            machine=fingerprint(),
            measured_decode_tps=measured,
        )
    )
    fresh = fit_and_plan(models["small"], RunSettings(n_ctx=1024), budget, history=other)
    assert fresh.plan.predicted_decode_tps == pytest.approx(predicted)


def test_blend_weights_each_run_like_the_model() -> None:
    assert blend(100.0, None, 0) == 100.0
    assert blend(None, 50.0, 1) == 50.0
    assert blend(100.0, 25.0, 1) == pytest.approx(50.0)  # halfway, geometrically


def test_a_cpu_bench_far_from_its_prediction_points_at_calibrating_again() -> None:
    tests = [
        {"test": "pp512", "tps": 370.0, "predicted_tps": 380.0},
        {"test": "tg128", "tps": 109.0, "predicted_tps": 188.0},
    ]
    note = drift_note(0, tests)
    assert note is not None and note.startswith("tg128 measured 42% below the prediction")
    assert note.endswith("rigdeck bench --calibrate measures them again")
    assert drift_note(0, tests[:1]) is None  # 3% off: the rates hold
    assert drift_note(-1, tests) is None  # GPU speeds do not come from the CPU's rates
    assert drift_note(0, [{"test": "tg8", "tps": 50.0, "predicted_tps": None}]) is None


def test_a_cancelled_calibration_stops_and_caches_nothing(tmp_path: Path) -> None:
    # The app quitting while the first fit calibrates: the exit is not held up, and the next
    # start measures properly instead of reading numpy's stand-in figures.
    cache = tmp_path / "llama_calibration.json"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LoadCancelled, match="cancelled"):
        calibrate.load_or_calibrate(cache, numpy=NUMPY, cancel=cancel)
    assert not cache.exists()
