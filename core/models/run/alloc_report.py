"""Ask llama.cpp itself what a model would allocate, per buffer type, without allocating it.

llama.cpp can load a model with ``no_alloc``: it lays out every weight, KV-cache and compute
buffer exactly as a real load would, but allocates nothing. Its per-buffer figures are kept in a
C++ map (``llama_get_memory_breakdown``) that the C API does not expose, so this module reads that
map through ctypes on the one ABI where its layout is known (x86-64 Linux, libstdc++) and checks
it against the compute-buffer sizes llama.cpp also writes to its log. Elsewhere only the logged
figures are returned.

Everything runs in a child process: llama.cpp's logger is process-global (capturing it would
silence a runner in the same process) and a failed assertion inside llama.cpp aborts the whole
process. The parent gets one JSON document back; ``python -m rigdeck.core.models.run.alloc_report``
is that child.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from rigdeck.core.errors import RunError

# ggml_type ids of the KV cache types llama.cpp accepts.
KV_TYPE_IDS: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "iq4_nl": 20,
    "bf16": 30,
}
_DEV_CPU, _DEV_GPU, _DEV_IGPU = 0, 1, 2
_MIB_LINE = re.compile(r"(\w+):\s+(\S+)\s+(model|KV|output|compute) buffer size =\s+([\d.]+) MiB")


@dataclass(frozen=True)
class ReportRequest:
    """How to load: the knobs that change what llama.cpp allocates."""

    path: str
    n_gpu_layers: int = 0
    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq: int = 1
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool | None = None
    """None lets llama.cpp decide (its 'auto')."""
    swa_full: bool = False
    n_cpu_moe: int = 0
    """Keep the routed experts of the first N blocks on the CPU (llama.cpp's --n-cpu-moe)."""
    tensor_split: tuple[float, ...] = ()
    no_alloc: bool = True
    """False performs a real load (and allocation): only for models that fit this machine."""
    use_mmap: bool = False
    offload_kqv: bool = True
    n_threads: int = 0
    """0: llama.cpp's default."""
    prompt_tokens: int = 0
    """With a real load: time a prompt of this many tokens (prompt tokens/s)."""
    decode_tokens: int = 0
    """With a real load: time this many single-token decode steps (decode tokens/s)."""


@dataclass(frozen=True)
class BufferFigure:
    """One buffer type's share: weights ('model'), KV cache ('context') and compute scratch."""

    buffer_type: str
    device: str
    """'CPU' for every buffer in host memory (pinned CUDA_Host buffers and repacked weights too)."""
    is_host: bool
    model_bytes: int
    context_bytes: int
    compute_bytes: int


@dataclass(frozen=True)
class DeviceFigures:
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes


@dataclass(frozen=True)
class LlamaReport:
    """What llama.cpp reported for one load."""

    request: ReportRequest
    buffers: tuple[BufferFigure, ...]
    exact: bool
    """True when the figures come from llama.cpp's own breakdown, False when only logged ones
    (compute and output buffers) were available."""
    output_buffer_bytes: int
    output_buffer_type: str
    gpu_offload: bool
    """Whether this llama.cpp build can offload to a GPU at all."""
    devices: tuple[str, ...]
    device_free_bytes: tuple[int, ...]
    device_total_bytes: tuple[int, ...]
    flash_attn: bool | None
    """What 'auto' resolved to, when the log said."""
    n_ctx: int
    seconds: float
    log_tail: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    prompt_tps: float | None = None
    decode_tps: float | None = None
    rss_bytes: int | None = None
    """Resident memory of the child after the context was created (real loads)."""
    rss_peak_bytes: int | None = None
    gpu_used_delta_bytes: tuple[int, ...] = ()
    """Per GPU, memory in use after the load minus before it (NVML), when NVML is available:
    llama.cpp's buffers plus the CUDA context and library overhead."""

    def by_device(self) -> dict[str, DeviceFigures]:
        """Bytes per device ('CPU' = host RAM), weights / KV / compute / output."""
        acc: dict[str, list[int]] = {}
        for b in self.buffers:
            row = acc.setdefault(b.device, [0, 0, 0, 0])
            row[0] += b.model_bytes
            row[1] += b.context_bytes
            row[2] += b.compute_bytes
        acc.setdefault("CPU", [0, 0, 0, 0])[3] += self.output_buffer_bytes
        return {dev: DeviceFigures(*row) for dev, row in acc.items()}


def llama_report(
    request: ReportRequest, *, timeout_s: float = 300.0, python: str | None = None
) -> LlamaReport:
    """Run llama.cpp in a child process and return its per-buffer figures.

    Raises RunError (one line) when llama.cpp refuses the model or the child dies.
    """
    payload = json.dumps(asdict(request))
    cmd = [python or sys.executable, "-m", "rigdeck.core.models.run.alloc_report"]
    try:
        proc = subprocess.run(
            cmd, input=payload, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise RunError(f"llama.cpp did not report within {timeout_s:.0f} s") from None
    doc = _last_json(proc.stdout)
    if doc is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"llama.cpp report failed (exit {proc.returncode}): {tail[0][:200]}")
    if "error" in doc:
        raise RunError(f"llama.cpp could not load {os.path.basename(request.path)}: {doc['error']}")
    return _report_from_doc(request, doc)


def _last_json(text: str) -> dict[str, object] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)  # type: ignore[no-any-return]
    return None


