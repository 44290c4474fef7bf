"""`rigdeck fit`: will this model fit this machine (or one described by sizes)?"""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    sub.add_parser("fit", help="fit a GGUF (file or hf:REPO[/FILE]) to this machine")


def cmd_fit(args: argparse.Namespace, settings: Any) -> int:
    raise NotImplementedError


HANDLERS = {"fit": cmd_fit}
