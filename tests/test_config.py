"""Config: precedence, one-line errors with file:line:col, and the sample documenting every key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rigdeck.core.config import documented_keys, load_settings
from rigdeck.core.errors import ConfigError
from rigdeck.core.state import AppState
from rigdeck.core.themes import builtin_themes, default_theme_name, parse_theme

SAMPLE = Path(__file__).resolve().parents[1] / "sample_configs" / "rigdeck.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rigdeck.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    settings = load_settings(tmp_path / "absent.toml", env={})
    assert settings.telemetry.refresh_s == 1.0
    assert settings.models.context == 4096
    # An explicitly named file that does not exist is worth a word.
    assert "no such file" in settings.warnings[0]


def test_precedence_flag_over_env_over_file(tmp_path):
    path = write(tmp_path, "[telemetry]\nrefresh_s = 2.0\nhistory_minutes = 10\n")
    env = {"RIGDECK_TELEMETRY_REFRESH_S": "3"}
    assert load_settings(path, env={}).telemetry.refresh_s == 2.0
    assert load_settings(path, env=env).telemetry.refresh_s == 3.0
    flagged = load_settings(path, env=env, overrides={"telemetry.refresh_s": 0.5})
    assert flagged.telemetry.refresh_s == 0.5
    assert flagged.telemetry.history_minutes == 10  # untouched keys keep the file's value


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "[models]\ncontext = 8192\n")
    assert load_settings(env={"RIGDECK_CONFIG": str(path)}).models.context == 8192


def test_malformed_toml_names_file_line_and_column_and_starts_on_defaults(tmp_path):
    path = write(tmp_path, "[telemetry]\nrefresh_s = 2.0\nread_only = tru\n")
    settings = load_settings(path, env={})
    (warning,) = settings.warnings
    assert warning.startswith(f"{path}:3:13: invalid TOML")
    assert "starting on defaults" in warning and "\n" not in warning
    assert settings.telemetry.refresh_s == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[telemetry]\nrefresh_s = 'fast'\n", ":2:1: telemetry.refresh_s: expected a number"),
        ("[telemetry]\n\nread_only = 1\n", ":3:1: telemetry.read_only: expected true or false"),
        ("[models]\nkv_type = 'q5'\n", "expected one of f16, q8_0, q4_0"),
        ("[telemetry]\nrefresh_s = 0.01\n", "expected 0.2 to 60.0"),
        ("[gpu]\nx = 1\n", ":1:1: unknown section [gpu]"),
        ("[ui]\ncolour = 'red'\n", ":2:1: unknown key 'colour' in [ui]"),
    ],
)
def test_wrong_values_are_one_line_with_location(tmp_path, text, expected):
    path = write(tmp_path, text)
    (warning,) = load_settings(path, env={}).warnings
    assert expected in warning and str(path) in warning


def test_bad_environment_value_is_an_error_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="RIGDECK_TELEMETRY_REFRESH_S"):
        load_settings(tmp_path / "none.toml", env={"RIGDECK_TELEMETRY_REFRESH_S": "soon"})


def test_list_settings_from_environment(tmp_path):
    settings = load_settings(tmp_path / "x.toml", env={"RIGDECK_MODELS_DIRS": "/a:/b"})
    assert settings.models.dirs == ("/a", "/b")


def test_sample_config_parses_and_documents_every_key():
    text = SAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    settings = load_settings(SAMPLE, env={})
    assert settings.warnings == ()
    for section, keys in documented_keys().items():
        assert section in data, f"[{section}] missing from the sample"
        for key, doc in keys.items():
            assert doc, f"{section}.{key} has no docstring"
            assert key in data[section], f"{section}.{key} missing from the sample"


def test_themes_ship_dark_light_and_16_colours():
    names = {t.name: t for t in builtin_themes()}
    assert {"rigdeck-dark", "rigdeck-light", "rigdeck-16"} <= names.keys()
    assert names["rigdeck-16"].ansi and not names["rigdeck-light"].dark
    assert all(c.startswith("ansi_") for c in names["rigdeck-16"].colours.values())


def test_theme_default_follows_terminal_colours():
    assert default_theme_name({"TERM": "xterm"}) == "rigdeck-16"
    assert default_theme_name({"TERM": "xterm-256color"}) == "rigdeck-dark"
    assert default_theme_name({"TERM": "screen", "COLORTERM": "truecolor"}) == "rigdeck-dark"


def test_broken_theme_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"mine\.toml: a theme needs name"):
        parse_theme("primary = '#fff'\n", "mine.toml")
    with pytest.raises(ConfigError, match=r"mine.toml:1:\d+: invalid TOML"):
        parse_theme("name = \n", "mine.toml")


def test_state_survives_a_damaged_file(tmp_path):
    state = AppState(tmp_path / "state.json")
    state.set("theme", "rigdeck-light")
    assert AppState(tmp_path / "state.json").get("theme") == "rigdeck-light"
    (tmp_path / "state.json").write_text("{not json", encoding="utf-8")
    assert state.get("theme") is None
