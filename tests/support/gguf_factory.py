"""Synthetic GGUF files shaped like real models, for tests.

The header (metadata, tokenizer, tensor table) is written exactly as llama.cpp's converter would,
then the file is truncated up to its full size: the tensor data is a hole, so a 40 GB "70B" costs
a few MB on disk, and every tensor reads back as zeros. llama.cpp loads these files (the tiny
presets are small enough to really run: zero weights give constant logits, which is fine for
load, memory and streaming tests).

Main entry points::

    write_model(tmp_path / "m.gguf", "llama-3.1-8b")                    # Q4_K_M-like mix
    write_model(tmp_path / "m.gguf", "qwen3-30b-a3b-tiny", quant="Q8_0") # loadable in tests
    write_model(tmp_path / "m.gguf", "llama-3.1-70b", split=3)          # -00001-of-00003.gguf ...
    write_raw(path, {"general.architecture": "llama"}, [TensorSpec("t", (32,), F32)])
    encode_header(...)                                                  # bytes, for hostile cases

Metadata values are typed the way llama.cpp expects (it rejects a uint32 key written as int32):
Python ints become uint32 (uint64 / int64 when out of range), floats float32, bools bool, str
string, lists/tuples arrays (ints as int32, floats as float32). Use ``Val`` to pick a type, or
to write something deliberately wrong.
"""

from __future__ import annotations

import itertools
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rigdeck.core.models.format.ggml_types import FILE_TYPE_IDS, GGML_TYPES, type_by_name

# GGUF value types (kept local: the factory must not depend on the reader it tests).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = (
    range(13)
)
_PACK = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}
_ARRAY_CODE = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}

F32, F16 = 0, 1
# llama.cpp token types.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = range(
    1, 7
)


# --------------------------------------------------------------------------------------------
# Low level: header bytes


