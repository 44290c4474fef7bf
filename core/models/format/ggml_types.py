"""ggml tensor types: id -> name, block size and bytes per block.

A quantized ggml tensor is stored as rows of fixed-size blocks along its first dimension (ne[0]):
``block_size`` elements are packed into ``type_size`` bytes. A tensor's size on disk therefore
depends only on its type and shape, which is what lets the fit code size a model from its header.

The ids are part of the GGUF format and never reused. Ids 4 and 5 (Q4_2, Q4_3) predate GGUF and
are unknown here. Ids 31-33 and 36-38 were interleaved "repacked" layouts that llama.cpp stopped
accepting in files (it repacks at load time now); they are listed with ``removed=True`` so the
error can say what to do instead of "unknown type".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from rigdeck.core.errors import ModelFileError

# Super-block size of the K-quants and of the IQ/TQ types built on them.
QK_K = 256


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type as stored in GGUF files."""

    id: int
    name: str  # spelled as llama.cpp prints it in logs and file names (Q4_K, not q4_K)
    block_size: int  # elements per block
    type_size: int  # bytes per block
    removed: bool = False  # known id that current llama.cpp refuses to load

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    @property
    def quantized(self) -> bool:
        return self.block_size > 1


def _t(type_id: int, name: str, block_size: int, type_size: int, removed: bool = False) -> GGMLType:
    return GGMLType(type_id, name, block_size, type_size, removed)


