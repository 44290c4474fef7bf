"""What the Hub client hands back: repos, GGUF files (split parts grouped), download progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rigdeck.core.errors import HubError
from rigdeck.core.models.format.quant_names import (
    group_split_parts,
    is_projector,
    model_stem,
    quant_from_filename,
)


class Cancelled(HubError):
    """The operation was cancelled by the user; what was downloaded so far is kept for resume."""


@dataclass(frozen=True)
class HubRepo:
    """One search hit: a repo holding GGUF files."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    last_modified: datetime | None = None
    gated: bool = False  # the owner must approve (or terms accepted) before files download
    private: bool = False
    tags: tuple[str, ...] = ()

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]


@dataclass(frozen=True)
class HubFilePart:
    """One file in a repo. `sha256` is the LFS hash when the Hub published one."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class HubFile:
    """A GGUF model in a repo: one file, or all parts of a split (first part first)."""

    repo_id: str
    revision: str
    parts: tuple[HubFilePart, ...]
    quant: str | None = None
    is_projector: bool = False
    complete: bool = True  # False when the listing lacks some split parts

    @property
    def path(self) -> str:
        """The file to open or load: the first part of a split."""
        return self.parts[0].path

    @property
    def name(self) -> str:
        return model_stem(self.path)

    @property
    def size_bytes(self) -> int:
        return sum(p.size for p in self.parts)


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands; bytes count the whole model (every part)."""

    repo_id: str
    file: str  # the part being transferred
    part: int  # 1-based
    part_count: int
    done_bytes: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


ProgressCallback = Callable[[DownloadProgress], None]


def group_files(repo_id: str, revision: str, files: Iterable[HubFilePart]) -> list[HubFile]:
    """Fold split parts into one `HubFile` each and label quantization and projectors."""
    singles, splits = group_split_parts(files, lambda f: f.path)
    grouped = [
        HubFile(repo_id, revision, (f,), quant_from_filename(f.path), is_projector(f.path))
        for f in singles
    ]
    for (_stem, count), parts in splits.items():
        ordered = tuple(parts[i] for i in sorted(parts))
        grouped.append(
            HubFile(
                repo_id,
                revision,
                ordered,
                quant_from_filename(ordered[0].path),
                is_projector(ordered[0].path),
                complete=len(ordered) == count,
            )
        )
    grouped.sort(key=lambda f: (f.is_projector, f.size_bytes, f.path))
    return grouped
