"""A parsed GGUF header as values: metadata, the tensor table, and the format's limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# Arrays longer than this are summarised as ArrayValue. Per-layer hyperparameter arrays (a few
# hundred entries at most) stay real tuples; vocabularies and merges do not.
INLINE_ARRAY_LIMIT = 1024
# The format allows arrays of arrays; llama.cpp loads none, so a shallow limit is plenty.
MAX_ARRAY_DEPTH = 3
# Real models have tens of keys and at most a few thousand tensors; these bounds only stop a
# hostile header from making millions of Python objects within max_bytes.
MAX_KV_COUNT = 1 << 16
MAX_TENSOR_COUNT = 1 << 16
MAX_KEY_LENGTH = 65535  # the GGUF spec's limit
MAX_TENSOR_NAME = 63  # ggml keeps names in a 64-byte buffer with a trailing NUL

# GGUF metadata value types.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = (
    range(13)
)
VALUE_TYPE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        UINT8: "uint8",
        INT8: "int8",
        UINT16: "uint16",
        INT16: "int16",
        UINT32: "uint32",
        INT32: "int32",
        FLOAT32: "float32",
        BOOL: "bool",
        STRING: "string",
        ARRAY: "array",
        UINT64: "uint64",
        INT64: "int64",
        FLOAT64: "float64",
    }
)


@dataclass(frozen=True)
class ArrayValue:
    """Stand-in for a metadata array too long to keep (vocabulary, merges, scores).

    ``len()`` works; the elements are not kept. ``offset`` is the absolute file offset of the
    first element and ``nbytes`` the size of all elements, so a caller that really wants them can
    read them from the source.
    """

    element_type: int
    length: int
    offset: int
    nbytes: int

    @property
    def element_type_name(self) -> str:
        return VALUE_TYPE_NAMES.get(self.element_type, str(self.element_type))

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table."""

    name: str
    ggml_type: int
    type_name: str
    shape: tuple[int, ...]  # ggml order: ne[0] (the row length) first
    offset: int  # relative to the data section of the file (part) that holds it
    nbytes: int
    part: int = 0  # index of the split file holding the data; 0 for a single file

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data: metadata and the tensor table.

    ``header_bytes`` counts the bytes fetched from the source to parse it (what a remote read
    costs), which can exceed ``data_offset`` by up to one read chunk.
    """

    source: str
    version: int
    metadata: Mapping[str, object] = field(repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    alignment: int
    data_offset: int
    file_size: int | None
    header_bytes: int
    parts: tuple[str, ...] = ()  # every file of a split model, in order; empty for one file
    _by_name: Mapping[str, TensorInfo] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tensors})

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)

    def arch_get(self, suffix: str, default: object = None) -> object:
        """``get(f"{architecture}.{suffix}")``: hyperparameters are keyed by architecture."""
        arch = self.architecture
        if arch is None:
            return default
        return self.metadata.get(f"{arch}.{suffix}", default)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def vocab_size(self) -> int | None:
        """Tokens in the vocabulary: the explicit key, else the token list, else the embedding."""
        explicit = self.arch_get("vocab_size")
        if isinstance(explicit, int) and not isinstance(explicit, bool):
            return explicit
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, tuple | ArrayValue):
            return len(tokens)
        embd = self.tensor("token_embd.weight")
        if embd is not None and len(embd.shape) >= 2:
            return embd.shape[1]
        return None

    def tensor(self, name: str) -> TensorInfo | None:
        return self._by_name.get(name)

    @property
    def weights_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)
