"""Factory files load in the real llama.cpp, and llama.cpp agrees with our reading of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_factory import FULL_PRESETS, PRESETS, TINY_PRESETS, write_model

from rigdeck.core.models.format.gguf import read_gguf

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow


def _load(path: Path, **kwargs: object) -> object:
    return llama_cpp.Llama(
        model_path=str(path),
        n_gpu_layers=0,
        use_mmap=True,
        n_ctx=128,
        n_threads=1,
        verbose=False,
        **kwargs,
    )


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_preset_loads_and_generates(tmp_path: Path, preset: str) -> None:
    path = write_model(tmp_path / "m.gguf", preset)
    header = read_gguf(path)
    model = _load(path)
    # llama.cpp counts the same bytes and parameters from the same tensor table.
    assert llama_cpp.llama_model_size(model.model) == header.weights_bytes  # type: ignore[attr-defined]
    assert llama_cpp.llama_model_n_params(model.model) == sum(  # type: ignore[attr-defined]
        t.n_elements for t in header.tensors
    )
    assert model.n_vocab() == header.vocab_size == 1024  # type: ignore[attr-defined]
    meta = model.metadata  # type: ignore[attr-defined]
    assert meta["general.architecture"] == header.architecture == PRESETS[preset].arch
    assert int(meta[f"{header.architecture}.block_count"]) == header.arch_get("block_count")
    # Zero weights give flat logits; generation still runs end to end.
    out = model.create_completion("hi", max_tokens=2, temperature=0)  # type: ignore[attr-defined]
    assert out["usage"]["completion_tokens"] >= 1


def test_split_model_loads(tmp_path: Path) -> None:
    first = write_model(tmp_path / "m.gguf", "qwen3-30b-a3b-tiny", split=3)
    header = read_gguf(first)
    model = _load(first)
    assert llama_cpp.llama_model_size(model.model) == header.weights_bytes  # type: ignore[attr-defined]


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_full_preset_vocabulary_loads(tmp_path: Path, preset: str) -> None:
    # The real-size files are sparse; loading their weights would page in gigabytes, so check
    # that llama.cpp accepts the metadata and tokenizer.
    path = write_model(tmp_path / "m.gguf", preset)
    header = read_gguf(path)
    model = _load(path, vocab_only=True)
    assert model.n_vocab() == header.vocab_size == PRESETS[preset].n_vocab  # type: ignore[attr-defined]
    tokens = model.tokenize(b"hello world")  # type: ignore[attr-defined]
    assert tokens and all(0 <= t < header.vocab_size for t in tokens)  # type: ignore[operator]
