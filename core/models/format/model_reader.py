"""Header to ModelInfo: the one way every face reads a model, local or on the Hub.

`ModelInfo.from_header` sees only the header; a model whose header names no file type (some
converters leave `general.file_type` out) still has a quantization label in its file name, so the
name is the fallback. Everything that shows or fits a model reads it through here, so a file's
quant reads the same in `rigdeck fit`, `rigdeck run`, the models pane and the chat pane.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path, PurePosixPath

from rigdeck.core.models.format.gguf import GGUFHeader, read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.format.quant_names import quant_from_filename


def info_from_header(header: GGUFHeader, file_name: str | os.PathLike[str]) -> ModelInfo:
    """The fit's view of a header; ``file_name`` (any split part) labels a quant-less header.

    The header's own file type wins; the first part's name, else ``file_name``, is the fallback.
    """
    info = ModelInfo.from_header(header)
    if info.quant and info.quant != "unknown":
        return info
    first = header.parts[0] if header.parts else os.fspath(file_name)
    name = PurePosixPath(first.replace("\\", "/")).name
    return replace(info, quant=quant_from_filename(name) or info.quant)


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """A local GGUF (a split model from any of its parts) as the fit sees it.

    Raises ``ModelFileError`` when the file is missing, truncated or not a GGUF.
    """
    return info_from_header(read_gguf(Path(path)), Path(path).name)
