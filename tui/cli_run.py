"""`rigdeck run`, `rigdeck serve` and `rigdeck bench`: a local model through llama.cpp."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    sub.add_parser("run", help="run a local GGUF on a prompt")
    sub.add_parser("serve", help="an OpenAI-compatible endpoint for a local GGUF")
    sub.add_parser("bench", help="prompt and decode tokens/s, llama-bench style")


def cmd_run(args: argparse.Namespace, settings: Any) -> int:
    raise NotImplementedError


def cmd_serve(args: argparse.Namespace, settings: Any) -> int:
    raise NotImplementedError


def cmd_bench(args: argparse.Namespace, settings: Any) -> int:
    raise NotImplementedError


HANDLERS = {"run": cmd_run, "serve": cmd_serve, "bench": cmd_bench}
