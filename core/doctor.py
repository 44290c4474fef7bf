"""`rigdeck doctor`: what this machine gives rigdeck, and how to fix what is missing.

Each check is independent and cheap to fail: a broken driver or a missing package is a line in
the report, never an exception.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rigdeck.core.config import Settings
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.units import format_bytes


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "missing"
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _nvidia(nvml: NvmlReader | None) -> Check:
    reader = nvml or NvmlReader(read_processes=False)
    try:
        if reader.status != "ok":
            return Check(
                "NVIDIA driver / NVML",
                "missing",
                reader.status,
                "CPU-only still works; for a GPU install the NVIDIA driver (nvidia-smi must work)",
            )
        names = ", ".join(g.name for g in reader.read())
        return Check(
            "NVIDIA driver / NVML",
            "ok",
            f"driver {reader.driver_version}, {reader.gpu_count} GPU(s): {names}",
        )
    finally:
        if nvml is None:
            reader.close()


def _llama_cpp() -> Check:
    if importlib.util.find_spec("llama_cpp") is None:
        return Check(
            "llama.cpp (llama-cpp-python)",
            "missing",
            "not installed",
            "pip install llama-cpp-python",
        )
    try:
        import llama_cpp

        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        version = getattr(llama_cpp, "__version__", "?")
    except Exception as exc:  # a wheel built for another CPU fails here, with an OSError
        return Check(
            "llama.cpp (llama-cpp-python)",
            "missing",
            f"does not load: {exc}",
            "reinstall: pip install --force-reinstall --no-cache-dir llama-cpp-python",
        )
    if gpu:
        return Check("llama.cpp (llama-cpp-python)", "ok", f"{version}, GPU offload built in")
    return Check(
        "llama.cpp (llama-cpp-python)",
        "warn",
        f"{version}, CPU-only build (no GPU offload)",
        'for CUDA: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python",
    )


def _torch() -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check("torch", "missing", "not installed", "pip install torch")
    try:
        import torch

        if torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
        else:
            device = "cpu (no CUDA device visible to torch)"
        return Check("torch", "ok", f"{torch.__version__}, device {device}")
    except Exception as exc:
        return Check(
            "torch", "missing", f"does not load: {exc}", "pip install --force-reinstall torch"
        )


def _hf_cache() -> Check:
    try:
        from huggingface_hub import constants
    except ImportError:
        return Check(
            "Hugging Face cache",
            "missing",
            "huggingface-hub not installed",
            "pip install huggingface-hub",
        )
    cache = Path(constants.HF_HUB_CACHE)
    token = bool(os.environ.get("HF_TOKEN")) or Path(constants.HF_TOKEN_PATH).is_file()
    # Only whether a token exists is said, never any part of it.
    token_text = "token set" if token else "no token (public models only)"
    status = "ok" if token else "warn"
    fix = "" if token else "for gated models: export HF_TOKEN=... or hf auth login"
    return Check("Hugging Face cache", status, f"{cache} ({token_text})", fix)


def _disk(settings: Settings) -> Check:
    from huggingface_hub import constants

    target = Path(constants.HF_HUB_CACHE)
    while not target.exists() and target != target.parent:
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < 20 * 1024**3:
        return Check(
            "free disk",
            "warn",
            f"{format_bytes(free)} free at {target}",
            "a 7B Q4 model is ~4.5 GB, a 70B ~40 GB: free space or set HF_HOME",
        )
    return Check("free disk", "ok", f"{format_bytes(free)} free at {target}")


def _tools() -> Check:
    missing = [t for t in ("ssh", "rsync") if shutil.which(t) is None]
    if missing:
        return Check(
            "ssh / rsync",
            "missing",
            "not found: " + ", ".join(missing),
            "apt install openssh-client rsync (needed for cloud jobs)",
        )
    return Check("ssh / rsync", "ok", "both on PATH")


def _config(settings: Settings) -> Check:
    path = settings.config_path
    if settings.warnings:
        return Check("config", "warn", settings.warnings[0], "fix the file, or delete it")
    if path is None or not path.exists():
        return Check(
            "config",
            "ok",
            f"{path} (not created: defaults in use)",
            "copy sample_configs/rigdeck.toml there to change settings",
        )
    return Check("config", "ok", str(path))


def run_checks(settings: Settings, *, nvml: NvmlReader | None = None) -> list[Check]:
    checks: list[Callable[[], Check]] = [
        lambda: _nvidia(nvml),
        _llama_cpp,
        _torch,
        _hf_cache,
        lambda: _disk(settings),
        _tools,
        lambda: _config(settings),
    ]
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:  # a check must never take the report down
            name = getattr(check, "__name__", "check")
            results.append(Check(name, "warn", f"check failed: {exc}"))
    return results
