"""How long a Hub request takes to say the Hub is unreachable: each kind against a closed
loopback port, beside huggingface_hub's own call with its retries (the old behaviour).

    .venv/bin/python bench/hub_unreachable.py            # rigdeck's calls only
    .venv/bin/python bench/hub_unreachable.py --baseline # also time huggingface_hub alone (~24 s)
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.sources.hub import Hub
from rigdeck.core.models.sources.hub_values import HubFile, HubFilePart


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(call: Callable[[], object]) -> tuple[float, str]:
    started = time.monotonic()
    try:
        call()
    except (RigdeckError, Exception) as exc:  # the baseline raises huggingface_hub's own errors
        return time.monotonic() - started, str(exc).splitlines()[0][:90]
    return time.monotonic() - started, "no error (unexpected)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # huggingface_hub's retry lines
    endpoint = f"http://127.0.0.1:{closed_port()}"
    hub = Hub(endpoint=endpoint, cache_dir=Path(tempfile.mkdtemp()) / "hub")
    file = HubFile("owner/model", "main", (HubFilePart("model-Q4_K_M.gguf", 1 << 20, None),))
    cases: list[tuple[str, Callable[[], object]]] = [
        ("search", lambda: hub.search("llama")),
        ("list files (remote fit, step 1)", lambda: hub.list_files("owner/model")),
        ("open header (remote fit)", lambda: hub.open("owner/model", "m.gguf").read_at(0, 16)),
        ("download", lambda: hub.download(file)),
    ]
    if args.baseline:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=False)
        cases.append(("huggingface_hub list_models alone", lambda: list(api.list_models(limit=1))))
    print(f"Hub at {endpoint} (a closed port)")
    worst = 0.0
    for label, call in cases:
        seconds, message = timed(call)
        if not label.startswith("huggingface_hub"):
            worst = max(worst, seconds)
        print(f"  {label:36} {seconds:6.2f} s  {message}")
    print(f"slowest rigdeck call {worst:.2f} s (target < 2 s)")
    return 0 if worst < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
