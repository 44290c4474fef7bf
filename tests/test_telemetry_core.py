"""The telemetry core with real psutil, and the NVML path through a stand-in that raises the
library's own errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from rigdeck.core.errors import ProcessActionError
from rigdeck.core.telemetry.diagnosis import diagnose
from rigdeck.core.telemetry.history import History
from rigdeck.core.telemetry.nvml import NvmlReader
from rigdeck.core.telemetry.processes import send_signal
from rigdeck.core.telemetry.procfs import cpu_clock, resident_sizes
from rigdeck.core.telemetry.sampler import DISK_TTL_S, TelemetrySampler
from rigdeck.core.telemetry.snapshot import GPU_PENDING
from tests.support.fake_nvml import FakeGpu, FakeNvml, this_process_on_gpu
from tests.support.fixed_snapshot import gpu_box, no_gpu_box


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_real_psutil_snapshot_matches_the_machine(tmp_path):
    clock = Clock()
    sampler = TelemetrySampler(
        nvml=NvmlReader(FakeNvml([])), watched=[("home", tmp_path)], clock=clock
    )
    first = sampler.sample()
    assert first.memory.total == psutil.virtual_memory().total
    assert first.cpu.logical_cores == psutil.cpu_count()
    assert len(first.cpu.per_core) == first.cpu.logical_cores
    assert 0.0 <= first.cpu.percent <= 100.0
    # Rates need two readings: the first has none rather than a made-up zero.
    assert first.network.rx_bps is None and first.disk_io.read_bps is None
    clock.now += 1.0
    second = sampler.sample()
    assert second.network.rx_bps is not None and second.network.rx_bps >= 0
    assert second.disks and second.disks[0].labels == ("home",)
    assert second.disks[0].free == psutil.disk_usage(str(tmp_path)).free or second.disks[0].free > 0


def test_host_processes_include_this_process_when_asked():
    sampler = TelemetrySampler(nvml=NvmlReader(FakeNvml([])), watched=[])
    snap = sampler.sample(host_processes=10_000)
    assert os.getpid() in {p.pid for p in snap.host_processes}
    assert sampler.sample().host_processes == ()


def test_gpu_readings_and_units():
    gpu = FakeGpu(processes=this_process_on_gpu(512 * 1024**2))
    reader = NvmlReader(FakeNvml([gpu]))
    assert reader.status == "ok" and reader.driver_version == "550.54.14"
    (stats,) = reader.read()
    assert stats.name == gpu.name
    assert stats.memory_used == gpu.used and stats.memory_total == gpu.total
    assert stats.power_w == pytest.approx(215.0) and stats.power_limit_w == pytest.approx(320.0)
    assert stats.pcie_rx_bps == 1200 * 1024
    # 9501 MHz x 2 (DDR) x 320 bits / 8: the RTX 3080's 760 GB/s.
    assert stats.bandwidth_bytes_per_s == pytest.approx(760e9, rel=0.01)
    (proc,) = stats.processes
    assert proc.pid == os.getpid() and proc.gpu_memory == 512 * 1024**2
    assert "python" in proc.command.lower() or "pytest" in proc.command.lower()


def test_unsupported_fields_become_none_not_errors():
    gpu = FakeGpu(unsupported={"fan", "power", "pcie", "temperature"})
    (stats,) = NvmlReader(FakeNvml([gpu])).read()
    assert stats.fan_percent is None and stats.power_w is None
    assert stats.pcie_rx_bps is None and stats.temperature_c is None
    assert stats.util_percent == gpu.util  # the rest still reads


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("driver", "driver not loaded"),
        ("library", "no nvidia"),
        ("permission", "video group"),
    ],
)
def test_driver_problems_say_so_plainly(error, words):
    reader = NvmlReader(FakeNvml(init_error=error))
    assert words in reader.status.lower()
    assert reader.read() == ()
    sampler = TelemetrySampler(nvml=reader, watched=[])
    snap = sampler.sample()
    assert snap.gpus == () and snap.gpu_status == reader.status


def test_missing_package_is_a_status_not_a_crash(monkeypatch):
    monkeypatch.setattr("rigdeck.core.telemetry.nvml.load_pynvml", lambda: None)
    assert "nvidia-ml-py" in NvmlReader().status


def test_gpu_lost_mid_run_is_marked_and_other_gpus_keep_reading():
    good, bad = FakeGpu(name="A"), FakeGpu(name="B")
    reader = NvmlReader(FakeNvml([good, bad]))
    assert all(not g.lost for g in reader.read())
    bad.lost = True
    first, second = reader.read()
    assert not first.lost and first.util_percent == good.util
    assert second.lost and second.name == "B" and second.util_percent is None
    good.lost = True
    sampler = TelemetrySampler(nvml=reader, watched=[])
    assert "lost" in sampler.sample().gpu_status


def test_throttle_reasons_are_named():
    import pynvml

    gpu = FakeGpu(
        throttle=pynvml.nvmlClocksThrottleReasonSwPowerCap
        | pynvml.nvmlClocksThrottleReasonHwThermalSlowdown
        | pynvml.nvmlClocksThrottleReasonGpuIdle
    )
    (stats,) = NvmlReader(FakeNvml([gpu])).read()
    assert stats.throttle_reasons == ("power cap", "thermal (hw)")


def test_static_fields_are_read_once():
    fake = FakeNvml([FakeGpu()])
    reader = NvmlReader(fake)
    reader.read()
    first = fake.calls
    reader.read()
    assert fake.calls - first < first  # name/uuid/limits/bus width are cached


def test_close_shuts_nvml_down_once():
    fake = FakeNvml([FakeGpu()])
    reader = NvmlReader(fake)
    reader.close()
    reader.close()
    assert fake.shutdowns == 1


def test_history_keeps_the_last_minutes():
    history = History(capacity=3)
    for _ in range(5):
        history.record(gpu_box())
    assert history.series("cpu") == [23.0, 23.0, 23.0]
    assert history.series("gpu0.mem") == pytest.approx([96.0] * 3)
    assert history.series("gpu0.power") == [301.0] * 3


def test_diagnosis_names_the_vram_hog():
    d = diagnose(gpu_box())
    assert d.limit == "vram"
    assert d.headline.startswith("VRAM 8.9/9.3 GiB used by pid 4121 python")
    assert "RAM fine" in d.headline
    assert "GPU 0 87% busy" not in d.headline  # under the busy threshold


def test_diagnosis_says_when_the_gpu_is_saturated():
    from dataclasses import replace

    snap = gpu_box(vram_used=2_000_000_000)
    busy = replace(snap, gpus=(replace(snap.gpus[0], util_percent=100.0),))
    d = diagnose(busy)
    assert d.limit == "none"
    assert "GPU 0 100% busy (throttled: power cap)" in d.headline


def test_diagnosis_without_gpu_and_with_free_vram():
    assert diagnose(no_gpu_box()).limit == "none"
    relaxed = diagnose(gpu_box(vram_used=2_000_000_000))
    assert relaxed.limit == "none" and "VRAM fine" in relaxed.headline


def test_signals_refused_with_reasons():
    with pytest.raises(ProcessActionError, match="read-only"):
        send_signal(12345, "TERM", read_only=True)
    with pytest.raises(ProcessActionError, match="itself"):
        send_signal(os.getpid(), "TERM")
    with pytest.raises(ProcessActionError, match="pid 1"):
        send_signal(1, "KILL")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(ProcessActionError, match="gone"):
        send_signal(gone.pid, "TERM")


def test_sigterm_stops_a_real_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        message = send_signal(child.pid, "TERM")
        assert f"pid {child.pid}" in message
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        child.kill()


def test_first_reading_is_host_only_and_leaves_nvml_unstarted(monkeypatch):
    started = []

    class Recording(NvmlReader):
        def __init__(self) -> None:
            started.append(True)
            super().__init__(FakeNvml([FakeGpu()]))

    monkeypatch.setattr("rigdeck.core.telemetry.sampler.NvmlReader", Recording)
    sampler = TelemetrySampler(watched=[])
    first = sampler.first_reading()
    assert not started  # NVML is for the worker, not the first frame
    assert first.gpus == () and first.gpu_status == GPU_PENDING
    assert first.host_processes == ()
    assert len(first.cpu.per_core) == psutil.cpu_count()
    assert all(0.0 <= p <= 100.0 for p in first.cpu.per_core)
    assert first.memory.total == psutil.virtual_memory().total
    full = sampler.sample()
    assert started == [True] and len(full.gpus) == 1


def test_cpu_percent_is_measured_between_readings_whatever_the_thread():
    from rigdeck.core.telemetry.sampler import _busy_percent

    before = psutil.cpu_times()._replace(**dict.fromkeys(psutil.cpu_times()._fields, 0.0))
    # 30 ticks busy, 60 idle, 10 waiting on I/O: 30% busy, as psutil.cpu_percent counts it.
    waiting = {"iowait": 10.0} if "iowait" in before._fields else {"idle": 70.0}
    after = before._replace(**{"user": 30.0, "idle": 60.0, **waiting})
    assert _busy_percent(before, after) == pytest.approx(30.0)
    assert _busy_percent(after, after) == 0.0  # no time passed: no reading, not a division


def test_host_scan_reads_command_lines_of_shown_processes_only(monkeypatch):
    reads = []
    real = psutil.Process.cmdline

    def counting(self):
        reads.append(self.pid)
        return real(self)

    monkeypatch.setattr(psutil.Process, "cmdline", counting)
    sampler = TelemetrySampler(nvml=NvmlReader(FakeNvml([])), watched=[])
    rows = sampler.sample(host_processes=3).host_processes
    assert len(rows) == 3 and len(reads) <= 3
    assert [p.rss for p in rows] == sorted((p.rss for p in rows), reverse=True)
    biggest = max(p.memory_info().rss for p in psutil.process_iter() if p.is_running())
    assert rows[0].rss >= biggest * 0.5  # the largest are the ones kept
    reads.clear()
    again = sampler.sample(host_processes=3).host_processes
    kept = {p.pid for p in rows} & {p.pid for p in again}
    assert len(reads) <= 3 - len(kept)  # a process already described is not read again


def test_no_host_scan_while_gpu_processes_are_listed():
    gpu = FakeGpu(processes=this_process_on_gpu(256 * 1024**2))
    sampler = TelemetrySampler(nvml=NvmlReader(FakeNvml([gpu])), watched=[])
    snap = sampler.sample(host_processes=30)
    assert snap.gpus[0].processes and snap.host_processes == ()


def test_disk_space_is_read_again_only_after_its_ttl(tmp_path):
    clock = Clock()
    sampler = TelemetrySampler(
        nvml=NvmlReader(FakeNvml([])), watched=[("home", tmp_path)], clock=clock
    )
    first = sampler.sample().disks
    clock.now += 1.0
    assert sampler.sample().disks is first
    clock.now += DISK_TTL_S
    again = sampler.sample().disks
    assert again is not first and again[0].labels == ("home",)


def test_resident_sizes_and_cpu_clock_match_psutil():
    sizes = {pid: rss for rss, pid in resident_sizes()}
    mine = psutil.Process().memory_info().rss
    assert sizes[os.getpid()] == pytest.approx(mine, rel=0.2)
    start, cpu_s = cpu_clock(os.getpid())
    times = psutil.Process().cpu_times()
    assert cpu_s == pytest.approx(times.user + times.system, abs=0.1)
    assert cpu_clock(os.getpid())[0] == start  # the start time names this process for good
    assert cpu_clock(2**22 + 12345) is None  # no such pid: gone, not an error


def test_host_process_cpu_percent_is_measured_between_scans():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        sampler = TelemetrySampler(nvml=NvmlReader(FakeNvml([])), watched=[])
        first = {p.pid: p for p in sampler.sample(host_processes=10_000).host_processes}
        assert first[busy.pid].cpu_percent is None  # first sight: no interval yet
        time.sleep(0.5)
        second = {p.pid: p for p in sampler.sample(host_processes=10_000).host_processes}
        assert second[busy.pid].cpu_percent > 30  # a spinning process, in % of one core
        assert "while True" in second[busy.pid].command
    finally:
        busy.kill()
        busy.wait()