# Byte sizes follow the block structs in ggml: e.g. Q4_K = two f16 scales + 12 bytes of packed
# 6-bit sub-block scales + 256 4-bit quants = 4 + 12 + 128 = 144.
_TABLE: tuple[GGMLType, ...] = (
    _t(0, "F32", 1, 4),
    _t(1, "F16", 1, 2),
    _t(2, "Q4_0", 32, 2 + 16),
    _t(3, "Q4_1", 32, 2 + 2 + 16),
    _t(6, "Q5_0", 32, 2 + 4 + 16),
    _t(7, "Q5_1", 32, 2 + 2 + 4 + 16),
    _t(8, "Q8_0", 32, 2 + 32),
    _t(9, "Q8_1", 32, 2 + 2 + 32),
    _t(10, "Q2_K", QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    _t(11, "Q3_K", QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    _t(12, "Q4_K", QK_K, 2 + 2 + 12 + QK_K // 2),
    _t(13, "Q5_K", QK_K, 2 + 2 + 12 + QK_K // 2 + QK_K // 8),
    _t(14, "Q6_K", QK_K, 2 + QK_K // 16 + 3 * QK_K // 4),
    _t(15, "Q8_K", QK_K, 4 + QK_K + QK_K // 16 * 2),
    _t(16, "IQ2_XXS", QK_K, 2 + QK_K // 8 * 2),
    _t(17, "IQ2_XS", QK_K, 2 + QK_K // 8 * 2 + QK_K // 32),
    _t(18, "IQ3_XXS", QK_K, 2 + 3 * (QK_K // 8)),
    _t(19, "IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
    _t(20, "IQ4_NL", 32, 2 + 16),
    _t(21, "IQ3_S", QK_K, 2 + 13 * (QK_K // 32) + QK_K // 64),
    _t(22, "IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
    _t(23, "IQ4_XS", QK_K, 2 + 2 + QK_K // 64 + QK_K // 2),
    _t(24, "I8", 1, 1),
    _t(25, "I16", 1, 2),
    _t(26, "I32", 1, 4),
    _t(27, "I64", 1, 8),
    _t(28, "F64", 1, 8),
    _t(29, "IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    _t(30, "BF16", 1, 2),
    _t(31, "Q4_0_4_4", 32, 18, removed=True),
    _t(32, "Q4_0_4_8", 32, 18, removed=True),
    _t(33, "Q4_0_8_8", 32, 18, removed=True),
    _t(34, "TQ1_0", QK_K, 2 + QK_K // 64 + (QK_K - 4 * QK_K // 64) // 5),
    _t(35, "TQ2_0", QK_K, 2 + QK_K // 4),
    _t(36, "IQ4_NL_4_4", 32, 18, removed=True),
    _t(37, "IQ4_NL_4_8", 32, 18, removed=True),
    _t(38, "IQ4_NL_8_8", 32, 18, removed=True),
    _t(39, "MXFP4", 32, 1 + 16),  # one shared E8M0 exponent + 32 4-bit values
    _t(40, "NVFP4", 64, 4 + 32),  # four E4M3 sub-block scales + 64 4-bit values
    _t(41, "Q1_0", 128, 2 + 16),
    _t(42, "Q2_0", 64, 2 + 16),
)

GGML_TYPES: Mapping[int, GGMLType] = MappingProxyType({t.id: t for t in _TABLE})
_BY_NAME: Mapping[str, GGMLType] = MappingProxyType({t.name.upper(): t for t in _TABLE})

# What a ggml tensor allows: at most 4 dimensions and an element count that fits in int64.
GGML_MAX_DIMS = 4
_INT64_MAX = 2**63 - 1


def ggml_type(type_id: int) -> GGMLType:
    """The type for ``type_id``; an id this table does not know raises ModelFileError."""
    found = GGML_TYPES.get(type_id)
    if found is None:
        raise ModelFileError(f"unknown ggml tensor type id {type_id}")
    return found


def type_by_name(name: str) -> GGMLType:
    """Look a type up by name, case-insensitively ("q4_k" -> Q4_K)."""
    found = _BY_NAME.get(name.upper())
    if found is None:
        raise ModelFileError(f"unknown ggml tensor type {name!r}")
    return found


def tensor_nbytes(ggml_type_id: int, shape: Sequence[int]) -> int:
    """Bytes a tensor of this type and shape (ggml order, ne[0] first) occupies on disk.

    Raises ModelFileError for an unknown type, a negative dimension, more than 4 dimensions, an
    element count that overflows int64 (what ggml would do with it), or a first dimension that is
    not a whole number of blocks.
    """
    info = ggml_type(ggml_type_id)
    if len(shape) > GGML_MAX_DIMS:
        raise ModelFileError(f"tensor has {len(shape)} dimensions, ggml allows {GGML_MAX_DIMS}")
    n = 1
    for dim in shape:
        if dim < 0:
            raise ModelFileError(f"tensor shape {tuple(shape)} has a negative dimension")
        n *= dim
    if n > _INT64_MAX:
        raise ModelFileError(f"tensor shape {tuple(shape)} has more elements than int64 can count")
    row = shape[0] if shape else 1
    if row % info.block_size:
        raise ModelFileError(
            f"tensor of type {info.name} has {row} elements per row, "
            f"not a multiple of its block size {info.block_size}"
        )
    return n // info.block_size * info.type_size


# llama.cpp's "file type" (general.file_type): the quantization recipe a file was made with, as
# shown in model names. Ids 4-6 and 33-35 were retired.
_FILE_TYPES: Mapping[int, str] = MappingProxyType(
    {
        0: "F32",
        1: "F16",
        2: "Q4_0",
        3: "Q4_1",
        7: "Q8_0",
        8: "Q5_0",
        9: "Q5_1",
        10: "Q2_K",
        11: "Q3_K_S",
        12: "Q3_K_M",
        13: "Q3_K_L",
        14: "Q4_K_S",
        15: "Q4_K_M",
        16: "Q5_K_S",
        17: "Q5_K_M",
        18: "Q6_K",
        19: "IQ2_XXS",
        20: "IQ2_XS",
        21: "Q2_K_S",
        22: "IQ3_XS",
        23: "IQ3_XXS",
        24: "IQ1_S",
        25: "IQ4_NL",
        26: "IQ3_S",
        27: "IQ3_M",
        28: "IQ2_S",
        29: "IQ2_M",
        30: "IQ4_XS",
        31: "IQ1_M",
        32: "BF16",
        36: "TQ1_0",
        37: "TQ2_0",
        38: "MXFP4_MOE",
        39: "NVFP4",
        40: "Q1_0",
        41: "Q2_0",
    }
)
FILE_TYPE_IDS: Mapping[str, int] = MappingProxyType({v: k for k, v in _FILE_TYPES.items()})


def file_type_name(file_type: int) -> str | None:
    """Name of a ``general.file_type`` value (15 -> "Q4_K_M"); None when unknown."""
    return _FILE_TYPES.get(file_type)