def _report_from_doc(request: ReportRequest, doc: Mapping[str, object]) -> LlamaReport:
    raw = doc["buffers"]
    if not isinstance(raw, list):
        raise ValueError("the report's buffers are not a list")
    buffers = tuple(BufferFigure(**b) for b in raw)
    return LlamaReport(
        request=request,
        buffers=buffers,
        exact=bool(doc["exact"]),
        output_buffer_bytes=int(doc["output_buffer_bytes"]),  # type: ignore[call-overload]
        output_buffer_type=str(doc["output_buffer_type"]),
        gpu_offload=bool(doc["gpu_offload"]),
        devices=tuple(doc["devices"]),  # type: ignore[arg-type]
        device_free_bytes=tuple(doc["device_free_bytes"]),  # type: ignore[arg-type]
        device_total_bytes=tuple(doc["device_total_bytes"]),  # type: ignore[arg-type]
        flash_attn=doc.get("flash_attn"),  # type: ignore[arg-type]
        n_ctx=int(doc["n_ctx"]),  # type: ignore[call-overload]
        seconds=float(doc["seconds"]),  # type: ignore[arg-type]
        log_tail=str(doc.get("log_tail", "")),
        warnings=tuple(doc.get("warnings", ())),  # type: ignore[arg-type]
        prompt_tps=doc.get("prompt_tps"),  # type: ignore[arg-type]
        decode_tps=doc.get("decode_tps"),  # type: ignore[arg-type]
        rss_bytes=doc.get("rss_bytes"),  # type: ignore[arg-type]
        rss_peak_bytes=doc.get("rss_peak_bytes"),  # type: ignore[arg-type]
        gpu_used_delta_bytes=tuple(doc.get("gpu_used_delta_bytes", ())),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# The child: everything below runs inside the subprocess.
# ---------------------------------------------------------------------------------------------


def breakdown_abi_supported() -> bool:
    """Whether llama.cpp's C++ breakdown map can be read here (x86-64 Linux, libstdc++)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


class _Libs:
    def __init__(self) -> None:
        import llama_cpp

        libdir = os.environ.get("LLAMA_CPP_LIB_PATH") or os.path.join(
            os.path.dirname(llama_cpp.__file__), "lib"
        )
        self.C = llama_cpp.llama_cpp
        self.llama = ctypes.CDLL(_find_lib(libdir, "llama"))
        self.base = ctypes.CDLL(_find_lib(libdir, "ggml-base"))
        self.cpu = ctypes.CDLL(_find_lib(libdir, "ggml-cpu"))
        # The device registry lives in libggml, buffer/device queries in libggml-base.
        self.ggml = ctypes.CDLL(_find_lib(libdir, "ggml"))
        for name, res, args in (
            ("ggml_backend_buft_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("ggml_backend_buft_is_host", ctypes.c_bool, [ctypes.c_void_p]),
            ("ggml_backend_buft_get_device", ctypes.c_void_p, [ctypes.c_void_p]),
            ("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("ggml_backend_dev_type", ctypes.c_int, [ctypes.c_void_p]),
            ("ggml_backend_dev_count", ctypes.c_size_t, []),
            ("ggml_backend_dev_get", ctypes.c_void_p, [ctypes.c_size_t]),
            (
                "ggml_backend_dev_memory",
                None,
                [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
            ),
        ):
            lib = (
                self.ggml
                if name in ("ggml_backend_dev_count", "ggml_backend_dev_get")
                else self.base
            )
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        self.cpu.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
        self.cpu.ggml_backend_cpu_buffer_type.argtypes = []


def _find_lib(libdir: str, stem: str) -> str:
    for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            return path
    raise RunError(f"llama.cpp library {stem} not found in {libdir}")


class _Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _child(req: ReportRequest) -> dict[str, object]:
    t0 = time.monotonic()
    gpu_before = _nvml_used()
    libs = _Libs()
    C = libs.C
    logs: list[str] = []

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)  # type: ignore[untyped-decorator]
    def on_log(level: int, text: bytes, user: ctypes.c_void_p) -> None:
        logs.append(text.decode("utf-8", "replace"))

    C.llama_log_set(on_log, ctypes.c_void_p())
    C.llama_backend_init()

    mp = C.llama_model_default_params()
    mp.n_gpu_layers = req.n_gpu_layers
    mp.no_alloc = req.no_alloc
    # mmap is meaningless without allocation, and llama.cpp asserts against combining them.
    mp.load_mode = (
        C.LLAMA_LOAD_MODE_MMAP if req.use_mmap and not req.no_alloc else C.LLAMA_LOAD_MODE_NONE
    )
    keep: list[object] = []
    if req.tensor_split:
        arr = (ctypes.c_float * C.LLAMA_MAX_DEVICES)(*req.tensor_split)
        keep.append(arr)
        mp.tensor_split = arr
    if req.n_cpu_moe > 0:
        cpu_buft = libs.cpu.ggml_backend_cpu_buffer_type()
        pats = [
            f"blk\\.{i}\\.ffn_(up|down|gate|gate_up)_(ch|)exps".encode()
            for i in range(req.n_cpu_moe)
        ]
        arr = (_Override * (len(pats) + 1))(
            *[_Override(p, cpu_buft) for p in pats], _Override(None, None)
        )
        keep += [arr, pats]
        mp.tensor_buft_overrides = ctypes.cast(arr, ctypes.c_void_p)

    model = C.llama_model_load_from_file(req.path.encode(), mp)
    if not model:
        return {"error": _last_error(logs) or "model load failed"}

    cp = C.llama_context_default_params()
    cp.n_ctx = req.n_ctx
    cp.n_batch = req.n_batch
    cp.n_ubatch = req.n_ubatch
    cp.n_seq_max = req.n_seq
    cp.type_k = KV_TYPE_IDS[req.type_k]
    cp.type_v = KV_TYPE_IDS[req.type_v]
    cp.swa_full = req.swa_full
    cp.offload_kqv = req.offload_kqv
    if req.n_threads > 0:
        cp.n_threads = cp.n_threads_batch = req.n_threads
    cp.flash_attn_type = (
        C.LLAMA_FLASH_ATTN_TYPE_AUTO
        if req.flash_attn is None
        else C.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if req.flash_attn
        else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    ctx = C.llama_init_from_model(model, cp)
    if not ctx:
        C.llama_model_free(model)
        return {"error": _last_error(logs) or "context creation failed"}

    text = "".join(logs)
    logged = _logged_buffers(text)
    warnings: list[str] = []
    buffers: list[dict[str, object]] = []
    exact = False
    if breakdown_abi_supported():
        try:
            buffers = _read_breakdown(libs, ctx)
            exact = _agrees_with_log(buffers, logged)
            if not exact:
                warnings.append("breakdown disagrees with the log; using logged figures")
        except (OSError, AttributeError, ValueError) as exc:
            warnings.append(f"breakdown unavailable: {exc}")
    if not exact:
        buffers = [
            {
                "buffer_type": name,
                "device": _device_of_name(name),
                "is_host": _device_of_name(name) == "CPU",
                "model_bytes": 0,
                "context_bytes": 0,
                "compute_bytes": size,
            }
            for name, size in logged.get("compute", {}).items()
        ]

    out_type, out_bytes = next(iter(logged.get("output", {}).items()), ("CPU", 0))
    devices, free, total = _devices(libs)
    extra: dict[str, object] = {}
    if not req.no_alloc:
        gpu_after = _nvml_used()
        if gpu_before and len(gpu_after) == len(gpu_before):
            extra["gpu_used_delta_bytes"] = [
                a - b for a, b in zip(gpu_after, gpu_before, strict=True)
            ]
        extra.update(_proc_memory())
        if req.prompt_tokens or req.decode_tokens:
            extra.update(_time_tokens(C, ctx, model, req))
    fa = None
    m = re.search(r"Flash Attention (enabled|not supported, set to disabled)", text)
    if m:
        fa = m.group(1) == "enabled"
    elif req.flash_attn is not None:
        fa = req.flash_attn
    n_ctx = C.llama_n_ctx(ctx)
    C.llama_free(ctx)
    C.llama_model_free(model)
    return {
        "buffers": buffers,
        "exact": exact,
        "output_buffer_bytes": out_bytes,
        "output_buffer_type": out_type,
        "gpu_offload": bool(C.llama_supports_gpu_offload()),
        "devices": devices,
        "device_free_bytes": free,
        "device_total_bytes": total,
        "flash_attn": fa,
        "n_ctx": int(n_ctx),
        "seconds": time.monotonic() - t0,
        "log_tail": "".join(logs[-40:]),
        "warnings": warnings,
        **extra,
    }


def _time_tokens(C: object, ctx: object, model: object, req: ReportRequest) -> dict[str, float]:
    """Prompt and decode throughput on arbitrary token ids: speed does not depend on values."""
    vocab = C.llama_model_get_vocab(model)  # type: ignore[attr-defined]
    n_vocab = max(int(C.llama_vocab_n_tokens(vocab)), 16)  # type: ignore[attr-defined]
    out: dict[str, float] = {}

    def decode(ids: list[int]) -> None:
        arr = (ctypes.c_int32 * len(ids))(*ids)
        batch = C.llama_batch_get_one(arr, len(ids))  # type: ignore[attr-defined]
        if C.llama_decode(ctx, batch) != 0:  # type: ignore[attr-defined]
            raise RunError("llama_decode failed")
        C.llama_synchronize(ctx)  # type: ignore[attr-defined]

    decode([1])  # warm-up: first-use allocations and kernel loads
    n_prompt = min(req.prompt_tokens, req.n_ctx - req.decode_tokens - 2)
    if n_prompt > 0:
        ids = [(7 * i + 11) % n_vocab for i in range(n_prompt)]
        t = time.perf_counter()
        for start in range(0, n_prompt, req.n_batch):
            decode(ids[start : start + req.n_batch])
        out["prompt_tps"] = n_prompt / (time.perf_counter() - t)
    if req.decode_tokens > 0:
        t = time.perf_counter()
        for i in range(req.decode_tokens):
            decode([(13 * i + 5) % n_vocab])
        out["decode_tps"] = req.decode_tokens / (time.perf_counter() - t)
    return out


def _proc_memory() -> dict[str, int]:
    """VmRSS / VmHWM of this process from /proc (Linux); nothing elsewhere."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_bytes" if line.startswith("VmRSS") else "rss_peak_bytes"
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _nvml_used() -> list[int]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        used = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            used.append(int(info.used))
        return used
    except pynvml.NVMLError:
        return []


def _last_error(logs: Sequence[str]) -> str:
    for line in reversed(logs):
        low = line.lower()
        if "error" in low or "failed" in low or "exception" in low:
            return " ".join(line.split())[:300]
    return ""


def _read_breakdown(libs: _Libs, ctx: object) -> list[dict[str, object]]:
    """Read llama_get_memory_breakdown's std::map<buft, {model, context, compute}>.

    The function returns the map by value, so the caller passes a hidden result pointer first
    (Itanium C++ ABI). libstdc++'s map is a red-black tree: a header node whose parent is the
    root, and nodes of four words (colour, parent, left, right) followed by the value. The map
    is leaked on purpose: destroying it needs C++, and the child exits right after.
    """
    fn = libs.llama._Z26llama_get_memory_breakdownPK13llama_context
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    storage = (ctypes.c_uint64 * 8)()
    fn(ctypes.addressof(storage), ctx)
    words = list(storage)
    root, count = words[2], words[5]
    if count > 64:
        raise ValueError(f"implausible map size {count}")

    def u64(addr: int) -> int:
        return ctypes.c_uint64.from_address(addr).value

    out: list[dict[str, object]] = []
    stack: list[int] = []
    node = root
    while stack or node:
        while node:
            stack.append(node)
            node = u64(node + 16)
        node = stack.pop()
        buft = u64(node + 32)
        name = (libs.base.ggml_backend_buft_name(buft) or b"?").decode()
        dev = libs.base.ggml_backend_buft_get_device(buft)
        is_host = bool(libs.base.ggml_backend_buft_is_host(buft))
        dev_type = libs.base.ggml_backend_dev_type(dev) if dev else _DEV_CPU
        dev_name = (libs.base.ggml_backend_dev_name(dev) or b"?").decode() if dev else "CPU"
        on_host = is_host or dev_type not in (_DEV_GPU, _DEV_IGPU)
        out.append(
            {
                "buffer_type": name,
                "device": "CPU" if on_host else dev_name,
                "is_host": is_host,
                "model_bytes": u64(node + 40),
                "context_bytes": u64(node + 48),
                "compute_bytes": u64(node + 56),
            }
        )
        node = u64(node + 24)
    if len(out) != count:
        raise ValueError("map walk did not visit every entry")
    return out


def _logged_buffers(text: str) -> dict[str, dict[str, int]]:
    """'<func>: <buft> <kind> buffer size = X MiB' lines, summed per kind and buffer type."""
    acc: dict[str, dict[str, int]] = {}
    for m in _MIB_LINE.finditer(text):
        _, buft, kind, mib = m.groups()
        row = acc.setdefault(kind, {})
        row[buft] = row.get(buft, 0) + round(float(mib) * 1024 * 1024)
    return acc


def _agrees_with_log(
    buffers: Sequence[Mapping[str, object]], logged: Mapping[str, Mapping[str, int]]
) -> bool:
    """The logged compute sizes (rounded to 0.01 MiB) must match the map's, buffer by buffer."""
    by_type = {str(b["buffer_type"]): int(b["compute_bytes"]) for b in buffers}  # type: ignore[call-overload]
    for buft, size in logged.get("compute", {}).items():
        if abs(by_type.get(buft, -1) - size) > 8 * 1024:
            return False
    return True


def _device_of_name(buft: str) -> str:
    if buft.startswith("CPU") or buft.endswith("_Host"):
        return "CPU"
    return buft


def _devices(libs: _Libs) -> tuple[list[str], list[int], list[int]]:
    names, free, total = [], [], []
    for i in range(libs.ggml.ggml_backend_dev_count()):
        dev = libs.ggml.ggml_backend_dev_get(i)
        if libs.base.ggml_backend_dev_type(dev) not in (_DEV_GPU, _DEV_IGPU):
            continue
        f, t = ctypes.c_size_t(0), ctypes.c_size_t(0)
        libs.base.ggml_backend_dev_memory(dev, ctypes.byref(f), ctypes.byref(t))
        names.append((libs.base.ggml_backend_dev_name(dev) or b"?").decode())
        free.append(int(f.value))
        total.append(int(t.value))
    return names, free, total


def _main() -> int:
    raw = json.loads(sys.stdin.read())
    raw["tensor_split"] = tuple(raw.get("tensor_split") or ())
    req = ReportRequest(**raw)
    try:
        doc = _child(req)
    except RunError as exc:
        doc = {"error": str(exc)}
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
