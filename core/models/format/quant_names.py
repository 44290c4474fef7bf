"""Quantization labels (Q4_K_M, IQ2_XXS, BF16, MXFP4…) from file names and GGUF file types.

File names are the only label a remote file has before its header is read, and the label people
search for, so both paths end in the same spelling llama.cpp uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TypeVar

from rigdeck.core.models.format.ggml_types import file_type_name

T = TypeVar("T")

# Longest spellings first inside each alternation so "Q4_K_M" wins over "Q4_K" and "IQ2_XXS" over
# "IQ2_XS". The label must stand alone between separators: "Qwen2.5" or "Q4" inside a word is not
# a quant.
_QUANT_RE = re.compile(
    r"(?<![A-Z0-9])("
    r"UD-(?=I?Q)"  # unsloth "dynamic" quants keep their prefix: UD-Q4_K_XL
    r")?("
    r"IQ[1-4]_(?:XXS|XS|NL|S|M)"
    r"|TQ[12]_0"
    r"|Q[2-8]_K(?:_XXL|_XL|_S|_M|_L)?"
    r"|Q4_0_[48]_[48]"
    r"|Q[4-8]_[01]"
    r"|Q1_0"
    r"|MXFP4(?:_MOE)?|NVFP4"
    r"|BF16|FP16|F16|FP32|F32"
    r")(?![A-Z0-9])"
)

_ALIASES = {"FP16": "F16", "FP32": "F32"}


def quant_from_filename(name: str) -> str | None:
    """The quantization label in a file or tag name, e.g. ``Llama-3-8B.Q4_K_M.gguf`` -> ``Q4_K_M``.

    Case does not matter (ollama tags are lower case). When several labels appear the last one
    wins: quant labels sit at the end of names, and earlier ones are usually part of a base
    model's name.
    """
    base = name.rsplit("/", 1)[-1].upper()
    matches = list(_QUANT_RE.finditer(base))
    if not matches:
        return None
    prefix, label = matches[-1].groups()
    label = _ALIASES.get(label, label)
    return f"{prefix}{label}" if prefix else label


def quant_from_file_type(file_type: int | None) -> str | None:
    """The label for a GGUF ``general.file_type`` value; None for unknown or missing values."""
    if file_type is None:
        return None
    # Bit 10 (1024) marks a file whose type was guessed by llama.cpp's quantizer.
    return file_type_name(int(file_type) & ~1024)


# llama.cpp's gguf-split naming: "<stem>-00001-of-00003.gguf". Part numbers are 1-based.
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def split_part(filename: str) -> tuple[str, int, int] | None:
    """``(stem, index, count)`` for a split GGUF part name, None for a single-file model.

    ``stem`` keeps any folder prefix, so parts of one model group by ``(stem, count)``.
    """
    match = _SPLIT_RE.match(filename)
    if match is None:
        return None
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= index <= count:
        return None
    return match["stem"], index, count


def group_split_parts(
    items: Iterable[T], name: Callable[[T], str]
) -> tuple[list[T], dict[tuple[str, int], dict[int, T]]]:
    """Single-file models, and split parts grouped by ``(stem, count)`` then part index."""
    singles: list[T] = []
    splits: dict[tuple[str, int], dict[int, T]] = {}
    for item in items:
        split = split_part(name(item))
        if split is None:
            singles.append(item)
        else:
            stem, index, count = split
            splits.setdefault((stem, count), {})[index] = item
    return singles, splits


def is_projector(filename: str) -> bool:
    """Whether a GGUF is a vision/audio projector (mmproj) rather than a language model."""
    base = filename.rsplit("/", 1)[-1].lower()
    return "mmproj" in base or "projector" in base


def model_stem(filename: str) -> str:
    """A display name for a GGUF file: its base name without folders, split suffix or extension."""
    base = filename.rsplit("/", 1)[-1]
    split = split_part(base)
    if split is not None:
        return split[0]
    return base[: -len(".gguf")] if base.lower().endswith(".gguf") else base
