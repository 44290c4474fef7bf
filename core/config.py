"""Typed settings: defaults < config file < environment < command-line flags.

The file is ``rigdeck.toml`` in the user config dir (or ``--config PATH`` / ``RIGDECK_CONFIG``).
Each key is documented where it is declared (``doc`` metadata); ``sample_configs/rigdeck.toml``
shows them all and a test keeps the two in step. A broken file never stops the app: the error
names file, line and column, and the app starts on defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from platformdirs import user_config_path, user_data_path, user_state_path

from rigdeck.core.errors import ConfigError

APP_NAME = "rigdeck"
ENV_PREFIX = "RIGDECK_"


def _doc(text: str, **kwargs: Any) -> Any:
    return field(metadata={"doc": text}, **kwargs)


PROJECT_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
PROJECT_TAG_RULE = (
    "use letters, digits, '.', '_' or '-' (up to 32, starting with a letter or digit)"
)


def is_project_tag(tag: str) -> bool:
    """A project tag as the ledger, the config and the job specs accept it."""
    return bool(PROJECT_TAG.match(tag))


@dataclass(frozen=True)
class UiSettings:
    theme: str = _doc(
        "Theme name: rigdeck-dark, rigdeck-light, rigdeck-16 (16 colours, for bare SSH "
        "terminals) or one of your own files in <config dir>/themes. Empty: the theme you last "
        "picked in the palette, else chosen from the terminal's colour support.",
        default="",
    )
    keymap: Mapping[str, str] = _doc(
        'Remap keys by binding id, e.g. { quit = "ctrl+q", \'telemetry.pause\' = "space" }. '
        "Press ? in the app to see every id.",
        default_factory=dict,
    )


@dataclass(frozen=True)
class TelemetrySettings:
    refresh_s: float = _doc("Seconds between hardware readings (0.2 to 60).", default=1.0)
    history_minutes: int = _doc("Minutes of history the graphs keep (1 to 120).", default=5)
    read_only: bool = _doc(
        "Refuse to signal processes (for shared sessions and screens you show others).",
        default=False,
    )
    watch_dirs: tuple[str, ...] = _doc(
        "Extra folders whose disk space matters (home, the HF cache and model dirs are "
        "always watched).",
        default=(),
    )


@dataclass(frozen=True)
class ModelSettings:
    dirs: tuple[str, ...] = _doc(
        "Folders searched for GGUF files, besides the HF cache, ollama and LM Studio.", default=()
    )
    context: int = _doc("Context length (tokens) used to fit and run models.", default=4096)
    kv_type: str = _doc(
        "KV cache type: f16, q8_0 or q4_0 (q4_0/q8_0 V needs flash attention).", default="f16"
    )
    flash_attn: str = _doc("Flash attention: auto, on or off.", default="auto")
    threads: int = _doc(
        "CPU threads for generation (0: one per physical core, as llama.cpp).", default=0
    )
    threads_batch: int = _doc(
        "CPU threads for prompt batches (0: threads when set, else every logical core).",
        default=0,
    )


@dataclass(frozen=True)
class ProjectBudget:
    """One ``[cloud.projects.TAG]`` table: budgets for the rentals tagged TAG."""

    daily_budget_usd: float = _doc("This project's budget per day in $ (0: none).", default=0.0)
    monthly_budget_usd: float = _doc(
        "This project's budget per calendar month in $ (0: none).", default=0.0
    )
    on_budget: str = _doc(
        "What the guard does when this project reaches a budget: warn (a line, nothing "
        "touched) or stop (stop this project's running instances; their storage still bills).",
        default="warn",
    )


PROJECT_ON_BUDGET = ("warn", "stop")


@dataclass(frozen=True)
class CloudSettings:
    provider: str = _doc("GPU cloud provider (today: vast).", default="vast")
    api_url: str = _doc(
        "Provider API endpoint. Empty: VAST_URL from the environment, else the provider's own.",
        default="",
    )
    api_key_file: str = _doc(
        "File holding the API key (0600). Empty: VAST_API_KEY, else ~/.config/vastai/vast_api_key.",
        default="",
    )
    image: str = _doc(
        "Docker image for a rental when the job spec names none.",
        default="pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    )
    disk_gb: float = _doc("Disk (GB) for a rental when the job spec names none.", default=20.0)
    max_usd: float = _doc("Per-instance cap in $ (0: none); the guard acts at it.", default=0.0)
    max_hours: float = _doc("Per-instance cap in hours (0: none).", default=0.0)
    idle_minutes: float = _doc(
        "Act on an instance whose GPUs stayed idle this many minutes (0: never).", default=0.0
    )
    on_cap: str = _doc("What the guard does at a cap: warn, stop or destroy.", default="stop")
    monthly_budget_usd: float = _doc("Cloud budget per calendar month in $ (0: none).", default=0.0)
    daily_budget_usd: float = _doc("Cloud budget per day in $ (0: none).", default=0.0)
    poll_s: float = _doc("Seconds between instance polls (pane and guard, 2 to 600).", default=30.0)
    show_unverified: bool = _doc(
        "Show unverified and unrentable machines in offer searches.", default=False
    )
    ssh_user: str = _doc(
        "User rigdeck logs in as on a rented instance over SSH (Vast images: root).",
        default="root",
    )
    projects: Mapping[str, ProjectBudget] = _doc(
        "Budgets per project tag (`rigdeck cloud rent --project TAG`, a job spec's project): "
        "one [cloud.projects.TAG] table each, with daily_budget_usd, monthly_budget_usd and "
        "on_budget. 80% warns, 100% alerts; they count inside the total budgets above.",
        default_factory=dict,
    )


@dataclass(frozen=True)
class EconomicsSettings:
    price_per_kwh: float = _doc("Electricity price per kWh, in your currency.", default=0.30)
    currency: str = _doc("Currency code shown beside local costs.", default="USD")
    system_watts: float = _doc(
        "Watts of the rest of the system (CPU, board, disks) where the OS does not expose CPU "
        "package power.",
        default=80.0,
    )
    psu_efficiency: float = _doc("Power supply efficiency (0.5 to 1).", default=0.9)
    hardware_price: float = _doc(
        "What this machine cost, to amortise into its hourly cost (0: left out).", default=0.0
    )
    amortise_months: int = _doc("Months over which hardware_price is spread.", default=36)
    monthly_cloud_usd: float = _doc(
        "Your cloud spend per month, when the ledger has less than 30 days (0: use the ledger).",
        default=0.0,
    )
    upgrades: Mapping[str, str] = _doc(
        "Upgrades you are weighing, name = price in your currency, e.g. "
        '{ "ram +96G" = "250", "gpu RTX 4090" = "1800" }. A name is ram +SIZE (added), '
        "ram SIZE (new total), gpu NAME [SIZE] (replaces your GPUs) or gpu +NAME (added); "
        'a price may add a resale value: "1800 resale 900".',
        default_factory=dict,
    )


@dataclass(frozen=True)
class Settings:
    ui: UiSettings = field(default_factory=UiSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    cloud: CloudSettings = field(default_factory=CloudSettings)
    economics: EconomicsSettings = field(default_factory=EconomicsSettings)
    config_path: Path | None = None
    warnings: tuple[str, ...] = ()


SECTIONS: dict[str, type] = {
    "ui": UiSettings,
    "telemetry": TelemetrySettings,
    "models": ModelSettings,
    "cloud": CloudSettings,
    "economics": EconomicsSettings,
}

_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("telemetry", "refresh_s"): (0.2, 60.0),
    ("telemetry", "history_minutes"): (1, 120),
    ("models", "context"): (256, 1 << 22),
    ("cloud", "poll_s"): (2.0, 600.0),
    ("cloud", "disk_gb"): (1.0, 100000.0),
    ("economics", "psu_efficiency"): (0.5, 1.0),
    ("economics", "amortise_months"): (1, 240),
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("models", "kv_type"): ("f16", "q8_0", "q4_0"),
    ("models", "flash_attn"): ("auto", "on", "off"),
    ("cloud", "provider"): ("vast",),
    ("cloud", "on_cap"): ("warn", "stop", "destroy"),
}


def config_dir() -> Path:
    return user_config_path(APP_NAME)


def default_config_path() -> Path:
    return config_dir() / "rigdeck.toml"


def data_dir() -> Path:
    return user_data_path(APP_NAME)


def state_dir() -> Path:
    return user_state_path(APP_NAME)


def documented_keys() -> dict[str, dict[str, str]]:
    """Every key with its doc, by section: what the sample config must show."""
    return {
        name: {f.name: f.metadata.get("doc", "") for f in fields(cls)}
        for name, cls in SECTIONS.items()
    }


def documented_project_keys() -> dict[str, str]:
    """The keys of a ``[cloud.projects.TAG]`` table with their docs."""
    return {f.name: f.metadata.get("doc", "") for f in fields(ProjectBudget)}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings. ``overrides`` are flags, keyed ``"section.key"``.

    A broken file becomes one line in ``Settings.warnings`` and the file's values are ignored;
    a broken environment value or flag raises ConfigError, since the user typed it just now.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    config_path = Path(path or env.get(ENV_PREFIX + "CONFIG") or default_config_path())
    config_path = config_path.expanduser()
    warnings: list[str] = []
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}

    if config_path.exists():
        try:
            values = _read_file(config_path)
        except ConfigError as exc:
            warnings.append(f"{exc} — starting on defaults")
            values = {name: {} for name in SECTIONS}
    elif explicit:
        warnings.append(f"{config_path}: no such file — starting on defaults")

    for section, cls in SECTIONS.items():
        for f in fields(cls):
            raw = env.get(f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}")
            # Tables (keymap, upgrades) come from the file only: one env string cannot hold one.
            if raw is not None and not isinstance(_default_of(section, f.name), Mapping):
                values[section][f.name] = _coerce_env(section, f.name, f.default, raw)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        values[section][key] = _check(section, key, value, where="command line")

    built = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    return Settings(
        config_path=config_path,
        warnings=tuple(warnings),
        **built,
    )


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}:{toml_location(exc)}: {toml_reason(exc)}") from None
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, table in data.items():
        line = _find_line(text, rf"^[ \t]*\[[ \t]*{re.escape(section)}\s*\]")
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}:{line}:1: unknown section [{section}]; expected one of "
                + ", ".join(f"[{s}]" for s in SECTIONS)
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}:{line}:1: {section} must be a table ([{section}])")
        known = {f.name for f in fields(SECTIONS[section])}
        for key, value in table.items():
            key_line = _find_line(text, rf"^[ \t]*['\"]?{re.escape(key)}['\"]?\s*=")
            if key not in known:
                raise ConfigError(
                    f"{path}:{key_line}:1: unknown key {key!r} in [{section}]; expected one of "
                    + ", ".join(sorted(known))
                )
            if (section, key) == ("cloud", "projects"):
                values[section][key] = _check_projects(
                    value, lambda tag, sub: f"{path}:{_project_line(text, tag, sub)}:1"
                )
                continue
            values[section][key] = _check(section, key, value, where=f"{path}:{key_line}:1")
    return values


def _project_line(text: str, tag: str | None, key: str | None) -> int:
    """The line of ``[cloud.projects.TAG]`` (or of a key in it): tomllib keeps no positions."""
    quoted = "" if tag is None else rf"\.\s*['\"]?{re.escape(tag)}['\"]?"
    header = re.search(rf"^[ \t]*\[[ \t]*cloud\s*\.\s*projects{quoted}\s*\]", text, re.MULTILINE)
    if header is None:
        return _find_line(text, r"^[ \t]*projects\s*=")
    line = text.count("\n", 0, header.start()) + 1
    if key is None:
        return line
    rest = text[header.end() :]
    stop = re.search(r"^[ \t]*\[", rest, re.MULTILINE)
    body = rest[: stop.start()] if stop else rest
    found = re.search(rf"^[ \t]*['\"]?{re.escape(key)}['\"]?\s*=", body, re.MULTILINE)
    return line if found is None else line + body.count("\n", 0, found.start())


def _check_projects(
    value: Any, where: Callable[[str | None, str | None], str]
) -> dict[str, ProjectBudget]:
    """``[cloud.projects.TAG]`` tables as budgets; ``where(tag, key)`` names the spot of a fault."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where(None, None)}: cloud.projects: expected [cloud.projects.TAG] tables, "
            f"got {value!r}"
        )
    known = {f.name for f in fields(ProjectBudget)}
    out: dict[str, ProjectBudget] = {}
    for tag, table in value.items():
        name = f"cloud.projects.{tag}"
        if not is_project_tag(tag):
            raise ConfigError(
                f"{where(tag, None)}: {name}: {tag!r} is not a project tag; {PROJECT_TAG_RULE}"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{where(tag, None)}: {name}: expected a table ([{name}]), got {table!r}"
            )
        checked: dict[str, Any] = {}
        for key, item in table.items():
            at = where(tag, key)
            if key not in known:
                raise ConfigError(
                    f"{at}: unknown key {key!r} in [{name}]; expected one of "
                    + ", ".join(sorted(known))
                )
            if key == "on_budget":
                if item not in PROJECT_ON_BUDGET:
                    raise ConfigError(
                        f"{at}: {name}.{key}: expected one of {', '.join(PROJECT_ON_BUDGET)}, "
                        f"got {item!r}"
                    )
            elif isinstance(item, bool) or not isinstance(item, int | float):
                raise ConfigError(f"{at}: {name}.{key}: expected a number, got {item!r}")
            elif item < 0:
                raise ConfigError(f"{at}: {name}.{key}: expected 0 (none) or more, got {item!r}")
            checked[key] = item if key == "on_budget" else float(item)
        out[tag] = ProjectBudget(**checked)
    return out


