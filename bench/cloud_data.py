"""Cloud data path over a real sshd on 127.0.0.1: sync throughput, no-op re-sync, log latency and
log integrity across forced disconnects, side by side with plain rsync and scp in one run.

    python bench/cloud_data.py [--gib 1.0] [--small-files 10000] [--lines 100000]

A report, not a test: it prints figures, the targets and PASS/FAIL, and always exits 0.

How it measures, and why:
- One OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py) plays the instance; every tool uses the
  same key, the same pinned known_hosts file and StrictHostKeyChecking=yes, so the figures
  compare transfer code, not ssh settings.
- Throughput: a 1 GiB tree (8 large files and 64 of 1 MiB) sent to an empty folder by rigdeck's
  push (rsync with --info=progress2 parsed, as the UI runs it), by plain rsync with the same
  flags minus the progress, and by scp -r. Rounds are interleaved (rigdeck, rsync, scp, ...) so
  background load on a shared machine hits all alike; best of the rounds. The destination is
  deleted between runs, so every run sends every byte.
- No-op re-sync: 10,000 small files already on the instance, pushed again: the wall time of the
  whole call (rsync check, mkdir, ssh connect, file list), best of 3.
- Log latency: a job started through the job runner's SSH target appends timestamped lines at
  random gaps; the reader polls its byte offset every 100 ms as the runner does and timestamps
  each completed line. Same clock on both ends (loopback).
- Integrity: a job writes 100,000 numbered lines; the reader's SSH connection is cut 10 times
  (the per-connection sshd processes are killed, the job keeps running); every number must
  arrive exactly once, in order.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rigdeck.core.cloud.host_keys import HostKeyStore
from rigdeck.core.cloud.jobs.logs import LogStream
from rigdeck.core.cloud.jobs.spec import parse_spec
from rigdeck.core.cloud.ssh import SshEndpoint, SshLinkLost, SshTarget
from rigdeck.core.cloud.ssh_jobs import SshJobTarget
from rigdeck.core.cloud.ssh_keys import ensure_key_pair
from rigdeck.core.cloud.sync import push
from tests.support.sshd import SshdServer, sshd_binary

MiB = 1024 * 1024
ROUNDS = 3
POLL_S = 0.1
THROUGHPUT_RATIO_TARGET = 0.9
NOOP_TARGET_S = 1.5
LATENCY_P95_TARGET_S = 0.25
DISCONNECTS = 10

LATENCY_WRITER = """
import random, sys, time
random.seed(1)
for i in range(int(sys.argv[1])):
    time.sleep(random.uniform(0.005, 0.06))
    print(f"{time.time():.6f} {i}", flush=True)
"""

BULK_WRITER = """
import sys, time
n = int(sys.argv[1])
for i in range(n):
    sys.stdout.write(f"seq {i}\\n")
    if i % 500 == 499:
        sys.stdout.flush()
        time.sleep(0.02)
