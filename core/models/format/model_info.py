"""What the memory model needs to know about a GGUF model, read from its header alone.

`ModelInfo.from_header` turns a parsed header (metadata + tensor infos, no weights) into exact
per-layer weight sizes and the hyper-parameters that size the KV cache and compute buffers. It
mirrors how llama.cpp interprets the same keys (per-layer arrays, sliding-window patterns, MLA,
experts), so the fit can say what llama.cpp will allocate before anything is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from rigdeck.core.errors import FitError
from rigdeck.core.models.format.quant_names import quant_from_file_type

# Architectures whose SWA layers llama.cpp derives from a pattern when the file has none:
# arch -> (default window, default period, dense layer first in each period).
# Phi-3 is absent on purpose: llama.cpp reads its window but runs it with a full cache.
_SWA_DEFAULTS: dict[str, tuple[int, int, bool]] = {
    "gemma2": (4096, 2, False),
    "gemma3": (0, 6, False),
    "gemma3n": (0, 5, False),
    "gemma-embedding": (0, 6, False),
    "cohere2": (0, 4, False),
    "cohere2moe": (0, 4, True),
    "exaone4": (0, 4, False),
    "olmo2": (0, 4, False),
    "gpt-oss": (0, 2, False),
    "afmoe": (0, 4, False),
    "llama4": (8192, 4, False),
    "plamo3": (0, 8, False),
    "smallthinker": (0, 4, True),
}
# When these keys hold a window of 0 the architecture runs with full attention everywhere.
_SWA_OFF_WHEN_ZERO = {"gemma3", "llama4", "exaone4", "olmo2", "afmoe", "plamo3", "smallthinker"}

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
# Routed expert weights: the tensors llama.cpp's --n-cpu-moe / --cpu-moe move to the CPU.
_EXPERT_RE = re.compile(r"^ffn_(up|down|gate|gate_up)_(ch|)exps(\.|$)")
_INPUT_TENSORS = ("token_embd.", "pos_embd.", "token_types.", "per_layer_token_embd.")
_OUTPUT_PREFIXES = (
    "output",
    "cls",
    "dense_2_out",
    "dense_3_out",
    "enc.output_norm",
    "dec.output_norm",
    "altup_proj",
    "altup_unembd_proj",
)
# CUDA pads each quantized row to a multiple of this many values (MATRIX_ROW_PADDING).
_CUDA_ROW_PADDING = 512
_UNQUANTIZED = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}


class _TensorLike(Protocol):
    # Read-only members: the real TensorInfo and GGUFHeader are frozen dataclasses.
    @property
    def name(self) -> str: ...
    @property
    def type_name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...
    @property
    def nbytes(self) -> int: ...


class _HeaderLike(Protocol):
    @property
    def metadata(self) -> Mapping[str, object]: ...
    @property
    def tensors(self) -> Sequence[_TensorLike]: ...
    @property
    def file_size(self) -> int | None: ...


@dataclass(frozen=True)
class LayerWeights:
    """Bytes of one repeating block, split the way placement decisions split it."""

    attention_bytes: int
    """Attention projections and norms (attn_*), MLA's low-rank factors included."""
    ffn_bytes: int
    """Everything else in the block: dense FFN, shared experts, router, other norms."""
    expert_bytes: int
    """Routed experts (ffn_*_exps): what --n-cpu-moe keeps on the CPU."""
    cuda_pad_bytes: int
    """Extra bytes a CUDA buffer adds for this block outside the routed experts (row padding)."""
    expert_cuda_pad_bytes: int
    """The same for the routed experts."""
    largest_matrix_bytes: int
    """The biggest single weight: what a GPU must stage when it runs this block's matmul."""
    second_matrix_bytes: int
    """The next biggest: prompts on a GPU can stage two of a CPU block's weights at once."""

    @property
    def total_bytes(self) -> int:
        return self.attention_bytes + self.ffn_bytes + self.expert_bytes


