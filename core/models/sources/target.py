"""What a user points rigdeck at, turned into ModelInfo: a local GGUF or a file on the Hub.

Target strings (the CLI's, the models pane's, `rigdeck run`'s):

- ``PATH``: a local GGUF; any part of a split model stands for the whole model.
- ``hf:OWNER/NAME[@REVISION]/FILE.gguf``: one remote file (any split part: all parts are read).
- ``hf:OWNER/NAME[@REVISION]:QUANT`` or ``hf:OWNER/NAME/QUANT``: the repo's file(s) of that
  quantization, e.g. ``hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M``.
- ``hf:OWNER/NAME[@REVISION]``: every model file in the repo (projectors left out).

Remote models are read from their headers alone, with a few HTTP range requests per file; each
`ResolvedModel` says what its read cost, so a caller can show that a fit cost kilobytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rigdeck.core.errors import FitError, HubError, ModelFileError, RigdeckError
from rigdeck.core.models.format.gguf import GGUFHeader, join_split, read_gguf, read_header
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.format.model_reader import info_from_header
from rigdeck.core.models.format.quant_names import split_part

if TYPE_CHECKING:  # the Hub client pulls in huggingface_hub; local fits never need it
    from rigdeck.core.models.sources.hub import Hub, HubFile

HF_PREFIX = "hf:"
# The Hub's own rule for owner and repo names (huggingface_hub validates the same way).
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
KiB = 1 << 10
# Parts after the first of a split hold only their tensor table (tens of KiB): small reads.
_PART_FETCH = 256 * KiB
# Remote header reads are network-bound; a few at once make a 20-quant repo quick.
REPO_WORKERS = 4


@dataclass(frozen=True)
class Target:
    """A parsed target string; exactly one of ``path`` and ``repo_id`` is set."""

    text: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str = "main"
    filename: str | None = None
    """A file in the repo (any split part)."""
    quant: str | None = None
    """A quantization label to pick the repo's file(s) by, when no file is named."""

    @property
    def is_remote(self) -> bool:
        return self.repo_id is not None

    @property
    def is_repo(self) -> bool:
        """A whole repo (or every file of one quant): several results, one per file."""
        return self.is_remote and self.filename is None


@dataclass(frozen=True)
class RemoteCost:
    """What reading remote headers cost on the wire: HEADs plus range GETs, and body bytes."""

    requests: int = 0
    bytes: int = 0

    def __add__(self, other: RemoteCost) -> RemoteCost:
        return RemoteCost(self.requests + other.requests, self.bytes + other.bytes)


@dataclass(frozen=True)
class ResolvedModel:
    """One model ready to fit, with where it came from."""

    label: str
    """The file name a user recognises (first part of a split)."""
    location: str
    """A local path, or ``hf:OWNER/NAME/FILE``."""
    info: ModelInfo
    parts: tuple[str, ...]
    file_size: int
    """Bytes of every part together (the download size for a remote model)."""
    repo_id: str | None = None
    revision: str | None = None
    remote: RemoteCost | None = None

    @property
    def quant(self) -> str:
        return self.info.quant


@dataclass(frozen=True)
class FailedModel:
    """A file of a repo that could not be read; the others still get fitted."""

    label: str
    location: str
    quant: str | None
    file_size: int
    error: str


Resolved = ResolvedModel | FailedModel


# --------------------------------------------------------------------------------------------
# Parsing


def parse_target(text: str) -> Target:
    """Parse a target string; raise FitError with the accepted forms when it is malformed."""
    raw = text.strip()
    if not raw:
        raise FitError("no model given; pass a GGUF path or hf:OWNER/NAME[/FILE]")
    if not raw.lower().startswith(HF_PREFIX):
        return Target(text=raw, path=Path(raw).expanduser())
    rest = raw[len(HF_PREFIX) :].strip("/")
    quant = None
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail:
        rest, quant = head, tail.strip() or None
    pieces = [p for p in rest.split("/") if p]
    if len(pieces) < 2:
        raise FitError(
            f"{raw!r}: write a Hub model as hf:OWNER/NAME, hf:OWNER/NAME/FILE.gguf "
            "or hf:OWNER/NAME:QUANT"
        )
    owner, name = pieces[0], pieces[1]
    revision = "main"
    if "@" in name:
        name, _, revision = name.partition("@")
        if not name or not revision:
            raise FitError(f"{raw!r}: write a revision as hf:OWNER/NAME@REVISION")
    for part in (owner, name):
        if not _REPO_PART_RE.match(part) or len(owner) + len(name) > 95:
            raise FitError(
                f"{raw!r}: {owner}/{name} is not a valid repo name (letters, digits, "
                "'-', '_' and '.')"
            )
    filename = "/".join(pieces[2:]) or None
    if filename is not None and not filename.lower().endswith(".gguf"):
        if quant is not None or "/" in filename:
            raise FitError(f"{raw!r}: a file on the Hub must end in .gguf")
        filename, quant = None, filename
    return Target(
        text=raw, repo_id=f"{owner}/{name}", revision=revision, filename=filename, quant=quant
    )


# --------------------------------------------------------------------------------------------
# Local files


