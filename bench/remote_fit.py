"""What a remote fit costs on the wire: bytes and range requests against the header's size, for
headers from 0.5 to 12 MiB and a split model, served by the project's fake Hub on 127.0.0.1.

Target: bytes <= 1.1 x the header + 256 KiB, in <= 3 range requests per file (the HEAD that
resolves each file comes on top). "received" is what reached this machine (read, plus what the
closed stream left unread in the socket); "server wrote" also counts what sat in the server's
send buffer when the stream was closed, which never crossed.

    .venv/bin/python bench/remote_fit.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.fake_hub import FakeHub  # noqa: E402
from support.gguf_factory import write_model  # noqa: E402

from rigdeck.core.models.format.gguf import read_gguf  # noqa: E402
from rigdeck.core.models.sources.hub import Hub  # noqa: E402
from rigdeck.core.models.sources.target import load_remote  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20


def padded(folder: Path, name: str, preset: str, header_mib: float, split: int | None) -> Path:
    """A sparse model whose header is about ``header_mib``: a padding array of strings."""
    path = write_model(folder / f"{name}.gguf", preset, split=split)
    have = read_gguf(path).data_offset
    want = int(header_mib * MiB)
    if want > have:
        n = (want - have) // 40
        path = write_model(
            folder / f"{name}.gguf",
            preset,
            split=split,
            metadata={"rigdeck.padding": ["p" * 32] * n},
        )
    return path


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="rigdeck-remote-fit-"))
    cases = [
        ("qwen3-30b-a3b-tiny", 0.5, None),
        ("llama-3.1-8b-tiny", 1.0, None),
        ("llama-3.1-8b-tiny", 2.0, None),
        ("llama-3.1-8b", 0.0, None),  # the real 8B header (~7.5 MiB)
        ("llama-3.1-8b-tiny", 4.0, None),
        ("llama-3.1-8b-tiny", 12.0, None),
        ("llama-3.1-8b", 0.0, 3),  # split in three parts
    ]
    failures = 0
    print(
        f"{'model':34} {'header':>10} {'received':>10} {'ratio':>6} {'server wrote':>12}"
        f" {'range reqs':>10}  target"
    )
    with FakeHub() as fake:
        hub = Hub(endpoint=fake.url, cache_dir=tmp / "hf")
        for i, (preset, mib, split) in enumerate(cases):
            folder = tmp / f"case{i}"
            folder.mkdir()
            first = padded(folder, f"m{i}", preset, mib, split)
            parts = sorted(folder.glob("*.gguf"))
            fake.add_repo(f"owner/case{i}", {p.name: p for p in parts})
            header = sum(read_gguf(p).data_offset for p in parts)
            fake.clear_log()
            resolved = load_remote(hub, f"owner/case{i}", first.name)
            received = resolved.remote.bytes if resolved.remote else 0
            gets = [s for s in fake.served() if s.method == "GET" and s.range]
            sent = sum(s.body_bytes for s in gets)
            per_path: dict[str, int] = {}
            for s in gets:
                per_path[s.path] = per_path.get(s.path, 0) + 1
            per_file = max(per_path.values(), default=0)
            ok = received <= 1.1 * header + 256 * KiB * len(parts) and per_file <= 3
            failures += 0 if ok else 1
            label = f"{preset}{f' ({len(parts)} parts)' if len(parts) > 1 else ''}"
            print(
                f"{label:34} {header / MiB:8.2f} M {received / MiB:8.2f} M {received / header:6.2f}"
                f" {sent / MiB:10.2f} M"
                f" {len(gets):4} ({per_file}/file)  {'ok' if ok else 'MISSED'}"
            )
    print(f"{len(cases)} cases, {failures} outside the target")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