def _find_line(text: str, pattern: str) -> int:
    match = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 1


def toml_location(exc: Exception) -> str:
    lineno = getattr(exc, "lineno", None)
    colno = getattr(exc, "colno", None)
    if lineno is None:
        match = re.search(r"line (\d+), column (\d+)", str(exc))
        lineno, colno = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    return f"{lineno}:{colno}"


def toml_reason(exc: Exception) -> str:
    msg = getattr(exc, "msg", None) or re.sub(r"\s*\(at line .*\)$", "", str(exc))
    return f"invalid TOML: {msg[0].lower() + msg[1:] if msg else 'syntax error'}"


def _default_of(section: str, key: str) -> Any:
    for f in fields(SECTIONS[section]):
        if f.name == key:
            return f.default_factory() if f.default_factory is not MISSING else f.default
    raise ConfigError(f"unknown setting {section}.{key}")


def _check(section: str, key: str, value: Any, *, where: str) -> Any:
    if (section, key) == ("cloud", "projects"):
        if isinstance(value, Mapping) and all(isinstance(v, ProjectBudget) for v in value.values()):
            return dict(value)
        return _check_projects(value, lambda _tag, _key: where)
    default = _default_of(section, key)
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name}: expected a whole number, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {name}: expected a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name}: expected a string, got {value!r}")
    elif isinstance(default, tuple):
        if (
            isinstance(value, str)
            or not isinstance(value, list | tuple)
            or not all(isinstance(v, str) for v in value)
        ):
            raise ConfigError(f"{where}: {name}: expected a list of strings, got {value!r}")
        value = tuple(value)
    elif isinstance(default, Mapping):
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: {name}: expected a table of strings, got {value!r}")
        value = dict(value)
    bounds = _RANGES.get((section, key))
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where}: {name}: expected {bounds[0]} to {bounds[1]}, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{where}: {name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _coerce_env(section: str, key: str, default: Any, raw: str) -> Any:
    var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
    value: Any = raw
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            value = lowered in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            value = int(raw)
        elif isinstance(default, float):
            value = float(raw)
        elif isinstance(default, tuple):
            value = tuple(p for p in raw.split(os.pathsep) if p)
    except ValueError:
        raise ConfigError(f"{var}={raw!r}: expected a {type(default).__name__}") from None
    return _check(section, key, value, where=var)


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy with some keys changed, validated like flags (used by the app at run time)."""
    changed = {}
    for section, updates in sections.items():
        current = getattr(settings, section)
        checked = {k: _check(section, k, v, where="override") for k, v in updates.items()}
        changed[section] = replace(current, **checked)
    return replace(settings, **changed)
