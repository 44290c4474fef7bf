"""`rigdeck fit`: local and Hub targets, hypothetical machines, JSON shape, exit codes, errors.

Expected figures come from the fit function itself (same model, same budget), or from
invariants every placement must satisfy; nothing here hard-codes a byte count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import budget_from_snapshot, with_sizes
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run import calibrate
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.core.models.sources.target import parse_target
from rigdeck.core.telemetry.sampler import TelemetrySampler
from rigdeck.core.units import parse_size
from rigdeck.tui.cli import main
from tests.support.fake_hub import FakeHub
from tests.support.gguf_factory import write_model
from tests.support.models_env import write_calibrations

MiB = 1 << 20
RIGDECK = Path(sys.executable).with_name("rigdeck")
DEVICE_KEYS = {
    "kind",
    "name",
    "budget_bytes",
    "weights_bytes",
    "kv_bytes",
    "compute_bytes",
    "other_bytes",
    "total_bytes",
}
RESULT_KEYS = {
    "fits",
    "verdict",
    "gpu_layers",
    "total_layers",
    "devices",
    "predicted",
    "why",
    "suggestions",
    "file",
    "quant",
    "file_size_bytes",
    "model",
    "settings",
    "notes",
    "remote",
}


@pytest.fixture(autouse=True)
def _calibrated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cached CPU calibrations in a private cache dir: no measuring, no user files touched."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    cal = speed.CpuCalibration(
        bandwidth_1t=12e9,
        bandwidth_all=40e9,
        threads=max(1, os.cpu_count() or 1),
        sgemm_flops=200e9,
        measured_at=time.time(),
    )
    path = speed.default_cache_path()
    assert path.is_relative_to(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(cal)), encoding="utf-8")
    write_calibrations(path.parent)  # llama.cpp's rates too: no demo bench in a test
    return cache


@pytest.fixture(autouse=True)
def _no_hub_token(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path_factory.mktemp("hf") / "no-token"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sparse GGUFs shaped like real models: tens of GB on paper, a few MB on disk."""
    d = tmp_path_factory.mktemp("models")
    return {
        "8b": write_model(
            d / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "llama-3.1-8b", with_tokenizer=False
        ),
        "70b": write_model(
            d / "Meta-Llama-3.1-70B-Instruct-Q4_K_M.gguf", "llama-3.1-70b", with_tokenizer=False
        ),
        "moe": write_model(
            d / "Qwen3-30B-A3B-Q4_K_M.gguf", "qwen3-30b-a3b", split=2, with_tokenizer=False
        ),
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["fit", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = run(capsys, *argv, "--json")
    assert err == "", err
    return rc, json.loads(out)


def expected(
    path: Path,
    *,
    vram: list[str] | None,
    ram: str | None,
    settings: RunSettings | None = None,
    gpu: str | None = None,
) -> Any:
    """The placement the fit function gives for the budget the CLI builds from those flags."""
    sampler = TelemetrySampler(watched=[])
    try:
        snap = sampler.sample()
    finally:
        sampler.close()
    base = budget_from_snapshot(
        snap, calibration=speed.load_or_measure_cpu(), rates=calibrate.cached_rates()
    )
    budget = with_sizes(
        base,
        vram=None if vram is None else [parse_size(v) for v in vram],
        ram=None if ram is None else parse_size(ram),
        gpu_name=gpu,
    )
    return fit(ModelInfo.from_header(read_gguf(path)), budget, settings or RunSettings())


def check_consistent(r: dict[str, Any]) -> None:
    """Invariants of one file's result: keys, sums, verdict against layers, fits against room."""
    assert r.keys() >= RESULT_KEYS
    assert r["verdict"] in {"gpu", "partial", "cpu", "none"}
    assert set(r["predicted"]) == {"prompt_tps", "decode_tps"}
    for d in r["devices"]:
        assert d.keys() >= DEVICE_KEYS
        assert d["kind"] in {"gpu", "cpu"}
        parts = d["weights_bytes"] + d["kv_bytes"] + d["compute_bytes"] + d["other_bytes"]
        assert parts == d["total_bytes"], d
        assert d["free_after_bytes"] == d["budget_bytes"] - d["total_bytes"]
    assert [d["kind"] for d in r["devices"]].count("cpu") == 1
    gpus = [d for d in r["devices"] if d["kind"] == "gpu"]
    assert 0 <= r["gpu_layers"] <= r["total_layers"]
    assert sum(d["layers"] for d in r["devices"]) == r["total_layers"] - 1  # blocks
    if not r["fits"]:
        assert r["verdict"] == "none"
        assert r["why"].startswith("does not fit")
        return
    margins = {"gpu": r["settings"]["gpu_margin_bytes"], "cpu": r["settings"]["ram_margin_bytes"]}
    for d in r["devices"]:
        assert d["total_bytes"] + margins[d["kind"]] <= d["budget_bytes"], d
    if r["verdict"] == "gpu":
        assert r["gpu_layers"] == r["total_layers"] and gpus
    elif r["verdict"] == "cpu":
        assert r["gpu_layers"] == 0
        assert all(d["weights_bytes"] == 0 for d in gpus)
    else:
        assert 0 < r["gpu_layers"] < r["total_layers"] or r["n_cpu_moe"] > 0
    assert r["predicted"]["decode_tps"] > 0 and r["predicted"]["prompt_tps"] > 0


def same_placement(r: dict[str, Any], p: Any) -> None:
    assert (r["fits"], r["verdict"], r["gpu_layers"], r["total_layers"]) == (
        p.fits,
        p.verdict,
        p.gpu_layers,
        p.total_layers,
    )
    assert [
        (
            d["kind"],
            d["weights_bytes"],
            d["kv_bytes"],
            d["compute_bytes"],
            d["other_bytes"],
            d["total_bytes"],
            d["budget_bytes"],
        )
        for d in r["devices"]
    ] == [
        (
            d.kind,
            d.weights_bytes,
            d.kv_bytes,
            d.compute_bytes,
            d.other_bytes,
            d.total_bytes,
            d.budget_bytes,
        )
        for d in p.devices
    ]
    assert r["why"] == p.why
    assert [s["label"] for s in r["suggestions"]] == [s.label for s in p.suggestions]


# --------------------------------------------------------------------------------------------
# Local files


def test_demo_model_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    demo = demo_model_path()
    if demo is None:
        pytest.skip("the demo model package is not installed")
    rc, r = run_json(capsys, str(demo))
    check_consistent(r)
    assert rc == (0 if r["fits"] else 1)
    info = ModelInfo.from_header(read_gguf(demo))
    assert (r["quant"], r["file_size_bytes"]) == (info.quant, demo.stat().st_size)
    assert r["model"]["name"] == info.name and r["model"]["parts"] == [str(demo)]
    assert r["remote"] is None
    assert r["budget"]["hypothetical"] == {"vram": False, "ram": False}
    cpu = next(d for d in r["devices"] if d["kind"] == "cpu")
    assert cpu["budget_bytes"] == r["budget"]["ram_available_bytes"]


def test_fit_finds_models_by_name_as_run_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    demo = demo_model_path()
    if demo is None:
        pytest.skip("the demo model package is not installed")
    machine = ("--vram", "8G", "--ram", "16G")
    _, by_path = run_json(capsys, str(demo), *machine)
    _, by_word = run_json(capsys, "demo", *machine)
    assert by_word["target"] == "demo" and by_word["model"]["location"] == str(demo)
    assert by_word["devices"] == by_path["devices"]

    # A name no real model has, so models elsewhere on this machine cannot make it ambiguous.
    folder = tmp_path / "models"
    folder.mkdir()
    named = write_model(folder / "Frobnic-Test-8B-Q4_K_M.gguf", "llama-3.1-8b")
    config = tmp_path / "rigdeck.toml"
    config.write_text(f'[models]\ndirs = ["{folder}"]\n')
    rc = main(["--config", str(config), "fit", "frobnic-test", *machine, "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc in (0, 1) and r["model"]["location"] == str(named)
    rc = main(["--config", str(config), "fit", "no-such-model-anywhere", *machine])
    line = one_line_error(rc, *capsys.readouterr())
    assert "no-such-model-anywhere" in line


def test_demo_model_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    demo = demo_model_path()
    if demo is None:
        pytest.skip("the demo model package is not installed")
    rc, out, err = run(capsys, str(demo), "--vram", "8G", "--ram", "16G")
    p = expected(demo, vram=["8G"], ram="16G")
    assert rc == 0 and err == ""
    info = ModelInfo.from_header(read_gguf(demo))
    assert info.name in out and info.quant in out
    assert "hypothetical: 8.0 GiB GPU" in out and "16.0 GiB RAM" in out
    assert f"all {p.total_layers} layers on the GPU" in out
    for label in ("weights", "KV cache", "compute", "other", "total", "budget", "free after"):
        assert label in out
    assert "decode" in out and "tok/s" in out
    assert p.why in out.replace("\n", " ")


def test_8b_on_a_24g_card_and_64g_ram(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    rc, r = run_json(capsys, str(models["8b"]), "--vram", "24G", "--ram", "64G")
    p = expected(models["8b"], vram=["24G"], ram="64G")
    check_consistent(r)
    same_placement(r, p)
    assert rc == 0 and r["fits"] and r["verdict"] == "gpu"
    assert r["budget"]["hypothetical"] == {"vram": True, "ram": True}
    assert [g["total_bytes"] for g in r["budget"]["gpus"]] == [24 << 30]
    assert r["budget"]["ram_available_bytes"] == 64 << 30
    assert r["settings"]["n_ctx"] == 4096 and r["settings"]["type_k"] == "f16"


def test_70b_on_a_small_machine_does_not_fit(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    rc, r = run_json(capsys, str(models["70b"]), "--vram", "8G", "--ram", "16G")
    p = expected(models["70b"], vram=["8G"], ram="16G")
    check_consistent(r)
    same_placement(r, p)
    assert rc == 1 and not r["fits"] and r["verdict"] == "none"
    assert "short" in r["why"]
    assert r["suggestions"] and all(
        set(s) >= {"label", "kind", "fits", "verdict"} for s in r["suggestions"]
    )

    rc, out, _ = run(capsys, str(models["70b"]), "--vram", "8G", "--ram", "16G")
    assert rc == 1
    assert "does not fit" in out and "what would help" in out
    assert p.suggestions[0].label in out.replace("\n", " ")


def test_70b_on_two_big_cards_splits_across_both(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    rc, r = run_json(
        capsys, str(models["70b"]), "--vram", "24G,24G", "--ram", "64G", "--gpu", "RTX 4090"
    )
    check_consistent(r)
    same_placement(r, expected(models["70b"], vram=["24G", "24G"], ram="64G", gpu="RTX 4090"))
    gpus = [d for d in r["devices"] if d["kind"] == "gpu"]
    assert len(gpus) == 2 and all(d["weights_bytes"] > 0 for d in gpus)
    assert all(g["name"] == "RTX 4090" for g in r["budget"]["gpus"])
    assert rc == (0 if r["fits"] else 1)


def test_split_model_from_any_part(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    first = models["moe"]
    second = first.with_name(first.name.replace("00001-of", "00002-of"))
    _, a = run_json(capsys, str(first), "--vram", "24G", "--ram", "64G")
    _, b = run_json(capsys, str(second), "--vram", "24G", "--ram", "64G")
    check_consistent(a)
    assert a["model"]["parts"] == b["model"]["parts"] == [str(first), str(second)]
    assert a["file_size_bytes"] == first.stat().st_size + second.stat().st_size
    assert a["devices"] == b["devices"] and a["model"]["moe"] is True


def test_settings_flags_and_training_context(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    info = ModelInfo.from_header(read_gguf(models["8b"]))
    _, r = run_json(
        capsys,
        str(models["8b"]),
        "--ctx",
        "0",
        "--kv",
        "q8_0",
        "--flash-attn",
        "--vram",
        "24G",
        "--ram",
        "64G",
    )
    check_consistent(r)
    assert r["settings"]["n_ctx"] == -(-info.n_ctx_train // 256) * 256
    assert (r["settings"]["type_k"], r["settings"]["type_v"]) == ("q8_0", "q8_0")
    assert r["settings"]["flash_attn"] is True
    same_placement(
        r,
        expected(
            models["8b"],
            vram=["24G"],
            ram="64G",
            settings=RunSettings(n_ctx=0, type_k="q8_0", type_v="q8_0", flash_attn=True),
        ),
    )


def test_a_quantized_kv_without_flash_attention_keeps_v_f16_and_says_so(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    flags = ("--kv", "q8_0", "--no-flash-attn", "--vram", "24G", "--ram", "64G")
    rc, r = run_json(capsys, str(models["8b"]), *flags)
    assert rc == 0
    check_consistent(r)
    s = r["settings"]
    assert (s["type_k"], s["type_v"], s["flash_attn"], s["v_fallback"]) == (
        "q8_0",
        "f16",
        False,
        True,
    )
    same_placement(
        r,
        expected(
            models["8b"],
            vram=["24G"],
            ram="64G",
            settings=RunSettings(type_k="q8_0", type_v="f16", flash_attn=False),
        ),
    )
    rc, out, _ = run(capsys, str(models["8b"]), *flags)
    assert rc == 0
    assert "KV cache K q8_0, V f16 (a quantized V needs flash attention)" in out


def test_vram_zero_means_no_gpu_and_ram_alone_keeps_this_machines_gpus(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path]
) -> None:
    _, r = run_json(capsys, str(models["8b"]), "--vram", "0", "--ram", "64G")
    check_consistent(r)
    assert r["budget"]["gpus"] == [] and [d["kind"] for d in r["devices"]] == ["cpu"]
    assert r["verdict"] in {"cpu", "none"} and r["gpu_layers"] == 0

    _, r = run_json(capsys, str(models["8b"]), "--ram", "64G")
    assert r["budget"]["hypothetical"] == {"vram": False, "ram": True}
    assert r["budget"]["ram_available_bytes"] == 64 << 30
    sampler = TelemetrySampler(watched=[])
    try:
        snap = sampler.sample()
    finally:
        sampler.close()
    assert len(r["budget"]["gpus"]) == len([g for g in snap.gpus if g.memory_total])

    _, r = run_json(capsys, str(models["8b"]), "--vram", "16G")
    assert r["budget"]["hypothetical"] == {"vram": True, "ram": False}
    assert r["budget"]["ram_total_bytes"] == snap.memory.total


def test_config_models_keys_apply_and_flags_win(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "rigdeck.toml"
    config.write_text('[models]\ncontext = 8192\nkv_type = "q8_0"\nflash_attn = "on"\n')
    rc = main(
        [
            "--config",
            str(config),
            "fit",
            str(models["8b"]),
            "--vram",
            "24G",
            "--ram",
            "64G",
            "--json",
        ]
    )
    r = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (r["settings"]["n_ctx"], r["settings"]["type_k"], r["settings"]["flash_attn"]) == (
        8192,
        "q8_0",
        True,
    )
    main(
        [
            "--config",
            str(config),
            "fit",
            str(models["8b"]),
            "--ctx",
            "2048",
            "--kv",
            "f16",
            "--vram",
            "24G",
            "--ram",
            "64G",
            "--json",
        ]
    )
    r = json.loads(capsys.readouterr().out)
    assert (r["settings"]["n_ctx"], r["settings"]["type_k"]) == (2048, "f16")


# --------------------------------------------------------------------------------------------
# Errors: exit 2, one line, no traceback


def one_line_error(rc: int, out: str, err: str) -> str:
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert lines[0].startswith("rigdeck: ")
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--vram", "abc"], "--vram"),
        (["--vram", "24G,lots"], "--vram"),
        (["--ram", "0"], "--ram"),
        (["--ctx", "-5"], "--ctx"),
    ],
)
def test_bad_flags(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], flags: list[str], words: str
) -> None:
    line = one_line_error(*run(capsys, str(models["8b"]), *flags))
    assert words in line


def test_truncated_hostile_and_missing_files(
    capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    with models["8b"].open("rb") as f:
        truncated.write_bytes(f.read(4096))
    hostile = tmp_path / "hostile.gguf"
    hostile.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 16)
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    for path in (truncated, hostile, text):
        line = one_line_error(*run(capsys, str(path)))
        assert path.name in line
    line = one_line_error(*run(capsys, str(tmp_path / "nope.gguf")))
    assert "no such file" in line
    line = one_line_error(*run(capsys, "bartowski/Some-GGUF"))
    assert "hf:bartowski/Some-GGUF" in line  # a Hub name without the prefix gets a hint


@pytest.mark.parametrize(
    "text", ["hf:", "hf:onlyowner", "hf:o/n:Q4_K_M/x.gguf", "hf:o/n/dir/notes.txt"]
)
def test_malformed_hub_targets(capsys: pytest.CaptureFixture[str], text: str) -> None:
    one_line_error(*run(capsys, text))


def test_target_forms() -> None:
    t = parse_target("hf:org/Repo-GGUF")
    assert (t.repo_id, t.filename, t.quant, t.is_repo) == ("org/Repo-GGUF", None, None, True)
    t = parse_target("hf:org/Repo-GGUF@v2/sub/model-Q4_K_M.gguf")
    assert (t.repo_id, t.revision, t.filename, t.is_repo) == (
        "org/Repo-GGUF",
        "v2",
        "sub/model-Q4_K_M.gguf",
        False,
    )
    assert parse_target("hf:org/Repo-GGUF:Q5_K_M").quant == "Q5_K_M"
    assert parse_target("hf:org/Repo-GGUF/Q5_K_M").quant == "Q5_K_M"
    assert parse_target("~/m.gguf").path == Path.home() / "m.gguf"


# --------------------------------------------------------------------------------------------
# The Hub (a local server speaking its protocol, through the real client)


QUANTS = ("Q4_K_M", "Q6_K", "Q8_0")


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("repo")
    files = {}
    for q in QUANTS:
        p = write_model(
            d / f"Llama-3.1-8B-Instruct-{q}.gguf", "llama-3.1-8b", quant=q, with_tokenizer=False
        )
        files[p.name] = p
    write_model(
        d / "Llama-3.1-8B-Instruct-F16.gguf",
        "llama-3.1-8b",
        quant="F16",
        split=2,
        with_tokenizer=False,
    )
    for p in sorted(d.glob("*-F16-0000*")):
        files[p.name] = p
    return files


@pytest.fixture
def fake(hub_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        # Sparse files are never downloaded whole: give them distinct made-up LFS hashes.
        content: dict[str, Path | bytes] = {**hub_files, "mmproj-model-f16.gguf": b"GGUF" * 64}
        server.add_repo(
            "org/Llama-GGUF",
            content,
            sha256={name: f"{i + 1:064x}" for i, name in enumerate(hub_files)},
        )
        server.add_repo(
            "org/Gated-GGUF",
            {"a-Q4_K_M.gguf": hub_files["Llama-3.1-8B-Instruct-Q4_K_M.gguf"]},
            gated=True,
            sha256={"a-Q4_K_M.gguf": "e" * 64},
        )
        server.add_repo(
            "org/Hostile-GGUF",
            {"x-Q4_K_M.gguf": b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 64},
        )
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_one_remote_file_costs_a_few_requests_and_matches_the_local_fit(
    capsys: pytest.CaptureFixture[str], fake: FakeHub, hub_files: dict[str, Path]
) -> None:
    name = "Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    rc, r = run_json(capsys, f"hf:org/Llama-GGUF/{name}", "--vram", "24G", "--ram", "64G")
    check_consistent(r)
    local = expected(hub_files[name], vram=["24G"], ram="64G")
    same_placement(r, local)
    assert rc == 0
    assert r["file"] == name and r["quant"] == "Q4_K_M"
    assert r["file_size_bytes"] == hub_files[name].stat().st_size
    assert r["model"]["repo"] == "org/Llama-GGUF" and r["model"]["location"].startswith("hf:")
    served = fake.log
    header = read_gguf(hub_files[name]).data_offset
    assert r["remote"]["requests"] == len(served) <= 4  # a HEAD and one to three range reads
    # What reached this machine: the header, within a stream step and a socket buffer; the
    # server may have written more into its send buffer before the stream was closed.
    assert header <= r["remote"]["bytes"] <= 1.1 * header + 256 * 1024
    assert r["remote"]["bytes"] <= sum(s.body_bytes for s in served if s.server == "cdn")
    assert r["remote"]["bytes"] <= 4 * MiB  # of a ~5 GB file


def test_remote_split_model_reads_every_part(
    capsys: pytest.CaptureFixture[str], fake: FakeHub, hub_files: dict[str, Path]
) -> None:
    parts = sorted(n for n in hub_files if "-F16-" in n)
    _, r = run_json(capsys, f"hf:org/Llama-GGUF/{parts[1]}", "--vram", "24G", "--ram", "64G")
    check_consistent(r)
    same_placement(r, expected(hub_files[parts[0]], vram=["24G"], ram="64G"))
    assert r["model"]["parts"] == parts
    assert r["file_size_bytes"] == sum(hub_files[p].stat().st_size for p in parts)
    assert r["remote"]["requests"] == len(fake.log) <= 8


def test_whole_repo_fits_every_quant(
    capsys: pytest.CaptureFixture[str], fake: FakeHub, hub_files: dict[str, Path]
) -> None:
    rc, r = run_json(capsys, "hf:org/Llama-GGUF", "--vram", "8G", "--ram", "64G")
    assert r["repo"] == "org/Llama-GGUF" and r["revision"] == "main"
    files = r["files"]
    assert sorted(f["quant"] for f in files) == sorted([*QUANTS, "F16"])  # no projector
    assert [f["file_size_bytes"] for f in files] == sorted(f["file_size_bytes"] for f in files)
    for f in files:
        check_consistent(f)
        local = hub_files[f["model"]["parts"][0]]
        same_placement(f, expected(local, vram=["8G"], ram="64G"))
    assert r["fits"] == any(f["fits"] for f in files)
    assert rc == (0 if r["fits"] else 1)
    assert r["remote"]["requests"] == sum(f["remote"]["requests"] for f in files)
    assert r["remote"]["bytes"] == sum(f["remote"]["bytes"] for f in files)
    assert r["remote"]["bytes"] <= 4 * MiB * len(files)

    rc, out, err = run(capsys, "hf:org/Llama-GGUF", "--vram", "8G", "--ram", "64G")
    assert err == ""
    for q in (*QUANTS, "F16"):
        assert q in out
    assert "header reads" in out and "best here" in out


def test_repo_quant_selector(capsys: pytest.CaptureFixture[str], fake: FakeHub) -> None:
    _, r = run_json(capsys, "hf:org/Llama-GGUF:Q6_K", "--vram", "24G", "--ram", "64G")
    assert [f["quant"] for f in r["files"]] == ["Q6_K"]
    line = one_line_error(*run(capsys, "hf:org/Llama-GGUF:IQ1_S"))
    assert "no IQ1_S file" in line and "Q4_K_M" in line


def test_hub_errors_are_one_line(capsys: pytest.CaptureFixture[str], fake: FakeHub) -> None:
    line = one_line_error(*run(capsys, "hf:org/Missing-GGUF"))
    assert "org/Missing-GGUF" in line and "not found" in line
    line = one_line_error(*run(capsys, "hf:org/Llama-GGUF/nope-Q4_K_M.gguf"))
    assert "nope-Q4_K_M.gguf" in line
    line = one_line_error(*run(capsys, "hf:org/Gated-GGUF/a-Q4_K_M.gguf"))
    assert "gated" in line
    line = one_line_error(*run(capsys, "hf:org/Hostile-GGUF/x-Q4_K_M.gguf"))
    assert "x-Q4_K_M.gguf" in line
    # A whole repo whose only file is unreadable: still one line, exit 2.
    one_line_error(*run(capsys, "hf:org/Hostile-GGUF"))


def test_unreachable_hub_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import types

    from huggingface_hub.utils import _http as hf_http

    # huggingface_hub retries refused connections with waits; record them instead of sleeping.
    waits: list[float] = []
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=waits.append))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    line = one_line_error(*run(capsys, "hf:org/Llama-GGUF"))
    assert "cannot reach" in line and "HF_ENDPOINT" in line


# --------------------------------------------------------------------------------------------
# The installed command


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RIGDECK_", "HF_"))}
    return {**env, "XDG_CACHE_HOME": str(cache), "NO_COLOR": "1", **extra}


def test_installed_binary_json_and_exit_codes(models: dict[str, Path], _calibrated: Path) -> None:
    assert RIGDECK.is_file(), "the package is not installed in this environment"
    done = subprocess.run(
        [str(RIGDECK), "fit", str(models["8b"]), "--vram", "24G", "--ram", "64G", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(_calibrated),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    r = json.loads(done.stdout)
    check_consistent(r)
    same_placement(r, expected(models["8b"], vram=["24G"], ram="64G"))

    done = subprocess.run(
        [str(RIGDECK), "fit", str(models["70b"]), "--vram", "8G", "--ram", "16G"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(_calibrated),
        check=False,
    )
    assert done.returncode == 1 and "does not fit" in done.stdout

    done = subprocess.run(
        [str(RIGDECK), "fit", str(models["8b"]), "--vram", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(_calibrated),
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_installed_binary_against_the_hub_keeps_stderr_clean(
    fake: FakeHub, _calibrated: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(RIGDECK), "fit", "hf:org/Llama-GGUF", "--vram", "24G", "--ram", "64G", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(_calibrated, HF_ENDPOINT=fake.url, HF_HOME=str(tmp_path / "hf")),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    r = json.loads(done.stdout)
    assert len(r["files"]) == len(QUANTS) + 1