"""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def make_tree(root: Path, total: int) -> int:
    """8 large files and 64 files of 1 MiB, about ``total`` bytes of random data."""
    small = 64
    large = (total - small * MiB) // 8
    block = os.urandom(16 * MiB)
    written = 0
    for i in range(8):
        path = root / "weights" / f"shard-{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            left = large
            f.write(os.urandom(4096))  # every file differs from the others
            left -= 4096
            while left > 0:
                piece = block[: min(left, len(block))]
                f.write(piece)
                left -= len(piece)
        written += large
    for i in range(small):
        path = root / "data" / f"part-{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(MiB))
        written += MiB
    return written


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def throughput(target: SshTarget, src: Path, scratch: Path, size: int) -> dict[str, float]:
    e = target.endpoint
    opts = target.ssh_options(batch=True)
    ssh_e = shlex.join(["ssh", *opts])
    scp_opts = ["-P" if o == "-p" else o for o in opts]
    login = f"{e.user}@{e.host}"

    def ours(dest: Path) -> None:
        push(target, src, str(dest), excludes=(), gitignore=False, on_progress=lambda p: None)

    def rsync(dest: Path) -> None:
        dest.mkdir(parents=True)
        argv = ["rsync", "-rlpt", "--partial", "--timeout=60", "--stats", "-e", ssh_e]
        subprocess.run([*argv, f"{src}/", f"{login}:{dest}/"], check=True, capture_output=True)

    def scp(dest: Path) -> None:
        argv = ["scp", "-q", "-r", *scp_opts, str(src), f"{login}:{dest}"]
        subprocess.run(argv, check=True, capture_output=True)

    best: dict[str, float] = {}
    for round_no in range(ROUNDS):
        for name, fn in (("rigdeck", ours), ("rsync", rsync), ("scp", scp)):
            dest = scratch / f"{name}-{round_no}"
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()
            seconds = timed(lambda fn=fn, dest=dest: fn(dest))
            rate = size / seconds
            best[name] = max(best.get(name, 0.0), rate)
            shutil.rmtree(dest, ignore_errors=True)
    return best


def noop_resync(target: SshTarget, root: Path, count: int) -> tuple[float, float]:
    src = root / "small"
    for i in range(count):
        path = src / f"d{i // 100:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 8)
    dest = root / "remote-small"
    first = push(target, src, str(dest))
    assert first.files == count, first
    ours = min(timed(lambda: push(target, src, str(dest))) for _ in range(3))
    ssh_e = shlex.join(["ssh", *target.ssh_options(batch=True)])
    e = target.endpoint
    plain = min(
        timed(
            lambda: subprocess.run(
                ["rsync", "-rlpt", "-e", ssh_e, f"{src}/", f"{e.user}@{e.host}:{dest}/"],
                check=True,
                capture_output=True,
            )
        )
        for _ in range(3)
    )
    again = push(target, src, str(dest))
    assert again.files == 0, again
    return ours, plain


def start_job(jobs: SshJobTarget, root: Path, name: str, command: str) -> SshJobTarget:
    spec_path = root / f"{name}.toml"
    spec_path.write_text(
        f'name = "{name}"\n[run]\nremote_dir = "{jobs.remote_dir}"\ncommand = {command!r}\n'
    )
    launch = jobs.plan(parse_spec(spec_path.read_text(), spec_path), name)
    result = jobs.start(launch)
    assert result.outcome == "started", result
    return jobs


def log_latency(jobs: SshJobTarget, root: Path, lines: int) -> list[float]:
    remote = Path(jobs.remote_dir)
    (remote / "latency.py").write_text(LATENCY_WRITER)
    start_job(jobs, root, "latency", f"python3 latency.py {lines}")
    paths = jobs.paths("latency")
    stream = LogStream()
    delays: list[float] = []
    deadline = time.monotonic() + 120
    while len(delays) < lines and time.monotonic() < deadline:
        data = jobs.read_log(paths, stream.offset, 1 << 20)
        now = time.time()
        for line in stream.feed(data):
            stamp, _, seq = line.partition(" ")
            if seq.isdigit():
                delays.append(now - float(stamp))
        time.sleep(POLL_S)
    return delays


def integrity(jobs: SshJobTarget, server: SshdServer, root: Path, lines: int) -> dict[str, int]:
    remote = Path(jobs.remote_dir)
    (remote / "bulk.py").write_text(BULK_WRITER)
    start_job(jobs, root, "bulk", f"python3 bulk.py {lines}")
    paths = jobs.paths("bulk")
    stream = LogStream()
    seen: list[int] = []
    cuts = drops = 0
    every = lines // (DISCONNECTS + 1)
    # Small reads (as a slow link would give) so every planned cut lands before the end.
    chunk = max(1024, min(16 * 1024, every * 4))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            data = jobs.read_log(paths, stream.offset, chunk)
            status = jobs.status(paths) if not data else None
        except SshLinkLost:
            drops += 1
            continue
        for line in stream.feed(data):
            if line.startswith("seq "):
                seen.append(int(line[4:]))
        due = cuts < DISCONNECTS and len(seen) >= (cuts + 1) * every
        if due and server.cut_connections():
            cuts += 1
        if status is not None:
            if status.ended and stream.offset >= status.log_bytes:
                break
            time.sleep(POLL_S)
    unique = set(seen)
    return {
        "received": len(seen),
        "lost": len(set(range(lines)) - unique),
        "doubled": len(seen) - len(unique),
        "out_of_order": sum(1 for a, b in itertools.pairwise(seen) if b <= a),
        "cuts": cuts,
        "errors_seen": drops,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the throughput tree")
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--latency-lines", type=int, default=150)
    args = parser.parse_args()
    if sshd_binary() is None or shutil.which("rsync") is None or shutil.which("scp") is None:
        print("needs OpenSSH (sshd, ssh, scp) and rsync: apt-get install -y openssh-server rsync")
        return
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="rigdeck-bench-cloud-"))
    server: SshdServer | None = None
    try:
        keys = ensure_key_pair(root / "keys")
        server = SshdServer(root)
        server.authorize(keys.public_key)
        server.start()
        endpoint = SshEndpoint(1, server.host, server.port, server.user)
        target = SshTarget(endpoint, keys, HostKeyStore(root / "known_hosts"))
        target.connect()
        print(f"instance: OpenSSH sshd on {server.host}:{server.port}, pinned host key")

        src = root / "tree"
        size = make_tree(src, int(args.gib * 1024 * MiB))
        rates = throughput(target, src, root / "remote-tree", size)
        shutil.rmtree(src)
        ratio = rates["rigdeck"] / rates["rsync"]
        print(f"\nsync of a {size / 1024**3:.2f} GiB tree (best of {ROUNDS}, MiB/s):")
        for name, rate in rates.items():
            print(f"  {name:<8} {rate / MiB:8.1f}")
        print(
            f"  rigdeck / rsync = {ratio:.2f} (target >= {THROUGHPUT_RATIO_TARGET}) "
            f"{verdict(ratio >= THROUGHPUT_RATIO_TARGET)}"
        )

        ours, plain = noop_resync(target, root, args.small_files)
        print(f"\nno-op re-sync of {args.small_files} small files (best of 3):")
        print(f"  rigdeck  {ours:.3f} s   plain rsync {plain:.3f} s")
        print(f"  target < {NOOP_TARGET_S} s {verdict(ours < NOOP_TARGET_S)}")
        shutil.rmtree(root / "small")
        shutil.rmtree(root / "remote-small")

        remote = root / "instance" / "workspace" / "bench"
        remote.mkdir(parents=True)
        jobs = SshJobTarget(target, str(remote))
        delays = log_latency(jobs, root, args.latency_lines)
        if len(delays) >= 20:
            q = statistics.quantiles(delays, n=100)
            p50, p95 = statistics.median(delays), q[94]
            print(
                f"\nlog latency, line appended -> line read ({len(delays)} lines, poll {POLL_S}s):"
            )
            print(f"  p50 {p50 * 1000:.0f} ms   p95 {p95 * 1000:.0f} ms")
            print(
                f"  target p95 < {LATENCY_P95_TARGET_S * 1000:.0f} ms "
                f"{verdict(p95 < LATENCY_P95_TARGET_S)}"
            )
        else:
            print(f"\nlog latency: only {len(delays)} lines arrived FAIL")

        counts = integrity(jobs, server, root, args.lines)
        ok = (
            counts["lost"] == 0
            and counts["doubled"] == 0
            and counts["out_of_order"] == 0
            and counts["received"] == args.lines
            and counts["cuts"] == DISCONNECTS
        )
        print(f"\nlog integrity over {counts['cuts']} forced disconnects:")
        print(
            f"  {counts['received']} of {args.lines} lines, {counts['lost']} lost, "
            f"{counts['doubled']} doubled, {counts['out_of_order']} out of order "
            f"({counts['errors_seen']} dropped-link errors seen and recovered)"
        )
        print(f"  target 0 lost / 0 doubled {verdict(ok)}")
        target.close()
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(root, ignore_errors=True)
        print(f"\n(bench took {time.monotonic() - began:.0f} s; temp files removed)")


if __name__ == "__main__":
    random.seed(0)
    main()
