"""Theme files: TOML with a name and colours, shipped in themes/ or dropped in the config dir.

Parsed here (UI-free) into ThemeSpec; the TUI turns a spec into a Textual theme.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rigdeck.core.config import toml_location, toml_reason
from rigdeck.core.errors import ConfigError

COLOUR_KEYS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
    "warning",
    "error",
    "success",
)


@dataclass(frozen=True)
class ThemeSpec:
    name: str
    dark: bool
    colours: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    ansi: bool = False
    source: str = ""


def parse_theme(text: str, source: str) -> ThemeSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}:{toml_location(exc)}: {toml_reason(exc)}") from None
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{source}: a theme needs name = "..."')
    colours = {k: data[k] for k in COLOUR_KEYS if k in data}
    if "primary" not in colours:
        raise ConfigError(f'{source}: theme {name!r} needs at least primary = "#rrggbb"')
    bad = [k for k, v in colours.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{source}: colours must be strings: {', '.join(bad)}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ConfigError(f"{source}: [variables] must be a table")
    return ThemeSpec(
        name=name,
        dark=bool(data.get("dark", True)),
        colours=colours,
        variables={str(k): str(v) for k, v in variables.items()},
        ansi=bool(data.get("ansi", False)),
        source=source,
    )


def builtin_themes() -> list[ThemeSpec]:
    specs = []
    for entry in sorted(resources.files("rigdeck.themes").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            specs.append(parse_theme(entry.read_text(encoding="utf-8"), f"themes/{entry.name}"))
    return specs


def user_themes(directory: Path) -> tuple[list[ThemeSpec], list[str]]:
    """The user's own themes, and one warning per file that could not be used."""
    specs: list[ThemeSpec] = []
    warnings: list[str] = []
    if not directory.is_dir():
        return specs, warnings
    for path in sorted(directory.glob("*.toml")):
        try:
            specs.append(parse_theme(path.read_text(encoding="utf-8"), str(path)))
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            warnings.append(str(exc))
    return specs, warnings


def default_theme_name(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Truecolour or 256-colour terminals get the dark theme; bare ones the 16-colour theme."""
    env = os.environ if env is None else env
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "rigdeck-dark"
    if "256" in env.get("TERM", ""):
        return "rigdeck-dark"
    return "rigdeck-16"