def load_local(path: str | os.PathLike[str]) -> ResolvedModel:
    """Read a local GGUF (a split model from any of its parts) into a ResolvedModel."""
    # Absolute, not resolved: a path into the HF cache stays the snapshot path a user knows.
    p = Path(path).expanduser().absolute()
    given = Path(path).expanduser()
    if not p.exists() and split_part(p.name) is None:
        hint = ""
        if not given.is_absolute() and len(given.parts) == 2 and given.suffix.lower() != ".gguf":
            hint = f" (for a Hugging Face repo write hf:{given.as_posix()})"
        raise ModelFileError(f"{given}: no such file{hint}")
    header = read_gguf(p)
    parts = header.parts or (str(p),)
    info = info_from_header(header, p.name)
    return ResolvedModel(
        label=Path(parts[0]).name,
        location=str(Path(parts[0])),
        info=info,
        parts=tuple(parts),
        file_size=header.file_size or info.file_size,
    )


# --------------------------------------------------------------------------------------------
# The Hub


def load_remote(
    hub: Hub, repo_id: str, filename: str, *, revision: str = "main", file_size: int | None = None
) -> ResolvedModel:
    """Read one remote model's header (every part of a split) without downloading it."""
    names = _part_names(filename)
    headers: list[GGUFHeader] = []
    cost = RemoteCost()
    for i, name in enumerate(names):
        options: dict[str, Any] = (
            {} if i == 0 else {"block_size": _PART_FETCH, "first_fetch": _PART_FETCH}
        )
        source = hub.open(repo_id, name, revision=revision, **options)
        try:
            headers.append(read_header(source))
        finally:
            source.close()  # the parser is done: hang up the rest of the stream
            # The HEAD that resolved the file is a request too.
            cost = cost + RemoteCost(source.requests + 1, source.bytes_received)
    header = (
        headers[0]
        if len(headers) == 1
        else join_split(headers, [f"{HF_PREFIX}{repo_id}/{n}" for n in names])
    )
    count = header.get("split.count")
    if len(headers) == 1 and isinstance(count, int) and count > 1:
        raise ModelFileError(
            f"{repo_id}/{filename}: is one part of a split model but its name "
            "does not end in -0000N-of-0000M.gguf"
        )
    info = info_from_header(header, names[0])
    size = header.file_size or file_size or info.file_size
    return ResolvedModel(
        label=names[0].rsplit("/", 1)[-1],
        location=f"{HF_PREFIX}{repo_id}/{names[0]}",
        info=info,
        parts=tuple(names),
        file_size=size,
        repo_id=repo_id,
        revision=revision,
        remote=cost,
    )


def repo_models(
    hub: Hub, repo_id: str, *, revision: str = "main", quant: str | None = None
) -> list[HubFile]:
    """The repo's model files (no projectors), optionally only those of one quantization."""
    files = [f for f in hub.list_files(repo_id, revision=revision) if not f.is_projector]
    if not files:
        raise HubError(f"{repo_id} has no GGUF model files (at revision {revision})")
    if quant is None:
        return files
    want = quant.upper()
    picked = [f for f in files if (f.quant or "").upper() == want]
    if not picked:
        picked = [f for f in files if want in f.path.upper()]
    if not picked:
        have = ", ".join(sorted({f.quant or f.name for f in files}))
        raise HubError(f"{repo_id} has no {quant} file; it has {have}")
    return picked


def resolve(
    target: Target, *, hub: Callable[[], Hub] | None = None, workers: int = REPO_WORKERS
) -> list[Resolved]:
    """Every model the target names, in the repo's order (smallest first).

    A single file's failure raises; in a whole repo a file that cannot be read becomes a
    FailedModel so the others are still fitted. ``hub`` builds the client (default: from env).
    """
    if target.path is not None:
        return [load_local(target.path)]
    assert target.repo_id is not None
    client = (hub or _default_hub)()
    if target.filename is not None:
        return [load_remote(client, target.repo_id, target.filename, revision=target.revision)]
    files = repo_models(client, target.repo_id, revision=target.revision, quant=target.quant)

    def one(f: HubFile) -> Resolved:
        if not f.complete:
            return FailedModel(
                f.name,
                f"{HF_PREFIX}{f.repo_id}/{f.path}",
                f.quant,
                f.size_bytes,
                "the repo lacks some parts of this split model",
            )
        try:
            return load_remote(
                client, f.repo_id, f.path, revision=f.revision, file_size=f.size_bytes
            )
        except RigdeckError as exc:
            return FailedModel(
                f.path.rsplit("/", 1)[-1],
                f"{HF_PREFIX}{f.repo_id}/{f.path}",
                f.quant,
                f.size_bytes,
                str(exc),
            )

    if workers <= 1 or len(files) == 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(workers, len(files))) as pool:
        return list(pool.map(one, files))


def _default_hub() -> Hub:
    from rigdeck.core.models.sources.hub import Hub

    return Hub.from_env()


def _part_names(filename: str) -> list[str]:
    """Every part of the split ``filename`` belongs to, in order; ``[filename]`` otherwise."""
    split = split_part(filename)
    if split is None:
        return [filename]
    stem, _index, count = split
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def total_cost(models: Sequence[Resolved]) -> RemoteCost | None:
    """What every remote read together cost; None when nothing was remote."""
    costs = [m.remote for m in models if isinstance(m, ResolvedModel) and m.remote is not None]
    if not costs:
        return None
    total = RemoteCost()
    for c in costs:
        total = total + c
    return total
