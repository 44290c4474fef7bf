"""The machine fingerprint's GPUs and a run's measured VRAM, read through the one NVML wrapper."""

from __future__ import annotations

import os

from rigdeck.core.machine import GpuInfo, gpu_inventory, process_gpu_memory_bytes
from tests.support.fake_nvml import FakeGpu, FakeNvml, this_process_on_gpu

GiB = 1 << 30


def test_the_fingerprint_lists_every_gpu_and_the_driver_then_lets_nvml_go() -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(name="NVIDIA RTX A6000", total=48 * GiB)])
    gpus, driver = gpu_inventory(fake)
    assert gpus == (
        GpuInfo("NVIDIA GeForce RTX 3080", 10 * GiB),
        GpuInfo("NVIDIA RTX A6000", 48 * GiB),
    )
    assert driver == fake.nvmlSystemGetDriverVersion()
    assert fake.shutdowns == 1


def test_no_driver_means_no_gpus_and_unknown_vram() -> None:
    assert gpu_inventory(FakeNvml(init_error="driver")) == ((), None)
    assert process_gpu_memory_bytes(library=FakeNvml(init_error="driver")) is None


def test_a_process_vram_is_summed_over_gpus_and_zero_when_it_holds_none() -> None:
    fake = FakeNvml(
        [FakeGpu(processes=this_process_on_gpu(GiB)), FakeGpu(processes=this_process_on_gpu(GiB))]
    )
    assert process_gpu_memory_bytes(library=fake) == 2 * GiB
    assert process_gpu_memory_bytes(os.getpid() + 1, library=fake) == 0
    assert fake.shutdowns == 2


def test_nvmls_not_available_sentinel_is_not_counted_as_memory() -> None:
    fake = FakeNvml([FakeGpu(processes=[(os.getpid(), (1 << 64) - 1)])])
    assert process_gpu_memory_bytes(library=fake) == 0


def test_a_gpu_whose_process_list_fails_is_unknown_not_zero() -> None:
    fake = FakeNvml([FakeGpu(unsupported={"processes"})])
    assert process_gpu_memory_bytes(library=fake) is None