@dataclass(frozen=True)
class ModelInfo:
    """Model shape and exact weight sizes, enough to predict llama.cpp's allocations."""

    architecture: str
    name: str
    quant: str
    file_size: int
    n_layer: int
    """Repeating blocks that run (llama.cpp's n_layer; MTP/NextN blocks excluded)."""
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]
    """KV heads per layer; 0 marks a layer without attention (recurrent hybrids)."""
    head_dim_k: int
    """Per-head K width as stored in the cache (MLA: the compressed latent + rope part)."""
    head_dim_v: int
    n_ff: int
    n_ctx_train: int
    n_vocab: int
    sliding_window: int
    swa_layers: tuple[bool, ...]
    n_expert: int
    n_expert_used: int
    n_expert_shared: int
    n_ff_expert: int
    n_ff_shared_expert: int
    kv_lora_rank: int
    q_lora_rank: int
    is_mla: bool
    """llama.cpp caches only the latent K for MLA models (no separate V)."""
    rope_dim: int
    layers: tuple[LayerWeights, ...]
    token_embd_bytes: int
    token_embd_type: str
    output_bytes: int
    """The output projection; for tied embeddings, the size of the token_embd copy it uses."""
    output_type: str
    output_tied: bool
    output_extra_bytes: int
    """Output-side tensors besides the projection (final norm, classifier heads)."""
    output_cuda_pad_bytes: int
    input_extra_bytes: int
    """Input-side tensors besides token_embd (position/type embeddings): always on the CPU."""
    n_layer_skipped: int
    """MTP/NextN blocks in the file that llama.cpp skips unless asked to load them."""
    skipped_bytes: int
    tensor_bytes: int
    n_params: int
    """Weights (elements) in the file: FLOPs per token are about twice the active ones."""

    # ----- derived figures -----

    @property
    def weights_bytes(self) -> int:
        """Bytes llama.cpp allocates for weights when nothing is duplicated."""
        return (
            sum(layer.total_bytes for layer in self.layers)
            + self.token_embd_bytes
            + (0 if self.output_tied else self.output_bytes)
            + self.output_extra_bytes
            + self.input_extra_bytes
        )

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0 and any(layer.expert_bytes for layer in self.layers)

    @property
    def has_swa(self) -> bool:
        return self.sliding_window > 0 and any(self.swa_layers)

    def kv_width(self, layer: int) -> tuple[int, int]:
        """Values per token this layer stores in the K and V caches (V is 0 for MLA)."""
        heads = self.n_head_kv[layer]
        if heads == 0:
            return 0, 0
        if self.is_mla:
            return self.head_dim_k * heads, 0
        return self.head_dim_k * heads, self.head_dim_v * heads

    @property
    def max_v_width(self) -> int:
        return max((self.kv_width(i)[1] for i in range(self.n_layer)), default=0)

    @property
    def active_params_bytes(self) -> int:
        """Weight bytes one token touches: every dense byte, n_used/n_expert of the experts."""
        frac = self.n_expert_used / self.n_expert if self.n_expert else 1.0
        per_layer = sum(
            layer.attention_bytes + layer.ffn_bytes + layer.expert_bytes * frac
            for layer in self.layers
        )
        return int(per_layer + self.output_bytes + self.output_extra_bytes)

    # ----- construction -----

    @classmethod
    def from_header(cls, header: _HeaderLike) -> ModelInfo:
        """Build from a parsed GGUF header; raise FitError naming the first missing key."""
        meta = _Meta(header.metadata)
        arch = meta.text("general.architecture")
        if not arch:
            raise FitError("model header has no general.architecture; not a llama.cpp model file")
        p = f"{arch}."
        n_block = meta.integer(p + "block_count", required=True)
        n_nextn = meta.integer(p + "nextn_predict_layers", default=0)
        n_layer = max(n_block - n_nextn, 0)
        n_embd = meta.integer(p + "embedding_length", required=True)
        head_arr = meta.per_layer(p + "attention.head_count", n_block, required=True) or []
        # No blocks at all is a broken header, said below as a zero head count, not a crash.
        n_head = max(head_arr[:n_layer] or head_arr, default=0)
        kv_arr = meta.per_layer(p + "attention.head_count_kv", n_block, default=None)
        n_head_kv = tuple(kv_arr[:n_layer]) if kv_arr else tuple(head_arr[:n_layer])
        if n_head <= 0:
            raise FitError(f"model header has {p}attention.head_count = 0")
        head_dim_k = meta.integer(p + "attention.key_length", default=n_embd // n_head)
        head_dim_v = meta.integer(p + "attention.value_length", default=n_embd // n_head)
        is_mla = (
            meta.integer(p + "attention.key_length_mla", default=0) > 0
            and meta.integer(p + "attention.value_length_mla", default=0) > 0
        )
        ff_arr = meta.per_layer(p + "feed_forward_length", n_block, default=None) or [0]
        tensors = list(header.tensors)
        n_vocab = meta.integer(p + "vocab_size", default=0) or meta.length("tokenizer.ggml.tokens")
        if not n_vocab:
            n_vocab = _vocab_from_tensors(tensors)
        if not n_vocab:
            raise FitError(f"model header has neither {p}vocab_size nor tokenizer.ggml.tokens")

        window, swa = _swa_layers(meta, arch, p, n_layer)
        layers, layer_extra = _layer_weights(tensors, n_layer)
        emb, out, out_extra, in_extra, skipped = _io_weights(tensors, n_layer)
        if emb is None:
            raise FitError("model has no token_embd tensor; cannot size its weights")
        tied = out is None
        out_t = emb if out is None else out
        tensor_bytes = sum(t.nbytes for t in tensors)

        return cls(
            architecture=arch,
            name=meta.text("general.name") or meta.text("general.basename") or arch,
            quant=_quant_label(meta, tensors),
            file_size=int(getattr(header, "file_size", 0) or 0),
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=head_dim_k,
            head_dim_v=head_dim_v,
            n_ff=max(ff_arr[:n_layer] or ff_arr),
            n_ctx_train=meta.integer(p + "context_length", default=0),
            n_vocab=n_vocab,
            sliding_window=window,
            swa_layers=swa,
            n_expert=meta.integer(p + "expert_count", default=0),
            n_expert_used=meta.integer(p + "expert_used_count", default=0),
            n_expert_shared=meta.integer(p + "expert_shared_count", default=0),
            n_ff_expert=max(
                meta.per_layer(p + "expert_feed_forward_length", n_block, default=None) or [0]
            ),
            n_ff_shared_expert=meta.integer(p + "expert_shared_feed_forward_length", default=0),
            kv_lora_rank=meta.integer(p + "attention.kv_lora_rank", default=0),
            q_lora_rank=meta.integer(p + "attention.q_lora_rank", default=0),
            is_mla=is_mla,
            rope_dim=meta.integer(p + "rope.dimension_count", default=head_dim_k),
            layers=tuple(_add_extra(layers, layer_extra)),
            token_embd_bytes=emb.nbytes + _token_embd_companions(tensors),
            token_embd_type=emb.type_name,
            output_bytes=out_t.nbytes,
            output_type=out_t.type_name,
            output_tied=tied,
            output_extra_bytes=out_extra,
            output_cuda_pad_bytes=_cuda_pad(out_t),
            input_extra_bytes=in_extra,
            n_layer_skipped=n_nextn,
            skipped_bytes=skipped,
            tensor_bytes=tensor_bytes,
            n_params=sum(_elements(t) for t in tensors),
        )


def _token_embd_companions(tensors: Iterable[_TensorLike]) -> int:
    """Bytes of token_embd's companion scale tensors (e.g. NVFP4 scales), which ride with it."""
    return sum(
        t.nbytes
        for t in tensors
        if t.name.startswith("token_embd.") and t.name != "token_embd.weight"
    )


class _Meta:
    """Typed access to header metadata with one-line errors."""

    def __init__(self, metadata: Mapping[str, object]) -> None:
        self._m = metadata

    def raw(self, key: str) -> Any:
        return self._m.get(key)

    def text(self, key: str) -> str:
        value = self._m.get(key)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return str(value) if value is not None else ""

    def integer(self, key: str, *, default: int | None = None, required: bool = False) -> int:
        value = self._m.get(key)
        if value is None:
            if required or default is None:
                raise FitError(f"model header is missing {key}")
            return default
        if isinstance(value, (list, tuple)):
            value = max((int(v) for v in value), default=0)
        if not isinstance(value, (int, float, str)):
            raise FitError(f"model header key {key} is not a number: {value!r}")
        try:
            return int(value)
        except ValueError:
            raise FitError(f"model header key {key} is not a number: {value!r}") from None

    def length(self, key: str) -> int:
        value = self._m.get(key)
        if value is None:
            return 0
        try:
            return len(value)  # type: ignore[arg-type]
        except TypeError:
            return 0

    def per_layer(
        self, key: str, n: int, *, default: object = 0, required: bool = False
    ) -> list[int] | None:
        """A scalar-or-array key as one value per layer (llama.cpp's get_key_or_arr)."""
        value = self._m.get(key)
        if value is None:
            if required:
                raise FitError(f"model header is missing {key}")
            return None if default is None else [int(default)] * n  # type: ignore[call-overload]
        if isinstance(value, (list, tuple)):
            values = [int(v) for v in value]
            if len(values) < n:
                raise FitError(f"model header key {key} has {len(values)} values for {n} layers")
            return values[:n]
        return [int(value)] * n  # type: ignore[call-overload]


def _swa_layers(meta: _Meta, arch: str, p: str, n_layer: int) -> tuple[int, tuple[bool, ...]]:
    none = (0, (False,) * n_layer)
    default_window, period, dense_first = _SWA_DEFAULTS.get(arch, (0, 0, False))
    if not period:
        return none
    window = meta.integer(p + "attention.sliding_window", default=default_window)
    if window <= 0 and (arch in _SWA_OFF_WHEN_ZERO or default_window == 0):
        return none
    pattern = meta.raw(p + "attention.sliding_window_pattern")
    if isinstance(pattern, (list, tuple)):
        flags = tuple(bool(v) for v in pattern[:n_layer])
        flags += (False,) * (n_layer - len(flags))
        return window, flags
    if pattern is not None:
        period = int(pattern)
    if dense_first:
        flags = tuple(period == 0 or il % period != 0 for il in range(n_layer))
    else:
        flags = tuple(period == 0 or il % period < period - 1 for il in range(n_layer))
    return window, flags


def _cuda_pad(t: _TensorLike) -> int:
    """Bytes CUDA adds to a quantized tensor so each row is a multiple of 512 values."""
    if t.type_name.upper() in _UNQUANTIZED or not t.shape:
        return 0
    ne0 = int(t.shape[0])
    rem = ne0 % _CUDA_ROW_PADDING
    if rem == 0 or ne0 == 0:
        return 0
    # Only the allocation's tail is padded (one row's worth), not every row.
    return (_CUDA_ROW_PADDING - rem) * _row_bytes_total(t) // ne0


def _elements(t: _TensorLike) -> int:
    n = 1
    for d in t.shape:
        n *= int(d)
    return n


def _row_bytes_total(t: _TensorLike) -> int:
    n_rows = 1
    for d in list(t.shape)[1:]:
        n_rows *= int(d)
    return t.nbytes // max(n_rows, 1)


def _layer_weights(tensors: Sequence[_TensorLike], n_layer: int) -> tuple[list[LayerWeights], int]:
    attn = [0] * n_layer
    ffn = [0] * n_layer
    exp = [0] * n_layer
    pad = [0] * n_layer
    exp_pad = [0] * n_layer
    largest = [0] * n_layer
    second = [0] * n_layer
    for t in tensors:
        m = _BLOCK_RE.match(t.name)
        if not m:
            continue
        il, rest = int(m.group(1)), m.group(2)
        if il >= n_layer:
            continue
        if _EXPERT_RE.match(rest):
            exp[il] += t.nbytes
            exp_pad[il] += _cuda_pad(t)
        elif rest.startswith("attn") or rest.startswith("post_attention_norm"):
            attn[il] += t.nbytes
            pad[il] += _cuda_pad(t)
        else:
            ffn[il] += t.nbytes
            pad[il] += _cuda_pad(t)
        if t.nbytes > largest[il]:
            largest[il], second[il] = t.nbytes, largest[il]
        elif t.nbytes > second[il]:
            second[il] = t.nbytes
    layers = [
        LayerWeights(attn[i], ffn[i], exp[i], pad[i], exp_pad[i], largest[i], second[i])
        for i in range(n_layer)
    ]
    # Tensors outside blk.* that llama.cpp loads as part of the first block (rope_freqs,
    # token_embd_norm): a few KiB, booked to layer 0.
    extra = sum(
        t.nbytes
        for t in tensors
        if not _BLOCK_RE.match(t.name)
        and not t.name.startswith(_INPUT_TENSORS)
        and not t.name.startswith(_OUTPUT_PREFIXES)
    )
    return layers, extra


def _add_extra(layers: list[LayerWeights], extra: int) -> list[LayerWeights]:
    if not layers or not extra:
        return layers
    first = layers[0]
    layers[0] = replace(first, ffn_bytes=first.ffn_bytes + extra)
    return layers


def _io_weights(
    tensors: Sequence[_TensorLike], n_layer: int
) -> tuple[_TensorLike | None, _TensorLike | None, int, int, int]:
    emb = out = None
    out_extra = in_extra = skipped = 0
    for t in tensors:
        m = _BLOCK_RE.match(t.name)
        if m:
            if int(m.group(1)) >= n_layer:
                skipped += t.nbytes
            continue
        if t.name == "token_embd.weight":
            emb = t
        elif t.name == "output.weight":
            out = t
        elif t.name.startswith(_OUTPUT_PREFIXES):
            out_extra += t.nbytes
        elif t.name.startswith(_INPUT_TENSORS) and not t.name.startswith("token_embd."):
            in_extra += t.nbytes
    return emb, out, out_extra, in_extra, skipped


def _vocab_from_tensors(tensors: Sequence[_TensorLike]) -> int:
    for t in tensors:
        if t.name == "token_embd.weight" and len(t.shape) >= 2:
            return int(t.shape[1])
    return 0


def _quant_label(meta: _Meta, tensors: Sequence[_TensorLike]) -> str:
    ftype = meta.raw("general.file_type")
    label = quant_from_file_type(ftype) if isinstance(ftype, int) else None
    if label:
        return label
    # No (or unknown) file type: name it after the type holding most of the weight bytes.
    by_type: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) >= 2:
            by_type[t.type_name.upper()] = by_type.get(t.type_name.upper(), 0) + t.nbytes
    return max(by_type, key=by_type.__getitem__) if by_type else "unknown"