@dataclass(frozen=True)
class Val:
    """A metadata value with an explicit GGUF type.

    For arrays give ``elem_type``; ``count`` overrides the written length (to lie about it). An
    unknown ``type`` writes ``value`` (bytes) verbatim after the type id.
    """

    type: int
    value: object
    elem_type: int | None = None
    count: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    """One tensor table entry. ``shape`` is in ggml order (ne[0] first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int | None = None  # None: the next aligned slot after the previous tensor
    n_dims: int | None = None  # written dimension count; None: len(shape)

    @property
    def nbytes(self) -> int:
        t = GGML_TYPES.get(self.ggml_type)
        if t is None or any(d < 0 or d >= 2**63 for d in self.shape):
            return 0
        n = 1
        for d in self.shape:
            n *= d
        if n >= 2**63:
            return 0  # a deliberately impossible shape: no data to write
        return n // t.block_size * t.type_size


def _infer(value: object) -> Val:
    if isinstance(value, Val):
        return value
    if isinstance(value, bool):
        return Val(BOOL, value)
    if isinstance(value, int):
        if 0 <= value < 2**32:
            return Val(UINT32, value)
        return Val(UINT64 if value >= 0 else INT64, value)
    if isinstance(value, float):
        return Val(FLOAT32, value)
    if isinstance(value, str):
        return Val(STRING, value)
    if isinstance(value, list | tuple):
        if not value:
            return Val(ARRAY, (), INT32)
        first = value[0]
        if isinstance(first, str):
            elem = STRING
        elif isinstance(first, bool):
            elem = BOOL
        elif isinstance(first, float):
            elem = FLOAT32
        elif isinstance(first, int):
            elem = INT32
        elif isinstance(first, list | tuple):
            elem = ARRAY
        else:
            raise TypeError(f"cannot infer a GGUF array type for {first!r}")
        return Val(ARRAY, value, elem)
    raise TypeError(f"cannot infer a GGUF type for {value!r}")


def encode_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _encode_strings(items: Iterable[str]) -> bytes:
    pack = struct.Struct("<Q").pack
    parts = []
    for item in items:
        data = item.encode()
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _encode_payload(v: Val) -> bytes:
    """The value bytes after the type id."""
    if v.type == STRING:
        assert isinstance(v.value, str | bytes)
        return encode_string(v.value)
    if v.type in _PACK:
        return struct.pack(_PACK[v.type], v.value)
    if v.type == ARRAY:
        items = v.value
        assert isinstance(items, Sequence) and v.elem_type is not None
        count = len(items) if v.count is None else v.count
        head = struct.pack("<IQ", v.elem_type, count)
        if v.elem_type == STRING:
            return head + _encode_strings(items)  # type: ignore[arg-type]
        if v.elem_type in _ARRAY_CODE:
            return head + array(_ARRAY_CODE[v.elem_type], items).tobytes()  # type: ignore[arg-type]
        if v.elem_type == BOOL:
            return head + bytes(bool(x) for x in items)
        if v.elem_type == ARRAY:
            return head + b"".join(_encode_payload(_infer(x)) for x in items)
        return head + b"".join(items)  # type: ignore[arg-type]
    assert isinstance(v.value, bytes), "unknown value types take raw bytes"
    return v.value


def _encode_kv(key: str, value: object) -> bytes:
    v = _infer(value)
    return encode_string(key) + struct.pack("<I", v.type) + _encode_payload(v)


def _align(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def layout(tensors: Sequence[TensorSpec], alignment: int = 32) -> list[int]:
    """Data-section offsets: given ones kept, missing ones packed after the previous tensor."""
    offsets = []
    next_free = 0
    for t in tensors:
        offset = next_free if t.offset is None else t.offset
        offsets.append(offset)
        next_free = _align(offset + t.nbytes, alignment)
    return offsets


def encode_header(
    metadata: Mapping[str, object],
    tensors: Sequence[TensorSpec] = (),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_tensors: int | None = None,
    n_kv: int | None = None,
    pad: bool = True,
) -> tuple[bytes, int]:
    """Header bytes (padded to the data section when ``pad``) and the data section's size.

    ``n_tensors``/``n_kv`` override the counts written (to lie about them).
    """
    alignment = metadata.get("general.alignment", 32)
    if isinstance(alignment, Val):
        alignment = alignment.value
    assert isinstance(alignment, int)
    align = alignment if alignment > 0 and not alignment & (alignment - 1) else 32
    out = [
        magic,
        struct.pack("<I", version),
        struct.pack("<Q", len(tensors) if n_tensors is None else n_tensors),
        struct.pack("<Q", len(metadata) if n_kv is None else n_kv),
    ]
    out.extend(_encode_kv(k, v) for k, v in metadata.items())
    offsets = layout(tensors, align)
    for t, offset in zip(tensors, offsets, strict=True):
        n_dims = len(t.shape) if t.n_dims is None else t.n_dims
        out.append(encode_string(t.name))
        out.append(struct.pack("<I", n_dims))
        out.append(b"".join(struct.pack("<Q", d % 2**64) for d in t.shape))
        out.append(struct.pack("<IQ", t.ggml_type, offset))
    header = b"".join(out)
    if pad and tensors:
        header += b"\0" * (-len(header) % align)
    data_size = max((o + t.nbytes for t, o in zip(tensors, offsets, strict=True)), default=0)
    return header, _align(data_size, align) if tensors else 0


def write_raw(
    path: str | Path,
    metadata: Mapping[str, object],
    tensors: Sequence[TensorSpec] = (),
    *,
    size: int | None = None,
    **header_options: object,
) -> Path:
    """Write a GGUF with this metadata and tensor table; tensor data is a sparse hole of zeros.

    ``size`` truncates (or extends) the file to that many bytes instead of header + data.
    """
    header, data_size = encode_header(metadata, tensors, **header_options)  # type: ignore[arg-type]
    path = Path(path)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_size if size is None else size)
    return path


# --------------------------------------------------------------------------------------------
# Tokenizers


def _byte_chars() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the 256 byte values (GPT-2 scheme).

    In the order real vocabularies list them: printable bytes first (token 0 is "!"), then the
    rest, which map to U+0100 upwards.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    rest = [b for b in range(256) if b not in set(keep)]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _words(n: int) -> list[str]:
    """``n`` distinct letter strings, shortest first: "aa", "ab", ..., "aaa", ..."""
    out: list[str] = []
    length = 2
    while len(out) < n:
        for combo in itertools.product(_LETTERS, repeat=length):
            out.append("".join(combo))
            if len(out) == n:
                break
        length += 1
    return out


@dataclass(frozen=True)
class TokenizerSpec:
    """A synthetic tokenizer laid out like a real one.

    Ids: ``head`` specials, then the 256 byte tokens, then generated words, then ``tail``
    specials, then ``[PAD{i}]`` fillers up to the vocabulary size (as the converter pads).
    """

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    head: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    n_pad: int = 0
    bos: str | None = None
    eos: str | None = None
    eot: str | None = None
    unk: str | None = None
    pad: str | None = None
    add_bos: bool = False
    merges_per_word: float = 1.0  # real BPE vocabularies list ~1-2.2 merges per token
    chat_template: str = ""


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None


def build_vocab(spec: TokenizerSpec, n_vocab: int) -> Vocab:
    n_words = n_vocab - len(spec.head) - 256 - len(spec.tail) - spec.n_pad
    if n_words < 0:
        raise ValueError(f"vocabulary of {n_vocab} is too small for this tokenizer's specials")
    words = _words(n_words)
    if spec.model == "llama":
        byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
        body = [f"\u2581{w}" for w in words]
    else:
        byte_tokens = _byte_chars()
        body = words
    pads = [
        f"[PAD{len(spec.head) + 256 + n_words + len(spec.tail) + i}]" for i in range(spec.n_pad)
    ]
    tokens = [*spec.head, *byte_tokens, *body, *spec.tail, *pads]
    types = (
        [TOKEN_CONTROL] * len(spec.head)
        + [TOKEN_BYTE if spec.model == "llama" else TOKEN_NORMAL] * 256
        + [TOKEN_NORMAL] * n_words
        + [TOKEN_CONTROL] * len(spec.tail)
        + [TOKEN_UNUSED] * spec.n_pad
    )
    assert len(tokens) == n_vocab and len(set(tokens)) == n_vocab
    if spec.model == "llama":
        scores = [0.0] * (len(spec.head) + 256) + [-float(i) for i in range(n_words)]
        scores += [0.0] * (len(spec.tail) + spec.n_pad)
        return Vocab(tokens, types, scores, None)
    return Vocab(tokens, types, None, _merges(words, int(n_words * spec.merges_per_word)))


def _merges(words: list[str], n_merges: int) -> list[str]:
    # Every word is a merge of a shorter word (or byte) and one letter, so the merges build the
    # whole vocabulary; extra merges split words elsewhere, as real BPE merge lists do.
    known = set(words) | set(_LETTERS)
    merges = [f"{w[:-1]} {w[-1]}" for w in words[:n_merges]]
    for w in words:
        if len(merges) >= n_merges:
            break
        for k in range(1, len(w) - 1):
            if w[:k] in known and w[k:] in known:
                merges.append(f"{w[:k]} {w[k:]}")
                if len(merges) >= n_merges:
                    break
    return merges


def tokenizer_metadata(spec: TokenizerSpec, n_vocab: int) -> dict[str, object]:
    vocab = build_vocab(spec, n_vocab)
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    meta: dict[str, object] = {
        "tokenizer.ggml.model": spec.model,
        "tokenizer.ggml.pre": spec.pre,
        "tokenizer.ggml.tokens": Val(ARRAY, vocab.tokens, STRING),
    }
    if vocab.scores is not None:
        meta["tokenizer.ggml.scores"] = Val(ARRAY, vocab.scores, FLOAT32)
    meta["tokenizer.ggml.token_type"] = Val(ARRAY, vocab.token_types, INT32)
    if vocab.merges is not None:
        meta["tokenizer.ggml.merges"] = Val(ARRAY, vocab.merges, STRING)
    for key, token in (
        ("bos_token_id", spec.bos),
        ("eos_token_id", spec.eos),
        ("eot_token_id", spec.eot),
        ("unknown_token_id", spec.unk),
        ("padding_token_id", spec.pad),
    ):
        if token is not None:
            meta[f"tokenizer.ggml.{key}"] = ids[token]
    meta["tokenizer.ggml.add_bos_token"] = spec.add_bos
    meta["tokenizer.ggml.add_eos_token"] = False
    if spec.chat_template:
        meta["tokenizer.chat_template"] = spec.chat_template
    return meta


_LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)


def _reserved(start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"<|reserved_special_token_{i}|>" for i in range(start, stop))


LLAMA3_TOKENIZER = TokenizerSpec(
    model="gpt2",
    pre="llama-bpe",
    tail=_LLAMA3_SPECIALS + _reserved(3, 248),
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    eot="<|eot_id|>",
    add_bos=True,
    merges_per_word=2.2,
    chat_template=(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
)
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_TOKENIZER = TokenizerSpec(
    model="gpt2",
    pre="qwen2",
    tail=_QWEN_SPECIALS,
    n_pad=399,
    bos="<|endoftext|>",
    eos="<|im_end|>",
    pad="<|endoftext|>",
    add_bos=False,
    merges_per_word=1.0,
    chat_template=_CHATML,
)
QWEN3_TOKENIZER = replace(QWEN2_TOKENIZER, tail=(*_QWEN_SPECIALS, "<think>", "</think>"), n_pad=269)
DEEPSEEK_TOKENIZER = TokenizerSpec(
    model="gpt2",
    pre="deepseek-llm",
    tail=("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>"),
    n_pad=2396,
    bos="<｜begin▁of▁sentence｜>",
    eos="<｜end▁of▁sentence｜>",
    pad="<｜end▁of▁sentence｜>",
    add_bos=True,
    merges_per_word=1.0,
    chat_template=(
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}User: "
        "{{ m['content'] }}\n\n{% else %}Assistant: {{ m['content'] }}<｜end▁of▁sentence｜>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
)
GEMMA_TOKENIZER = TokenizerSpec(
    model="llama",
    pre="default",
    head=(
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<mask>",
        *(f"<unused{i}>" for i in range(101)),
        "<start_of_turn>",
        "<end_of_turn>",
    ),
    bos="<bos>",
    eos="<eos>",
    eot="<end_of_turn>",
    unk="<unk>",
    pad="<pad>",
    add_bos=True,
    chat_template=(
        "{{ bos_token }}{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}"
    ),
)
PHI3_TOKENIZER = TokenizerSpec(
    model="llama",
    pre="default",
    head=("<unk>", "<s>", "</s>"),
    tail=(
        "<|endoftext|>",
        "<|assistant|>",
        "<|placeholder1|>",
        "<|placeholder2|>",
        "<|placeholder3|>",
        "<|placeholder4|>",
        "<|system|>",
        "<|end|>",
        "<|placeholder5|>",
        "<|placeholder6|>",
        "<|user|>",
    ),
    n_pad=53,
    bos="<s>",
    eos="<|end|>",
    eot="<|end|>",
    unk="<unk>",
    pad="<|endoftext|>",
    add_bos=False,
    chat_template=(
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
)


# --------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """A model architecture with the hyperparameters of a real checkpoint."""

    name: str
    arch: str  # llama.cpp architecture name; picks the tensor layout
    display_name: str
    size_label: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    context_length: int
    tokenizer: TokenizerSpec
    head_dim: int | None = None  # written as key_length/value_length when set
    rope_dims: int | None = None  # rope.dimension_count; default head_dim
    rope_base: float | None = 10000.0
    rms_eps: float = 1e-5
    tied_output: bool = False
    qkv_bias: bool = False
    # mixture of experts
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_expert_shared: int = 0
    n_dense_lead: int = 0
    # multi-head latent attention (DeepSeek)
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    v_head_dim: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)  # "{arch}." keys as-is

    @property
    def head_size(self) -> int:
        return self.head_dim or self.n_embd // self.n_head


def _tiny_tokenizer(spec: TokenizerSpec) -> TokenizerSpec:
    # Keep the named specials (templates refer to them); drop the long reserved runs.
    tail = tuple(t for t in spec.tail if "reserved_special" not in t)
    head = tuple(t for t in spec.head if not t.startswith("<unused"))
    return replace(spec, head=head, tail=tail, n_pad=min(spec.n_pad, 8))


def _tiny(p: Preset, **dims: object) -> Preset:
    base: dict[str, object] = {
        "name": f"{p.name}-tiny",
        "display_name": f"{p.display_name} (tiny)",
        "size_label": "tiny",
        "n_layers": 2,
        "n_embd": 256,
        "n_ff": 512,
        "n_vocab": 1024,
        "context_length": 4096,
        "tokenizer": _tiny_tokenizer(p.tokenizer),
    }
    base.update(dims)
    return replace(p, **base)  # type: ignore[arg-type]


_LLAMA31_8B = Preset(
    name="llama-3.1-8b",
    arch="llama",
    display_name="Meta Llama 3.1 8B Instruct",
    size_label="8B",
    n_layers=32,
    n_embd=4096,
    n_ff=14336,
    n_head=32,
    n_head_kv=8,
    n_vocab=128256,
    context_length=131072,
    tokenizer=LLAMA3_TOKENIZER,
    rope_base=500000.0,
    rms_eps=1e-5,
)
_LLAMA31_70B = replace(
    _LLAMA31_8B,
    name="llama-3.1-70b",
    display_name="Meta Llama 3.1 70B Instruct",
    size_label="70B",
    n_layers=80,
    n_embd=8192,
    n_ff=28672,
    n_head=64,
)
_QWEN25_7B = Preset(
    name="qwen2.5-7b",
    arch="qwen2",
    display_name="Qwen2.5 7B Instruct",
    size_label="7B",
    n_layers=28,
    n_embd=3584,
    n_ff=18944,
    n_head=28,
    n_head_kv=4,
    n_vocab=152064,
    context_length=32768,
    tokenizer=QWEN2_TOKENIZER,
    rope_base=1000000.0,
    rms_eps=1e-6,
    qkv_bias=True,
)
_GEMMA2_9B = Preset(
    name="gemma-2-9b",
    arch="gemma2",
    display_name="Gemma 2 9B It",
    size_label="9B",
    n_layers=42,
    n_embd=3584,
    n_ff=14336,
    n_head=16,
    n_head_kv=8,
    n_vocab=256000,
    context_length=8192,
    tokenizer=GEMMA_TOKENIZER,
    head_dim=256,
    rope_base=None,
    rms_eps=1e-6,
    tied_output=True,
    extra={
        "attention.sliding_window": 4096,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
    },
)
_QWEN3_30B_A3B = Preset(
    name="qwen3-30b-a3b",
    arch="qwen3moe",
    display_name="Qwen3 30B A3B",
    size_label="30B-A3B",
    n_layers=48,
    n_embd=2048,
    n_ff=6144,
    n_head=32,
    n_head_kv=4,
    n_vocab=151936,
    context_length=40960,
    tokenizer=QWEN3_TOKENIZER,
    head_dim=128,
    rope_base=1000000.0,
    rms_eps=1e-6,
    n_expert=128,
    n_expert_used=8,
    n_ff_exp=768,
)
_DEEPSEEK_V2_LITE = Preset(
    name="deepseek-v2-lite",
    arch="deepseek2",
    display_name="DeepSeek V2 Lite Chat",
    size_label="16B",
    n_layers=27,
    n_embd=2048,
    n_ff=10944,
    n_head=16,
    n_head_kv=1,  # MLA is stored as one shared latent "head"
    n_vocab=102400,
    context_length=163840,
    tokenizer=DEEPSEEK_TOKENIZER,
    rope_dims=64,
    rope_base=10000.0,
    rms_eps=1e-6,
    n_expert=64,
    n_expert_used=6,
    n_ff_exp=1408,
    n_expert_shared=2,
    n_dense_lead=1,
    kv_lora_rank=512,
    qk_nope_dim=128,
    v_head_dim=128,
    extra={
        "expert_weights_scale": 1.0,
        "expert_weights_norm": False,
        "expert_gating_func": 1,  # softmax
        "rope.scaling.type": "yarn",
        "rope.scaling.factor": 40.0,
        "rope.scaling.original_context_length": 4096,
        "rope.scaling.yarn_log_multiplier": 0.0707,
    },
)
_PHI3_MINI = Preset(
    name="phi-3-mini",
    arch="phi3",
    display_name="Phi 3 Mini 4k Instruct",
    size_label="3.8B",
    n_layers=32,
    n_embd=3072,
    n_ff=8192,
    n_head=32,
    n_head_kv=32,
    n_vocab=32064,
    context_length=4096,
    tokenizer=PHI3_TOKENIZER,
    rope_base=10000.0,
    rms_eps=1e-5,
    extra={"attention.sliding_window": 2047, "rope.scaling.original_context_length": 4096},
)

_FULL = (
    _LLAMA31_8B,
    _LLAMA31_70B,
    _QWEN25_7B,
    _GEMMA2_9B,
    _QWEN3_30B_A3B,
    _DEEPSEEK_V2_LITE,
    _PHI3_MINI,
)
_TINY = (
    _tiny(_LLAMA31_8B, n_head=4, n_head_kv=2),
    _tiny(_LLAMA31_70B, n_head=4, n_head_kv=1, n_layers=3),
    _tiny(_QWEN25_7B, n_head=4, n_head_kv=2),
    _tiny(
        _GEMMA2_9B,
        n_head=2,
        n_head_kv=1,
        head_dim=128,
        extra={**_GEMMA2_9B.extra, "attention.sliding_window": 64},
    ),
    _tiny(
        _QWEN3_30B_A3B,
        n_head=4,
        n_head_kv=2,
        head_dim=64,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=256,
    ),
    # 27 layers keeps llama.cpp's "V2-Lite" reading (no q_lora_rank); the dims stay tiny.
    _tiny(
        _DEEPSEEK_V2_LITE,
        n_layers=27,
        n_head=2,
        n_ff=512,
        n_expert=4,
        n_expert_used=2,
        n_ff_exp=256,
        n_expert_shared=1,
        kv_lora_rank=256,
        qk_nope_dim=64,
        v_head_dim=64,
        rope_dims=32,
    ),
    _tiny(
        _PHI3_MINI,
        n_head=4,
        n_head_kv=4,
        extra={**_PHI3_MINI.extra, "attention.sliding_window": 255},
    ),
)
PRESETS: Mapping[str, Preset] = {p.name: p for p in (*_FULL, *_TINY)}
FULL_PRESETS: tuple[str, ...] = tuple(p.name for p in _FULL)
TINY_PRESETS: tuple[str, ...] = tuple(p.name for p in _TINY)


# --------------------------------------------------------------------------------------------
# Tensor layouts per architecture: (name, ggml shape) in the order the converter writes them


def _attn_qkv(p: Preset, b: str) -> list[tuple[str, tuple[int, ...]]]:
    q = p.n_head * p.head_size
    kv = p.n_head_kv * p.head_size
    out = [
        (f"{b}.attn_q.weight", (p.n_embd, q)),
        (f"{b}.attn_k.weight", (p.n_embd, kv)),
        (f"{b}.attn_v.weight", (p.n_embd, kv)),
    ]
    if p.qkv_bias:
        out += [
            (f"{b}.attn_q.bias", (q,)),
            (f"{b}.attn_k.bias", (kv,)),
            (f"{b}.attn_v.bias", (kv,)),
        ]
    out.append((f"{b}.attn_output.weight", (q, p.n_embd)))
    return out


def _ffn(p: Preset, b: str, n_ff: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{b}.ffn_gate.weight", (p.n_embd, n_ff)),
        (f"{b}.ffn_up.weight", (p.n_embd, n_ff)),
        (f"{b}.ffn_down.weight", (n_ff, p.n_embd)),
    ]


def _moe(p: Preset, b: str) -> list[tuple[str, tuple[int, ...]]]:
    out = [
        (f"{b}.ffn_gate_inp.weight", (p.n_embd, p.n_expert)),
        (f"{b}.ffn_gate_exps.weight", (p.n_embd, p.n_ff_exp, p.n_expert)),
        (f"{b}.ffn_up_exps.weight", (p.n_embd, p.n_ff_exp, p.n_expert)),
        (f"{b}.ffn_down_exps.weight", (p.n_ff_exp, p.n_embd, p.n_expert)),
    ]
    if p.n_expert_shared:
        shared = p.n_ff_exp * p.n_expert_shared
        out += [
            (f"{b}.ffn_gate_shexp.weight", (p.n_embd, shared)),
            (f"{b}.ffn_up_shexp.weight", (p.n_embd, shared)),
            (f"{b}.ffn_down_shexp.weight", (shared, p.n_embd)),
        ]
    return out


def _block(p: Preset, i: int) -> list[tuple[str, tuple[int, ...]]]:
    b = f"blk.{i}"
    e = p.n_embd
    norm = [(f"{b}.attn_norm.weight", (e,))]
    if p.arch in ("llama", "qwen2"):
        return [*norm, *_attn_qkv(p, b), (f"{b}.ffn_norm.weight", (e,)), *_ffn(p, b, p.n_ff)]
    if p.arch == "gemma2":
        return [
            *norm,
            *_attn_qkv(p, b),
            (f"{b}.post_attention_norm.weight", (e,)),
            (f"{b}.ffn_norm.weight", (e,)),
            *_ffn(p, b, p.n_ff),
            (f"{b}.post_ffw_norm.weight", (e,)),
        ]
    if p.arch == "qwen3moe":
        return [
            *norm,
            *_attn_qkv(p, b),
            (f"{b}.attn_q_norm.weight", (p.head_size,)),
            (f"{b}.attn_k_norm.weight", (p.head_size,)),
            (f"{b}.ffn_norm.weight", (e,)),
            *_moe(p, b),
        ]
    if p.arch == "phi3":
        return [
            *norm,
            (f"{b}.attn_qkv.weight", (e, e + 2 * p.n_head_kv * p.head_size)),
            (f"{b}.attn_output.weight", (e, e)),
            (f"{b}.ffn_norm.weight", (e,)),
            (f"{b}.ffn_up.weight", (e, 2 * p.n_ff)),
            (f"{b}.ffn_down.weight", (p.n_ff, e)),
        ]
    if p.arch == "deepseek2":
        rope = p.rope_dims or 0
        ffn = _ffn(p, b, p.n_ff) if i < p.n_dense_lead else _moe(p, b)
        return [
            *norm,
            (f"{b}.attn_q.weight", (e, p.n_head * (p.qk_nope_dim + rope))),
            (f"{b}.attn_kv_a_mqa.weight", (e, p.kv_lora_rank + rope)),
            (f"{b}.attn_kv_a_norm.weight", (p.kv_lora_rank,)),
            (f"{b}.attn_k_b.weight", (p.qk_nope_dim, p.kv_lora_rank, p.n_head)),
            (f"{b}.attn_v_b.weight", (p.kv_lora_rank, p.v_head_dim, p.n_head)),
            (f"{b}.attn_output.weight", (p.n_head * p.v_head_dim, e)),
            (f"{b}.ffn_norm.weight", (e,)),
            *ffn,
        ]
    raise ValueError(f"no tensor layout for architecture {p.arch!r}")


def tensor_layout(p: Preset, n_layers: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
    layers = p.n_layers if n_layers is None else n_layers
    out: list[tuple[str, tuple[int, ...]]] = []
    if p.arch == "llama":
        out.append(("rope_freqs.weight", (p.head_size // 2,)))  # Llama 3.1's rope scaling
    out.append(("token_embd.weight", (p.n_embd, p.n_vocab)))
    for i in range(layers):
        out += _block(p, i)
    out.append(("output_norm.weight", (p.n_embd,)))
    if not p.tied_output:
        out.append(("output.weight", (p.n_embd, p.n_vocab)))
    return out


def model_metadata(
    p: Preset, quant: str = "Q4_K_M", n_layers: int | None = None, *, with_tokenizer: bool = True
) -> dict[str, object]:
    a = p.arch
    layers = p.n_layers if n_layers is None else n_layers
    meta: dict[str, object] = {
        "general.architecture": a,
        "general.type": "model",
        "general.name": p.display_name,
        "general.size_label": p.size_label,
        f"{a}.block_count": layers,
        f"{a}.context_length": p.context_length,
        f"{a}.embedding_length": p.n_embd,
        f"{a}.feed_forward_length": p.n_ff,
        f"{a}.attention.head_count": p.n_head,
        f"{a}.attention.head_count_kv": p.n_head_kv,
    }
    if p.rope_base is not None:
        meta[f"{a}.rope.freq_base"] = p.rope_base
    meta[f"{a}.attention.layer_norm_rms_epsilon"] = p.rms_eps
    if a == "deepseek2":
        rope = p.rope_dims or 0
        meta[f"{a}.attention.key_length"] = p.kv_lora_rank + rope
        meta[f"{a}.attention.value_length"] = p.kv_lora_rank
        meta[f"{a}.attention.key_length_mla"] = p.qk_nope_dim + rope
        meta[f"{a}.attention.value_length_mla"] = p.v_head_dim
        meta[f"{a}.attention.kv_lora_rank"] = p.kv_lora_rank
        meta[f"{a}.leading_dense_block_count"] = p.n_dense_lead
        meta[f"{a}.expert_shared_count"] = p.n_expert_shared
    elif p.head_dim is not None:
        meta[f"{a}.attention.key_length"] = p.head_dim
        meta[f"{a}.attention.value_length"] = p.head_dim
    if p.n_expert:
        meta[f"{a}.expert_count"] = p.n_expert
        meta[f"{a}.expert_used_count"] = p.n_expert_used
        meta[f"{a}.expert_feed_forward_length"] = p.n_ff_exp
    meta[f"{a}.rope.dimension_count"] = p.rope_dims or p.head_size
    meta[f"{a}.vocab_size"] = p.n_vocab
    for key, value in p.extra.items():
        meta[f"{a}.{key}"] = value
    meta["general.file_type"] = FILE_TYPE_IDS[quant]
    meta["general.quantization_version"] = 2
    if with_tokenizer:
        meta.update(tokenizer_metadata(p.tokenizer, p.n_vocab))
    return meta


# --------------------------------------------------------------------------------------------
# Quantization mix


QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
# What llama.cpp's quantizer uses when a row is not a whole number of the wanted type's blocks.
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q3_K": "IQ4_NL", "Q2_K": "IQ4_NL"}


def _more_bits(i: int, n: int) -> bool:
    # llama.cpp gives the first and last eighth of the layers, and every third in between, more
    # bits in attn_v / ffn_down for the *_M mixes.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _layer_of(name: str) -> int | None:
    if name.startswith("blk."):
        return int(name.split(".")[1])
    return None


def choose_type(name: str, shape: Sequence[int], quant: str, n_layers: int, tied: bool) -> int:
    """The ggml type llama.cpp's quantizer would (roughly) give this tensor for ``quant``."""
    if len(shape) == 1 or name.endswith("ffn_gate_inp.weight"):
        return F32  # norms, biases, rope factors and expert routers stay full precision
    if quant in ("F32", "F16", "BF16"):
        return type_by_name(quant).id
    is_output = name == "output.weight" or (tied and name == "token_embd.weight")
    base = {"Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q4_0": "Q4_0", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K"}
    wanted = base[quant]
    if is_output and quant != "Q8_0":
        wanted = "Q6_K"
    elif quant in ("Q4_K_M", "Q5_K_M"):
        layer = _layer_of(name)
        if "attn_qkv" in name:
            wanted = "Q5_K" if quant == "Q4_K_M" else "Q6_K"
        elif (
            layer is not None
            and ("attn_v." in name or "ffn_down" in name)
            and _more_bits(layer, n_layers)
        ):
            wanted = "Q6_K"
    t = type_by_name(wanted)
    if shape[0] % t.block_size:
        t = type_by_name(_FALLBACK.get(wanted, "F16"))
        if shape[0] % t.block_size:
            t = type_by_name("F16")
    return t.id


def model_tensors(
    p: Preset, quant: str = "Q4_K_M", n_layers: int | None = None
) -> list[TensorSpec]:
    layers = p.n_layers if n_layers is None else n_layers
    return [
        TensorSpec(name, shape, choose_type(name, shape, quant, layers, p.tied_output))
        for name, shape in tensor_layout(p, layers)
    ]


# --------------------------------------------------------------------------------------------
# Whole files


def split_tensors(tensors: Sequence[TensorSpec], n_parts: int) -> list[list[TensorSpec]]:
    """Contiguous runs of tensors with roughly equal bytes, like gguf-split --split-max-size."""
    total = sum(t.nbytes for t in tensors) or 1
    parts: list[list[TensorSpec]] = [[] for _ in range(n_parts)]
    acc = 0
    for i, t in enumerate(tensors):
        left = len(tensors) - i
        index = min(acc * n_parts // total, n_parts - 1)
        # Every part gets at least one tensor when there are enough to go round.
        index = max(index, n_parts - left)
        index = max(index, max((k for k, part in enumerate(parts) if part), default=0))
        parts[index].append(t)
        acc += t.nbytes
    return parts


def write_split(
    path: str | Path,
    metadata: Mapping[str, object],
    tensors: Sequence[TensorSpec],
    n_parts: int,
) -> list[Path]:
    """Write ``<stem>-0000i-of-0000N.gguf`` files the way gguf-split does.

    ``path`` names the model (``dir/model.gguf``); the first part carries all the metadata, every
    part carries split.no / split.count / split.tensors.count.
    """
    path = Path(path)
    stem = path.name[: -len(".gguf")] if path.name.endswith(".gguf") else path.name
    written = []
    for i, part in enumerate(split_tensors(tensors, n_parts)):
        meta: dict[str, object] = {
            "split.no": Val(UINT16, i),
            "split.count": Val(UINT16, n_parts),
            "split.tensors.count": Val(INT32, len(tensors)),
        }
        if i == 0:
            meta = {**metadata, **meta}
        target = path.with_name(f"{stem}-{i + 1:05d}-of-{n_parts:05d}.gguf")
        written.append(write_raw(target, meta, part))
    return written


def write_model(
    path: str | Path,
    preset: str | Preset,
    *,
    quant: str = "Q4_K_M",
    n_layers: int | None = None,
    split: int | None = None,
    with_tokenizer: bool = True,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write a synthetic GGUF of ``preset`` (a name in PRESETS) and return its path.

    ``quant``: one of QUANTS. ``n_layers`` cuts the model down (same dims). ``split=N`` writes N
    gguf-split parts next to ``path`` and returns the first. ``metadata`` adds or replaces keys
    (a value of None removes the key). ``with_tokenizer=False`` leaves the tokenizer out: much
    faster to write, enough for header-only tests, not loadable by llama.cpp.
    """
    p = PRESETS[preset] if isinstance(preset, str) else preset
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}")
    meta = model_metadata(p, quant, n_layers, with_tokenizer=with_tokenizer)
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    tensors = model_tensors(p, quant, n_layers)
    if split and split > 1:
        return write_split(path, meta, tensors, split)[0]
    return write_raw(path, meta, tensors)
