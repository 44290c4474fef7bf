"""llama_report: llama.cpp's own buffer figures, read in a child process."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gguf_factory import write_model

from rigdeck.core.errors import RunError
from rigdeck.core.models.format.gguf import read_gguf
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run.alloc_report import (
    ReportRequest,
    _logged_buffers,
    breakdown_abi_supported,
    llama_report,
)

pytest.importorskip("llama_cpp")
MiB = 1 << 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("report") / "tiny.gguf", "llama-3.1-8b-tiny")


@pytest.mark.skipif(not breakdown_abi_supported(), reason="breakdown readable on x86-64 only")
def test_no_alloc_report_has_every_buffer(tiny: Path) -> None:
    model = ModelInfo.from_header(read_gguf(tiny))
    r = llama_report(ReportRequest(str(tiny), n_ctx=2048, flash_attn=True))
    assert r.exact and r.flash_attn is True and r.n_ctx == 2048
    host = r.by_device()["CPU"]
    assert host.weights_bytes >= model.weights_bytes
    k, v = model.kv_width(0)
    assert host.kv_bytes == model.n_layer * 2048 * (k + v) * 2
    assert host.compute_bytes > 0
    # The logits buffer holds one row of n_vocab floats per sequence (log rounds to 0.01 MiB).
    assert abs(r.output_buffer_bytes - model.n_vocab * 4) <= 0.006 * MiB
    assert sum(b.model_bytes for b in r.buffers) == host.weights_bytes


@pytest.mark.skipif(not breakdown_abi_supported(), reason="breakdown readable on x86-64 only")
def test_a_real_load_allocates_what_no_alloc_promised(tiny: Path) -> None:
    planned = llama_report(ReportRequest(str(tiny), n_ctx=1024, flash_attn=True)).by_device()
    real = llama_report(
        ReportRequest(
            str(tiny),
            n_ctx=1024,
            flash_attn=True,
            no_alloc=False,
            prompt_tokens=16,
            decode_tokens=4,
            n_threads=1,
        )
    )
    got = real.by_device()
    for dev, fig in planned.items():
        assert got[dev].weights_bytes == fig.weights_bytes
        assert got[dev].kv_bytes == fig.kv_bytes
        assert got[dev].compute_bytes == fig.compute_bytes
    assert real.decode_tps and real.decode_tps > 0 and real.prompt_tps
    assert real.rss_bytes and real.rss_bytes > got["CPU"].kv_bytes


def test_llama_cpp_refusal_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RunError) as err:
        llama_report(ReportRequest(str(bad)))
    assert "\n" not in str(err.value)


def test_quantized_v_without_flash_attention_is_refused(tiny: Path) -> None:
    with pytest.raises(RunError):
        llama_report(ReportRequest(str(tiny), n_ctx=512, type_v="q8_0", flash_attn=False))


def test_logged_sizes_are_summed_per_kind_and_buffer() -> None:
    log = (
        "load_tensors:   CPU_Mapped model buffer size =   100.50 MiB\n"
        "llama_kv_cache:        CPU KV buffer size =    64.00 MiB\n"
        "llama_kv_cache:        CPU KV buffer size =     8.00 MiB\n"
        "sched_reserve:      CUDA0 compute buffer size =   258.50 MiB\n"
    )
    got = _logged_buffers(log)
    assert got["KV"]["CPU"] == 72 * MiB
    assert got["compute"]["CUDA0"] == int(258.5 * MiB)
    assert got["model"]["CPU_Mapped"] == int(100.5 * MiB)
