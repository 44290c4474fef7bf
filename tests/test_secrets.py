from __future__ import annotations

import logging
import pickle
import stat
from pathlib import Path

import pytest
from huggingface_hub import constants

from rigdeck.core.errors import RigdeckError
from rigdeck.core.secrets import (
    RedactingFilter,
    Secret,
    load_hf_token,
    load_secret,
    read_secret_file,
    redact,
    write_secret_file,
)

TOKEN = "hf_" + "Zq8" * 12  # the shape of a real Hugging Face token


def test_secret_never_shows_its_value() -> None:
    secret = Secret(TOKEN)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}", repr([secret])]
    for text in shown:
        assert TOKEN not in text
        assert "***" in text
    assert secret.reveal() == TOKEN


def test_secret_refuses_pickling_and_mutation() -> None:
    secret = Secret(TOKEN)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(AttributeError):
        secret._value = "other"  # type: ignore[misc]


def test_secret_equality_and_truth() -> None:
    assert Secret(TOKEN) == Secret(TOKEN)
    assert Secret(TOKEN) != Secret(TOKEN + "x")
    assert not Secret("")
    assert {Secret(TOKEN), Secret(TOKEN)} == {Secret(TOKEN)}


def test_redact_scrubs_known_values_and_token_shapes() -> None:
    other = "hf_" + "k" * 34
    text = (
        f"GET failed with Authorization: Bearer {TOKEN}; also saw {other} and "
        "authorization=sk-live-abcdef123456 in the body"
    )
    cleaned = redact(text, [Secret(TOKEN)])
    assert TOKEN not in cleaned
    assert other not in cleaned
    assert "sk-live-abcdef123456" not in cleaned
    # Ordinary words that merely start with hf_ stay readable.
    assert redact("set hf_transfer and hf_hub_download") == "set hf_transfer and hf_hub_download"


def test_redacting_filter_cleans_log_records(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("rigdeck.test.secrets")
    logger.addFilter(RedactingFilter([Secret(TOKEN)]))
    try:
        with caplog.at_level(logging.DEBUG, logger="rigdeck.test.secrets"):
            logger.debug("sending header %s", {"authorization": f"Bearer {TOKEN}"})
    finally:
        logger.filters.clear()
    assert "sending header" in caplog.text
    assert TOKEN not in caplog.text


def test_secret_file_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vast"
    write_secret_file(path, Secret("abc123secret"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret_file(path) == Secret("abc123secret")
    write_secret_file(path, "replaced-value")  # replacing keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret_file(path) == Secret("replaced-value")


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("abc123secret")
    path.chmod(0o644)
    with pytest.raises(RigdeckError) as info:
        read_secret_file(path)
    assert "chmod 600" in str(info.value)
    assert "abc123secret" not in str(info.value)


def test_load_secret_prefers_environment(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_secret_file(path, "from-file-secret")
    assert load_secret("VAST_API_KEY", path, env={"VAST_API_KEY": "from-env-secret"}) == Secret(
        "from-env-secret"
    )
    assert load_secret("VAST_API_KEY", path, env={}) == Secret("from-file-secret")
    assert load_secret("VAST_API_KEY", tmp_path / "missing", env={}) is None


def test_hf_token_from_env_then_huggingface_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "hf_home" / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(store))
    assert load_hf_token(env={}) is None

    store.parent.mkdir()
    store.write_text(TOKEN + "\n")  # `hf auth login` writes the token file like this
    assert load_hf_token(env={}) == Secret(TOKEN)

    from_env = "hf_" + "E" * 34
    assert load_hf_token(env={"HF_TOKEN": from_env}) == Secret(from_env)
    assert load_hf_token(env={"HUGGING_FACE_HUB_TOKEN": from_env}) == Secret(from_env)
