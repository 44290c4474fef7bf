"""Quantization labels (Q4_K_M, IQ2_XXS, BF16, MXFP4…) from file names and GGUF file types.

File names are the only label a remote file has before its header is read, and the label people
search for, so both paths end in the same spelling llama.cpp uses.
"""

from __future__ import annotations

import re

# llama.cpp's `enum llama_ftype` (the GGUF key general.file_type). Gaps are retired types.
FILE_TYPE_LABELS: dict[int, str] = {
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
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

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
    return FILE_TYPE_LABELS.get(int(file_type) & ~1024)


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
