"""Upgrades: the parser, months until one pays for itself (with and without resale), the cheaper
cloud that never breaks even, the config's upgrade table, and what an upgrade unlocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rigdeck.core.config import EconomicsSettings, load_settings
from rigdeck.core.economics.breakeven import (
    RAM_WATTS_PER_GIB,
    GiB,
    breakeven,
    monthly_cloud,
    parse_upgrade,
    upgrade_from_config,
)
from rigdeck.core.economics.figures import EconomicsError, Figure
from rigdeck.core.economics.report import upgrade_json, upgrade_report
from rigdeck.core.economics.unlocks import unlocks, upgraded_budget
from rigdeck.core.models import launch
from tests.support.gguf_factory import write_model

# -- the parser ----------------------------------------------------------------------------


def test_ram_added_or_as_a_new_total():
    added = parse_upgrade("ram +96G @250")
    assert (added.kind, added.ram_bytes, added.ram_add, added.price) == ("ram", 96 * GiB, True, 250)
    assert added.label == "ram +96G"
    total = parse_upgrade("  RAM   128GiB  @ $400 ")
    assert (total.ram_bytes, total.ram_add, total.price) == (128 * GiB, False, 400.0)


def test_gpu_known_card_unknown_card_added_card_and_resale():
    known = parse_upgrade("gpu RTX 4090 @1800")
    assert (known.gpu_name, known.gpu_vram_bytes, known.gpu_tdp_w) == ("RTX 4090", 24 * GiB, 450)
    assert not known.gpu_add and known.tdp_source == "default"
    typed = parse_upgrade("gpu Mystery Card 20G 300W @900 resale 400")
    assert (typed.gpu_name, typed.gpu_vram_bytes, typed.gpu_tdp_w) == (
        "Mystery Card",
        20 * GiB,
        300,
    )
    assert typed.tdp_source == "user" and typed.resale == 400.0
    added = parse_upgrade("gpu +RTX 3090 @1,200")
    assert added.gpu_add and added.gpu_name == "RTX 3090" and added.price == 1200.0
    assert parse_upgrade("ram +32G @89,50").price == 89.5  # a decimal comma


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ram +96G", "put the price after one @"),
        ("ram +96G @250 @300", "put the price after one @"),
        ("@250", "say what to buy"),
        ("cpu 7950X @500", "starts with ram or gpu"),
        ("ram lots @250", "'lots' is not a size"),
        ("ram +96G @free", "'free' is not an amount"),
        ("ram +96G @0", "more than zero"),
        ("ram +96G @250 resale 300", "resale value above the price"),
        ("ram +96G @250 maybe", "optionally 'resale VALUE'"),
        ("gpu Mystery Card @900", "unknown card 'Mystery Card'; give its VRAM"),
        ("gpu @900", "name the card"),
    ],
)
def test_parser_errors_are_one_line_and_say_how(text, words):
    with pytest.raises(EconomicsError) as info:
        parse_upgrade(text)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_config_upgrade_table_parses_into_upgrades(tmp_path):
    path = tmp_path / "rigdeck.toml"
    path.write_text(
        '[economics]\nupgrades = { "ram +96G" = "250", "gpu RTX 4090" = "1800 resale 900" }\n'
    )
    settings = load_settings(path, env={"RIGDECK_ECONOMICS_UPGRADES": "ignored"})
    assert settings.warnings == ()
    parsed = [upgrade_from_config(k, v) for k, v in settings.economics.upgrades.items()]
    assert [(u.label, u.price, u.resale) for u in parsed] == [
        ("ram +96G", 250.0, None),
        ("gpu RTX 4090", 1800.0, 900.0),
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text('[economics]\nupgrades = { "ram +96G" = 250 }\n')
    assert "expected a table of strings" in load_settings(bad, env={}).warnings[0]


# -- months --------------------------------------------------------------------------------


def test_gpu_breakeven_with_and_without_resale():
    settings = EconomicsSettings(price_per_kwh=0.30, psu_efficiency=0.9)
    up = parse_upgrade("gpu RTX 4090 @1800 resale 900")
    cloud = Figure(150.0, "ledger", note="last 30 days")
    result = breakeven(up, cloud, settings, use_hours_per_month=Figure(100.0, "user"))
    electricity = 450 * 0.6 / 0.9 * 100 / 1000 * 0.30  # TDP x 60% at the wall, 100 h, tariff
    saving = 150.0 - electricity
    assert result.extra_electricity_per_month.value == pytest.approx(electricity)
    assert result.months.value == pytest.approx(1800 / saving)
    assert result.months_with_resale.value == pytest.approx((1800 - 900) / saving)
    assert result.band[0] == pytest.approx(1800 / (150 * 1.3 - electricity))
    assert result.band[1] == pytest.approx(1800 / (150 * 0.7 - electricity))
    assert result.months.low == result.band[0] and result.months.high == result.band[1]
    assert result.why == "" and "60% utilisation" in " ".join(result.assumptions)
    assert result.resale_value.source == "user"


def test_ram_breakeven_uses_a_default_resale_share_and_small_draw():
    settings = EconomicsSettings(price_per_kwh=0.20, psu_efficiency=0.8)
    up = parse_upgrade("ram +96G @250")
    result = breakeven(up, Figure(40.0, "user"), settings)
    electricity = 96 * RAM_WATTS_PER_GIB / 0.8 * 120 / 1000 * 0.20
    assert result.months.value == pytest.approx(250 / (40 - electricity))
    assert result.resale_value.value == pytest.approx(0.3 * 250)
    assert result.resale_value.source == "default"
    assert result.months_with_resale.value == pytest.approx(250 * 0.7 / (40 - electricity))


def test_a_cheaper_cloud_never_breaks_even_and_says_why():
    settings = EconomicsSettings(price_per_kwh=0.60)
    up = parse_upgrade("gpu RTX 5090 @2500")
    # 575 W x 60% at the wall for 300 h at 0.60 is about 69 a month: more than 20 of rentals.
    result = breakeven(
        up, Figure(20.0, "ledger"), settings, use_hours_per_month=Figure(300, "user")
    )
    assert result.months.value is None
    assert result.months_with_resale.value is None
    assert result.band == (None, None)
    assert "renting stays cheaper" in result.why
    report = upgrade_report(result)
    assert report["breakeven_months"] is None and report["why"] == result.why
    assert report["band"] == [None, None]
    nothing = breakeven(up, Figure(0.0, "default"), settings)
    assert nothing.months.value is None and nothing.why == "no cloud spend to replace"


def test_monthly_cloud_figure_prefers_a_full_ledger_month_then_the_config():
    settings = EconomicsSettings(monthly_cloud_usd=75.0)
    assert monthly_cloud(120.0, 45, settings).source == "ledger"
    typed = monthly_cloud(12.0, 10, settings)
    assert (typed.value, typed.source) == (75.0, "user")
    scaled = monthly_cloud(12.0, 10, EconomicsSettings())
    assert scaled.value == pytest.approx(36.0) and "scaled to 30" in scaled.note
    assert monthly_cloud(None, 0, EconomicsSettings()).value == 0.0


# -- what it unlocks -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[launch.ModelInfo]:
    d = Path(tmp_path_factory.mktemp("gguf"))
    paths = [
        write_model(d / "llama-70b.Q4_K_M.gguf", "llama-3.1-70b", with_tokenizer=False),
        write_model(d / "llama-8b.Q4_K_M.gguf", "llama-3.1-8b", with_tokenizer=False),
    ]
    return [launch.model_info(p) for p in paths]


def box(ram_gib: int, gpus=()) -> launch.HardwareBudget:
    return launch.HardwareBudget.hypothetical(
        ram_bytes=ram_gib * GiB, gpus=gpus, cpu_threads=8, cpu_bandwidth_bytes_per_s=60e9
    )


def test_more_ram_unlocks_a_70b_on_the_cpu(models):
    up = parse_upgrade("ram +96G @250")
    base = box(32)
    after = upgraded_budget(up, base)
    assert after.ram_total_bytes == 128 * GiB and after.ram_available_bytes == 128 * GiB
    found = unlocks(up, models, base)
    assert [u.model for u in found] == ["Meta Llama 3.1 70B Instruct"]
    (big,) = found
    assert big.quant == "Q4_K_M" and not big.fits_before and big.fits_after
    assert big.after == "cpu" and big.newly_fits and big.after_decode_tps > 0
    every = unlocks(up, models, base, everything=True)
    assert len(every) == 2  # the 8B ran before and runs no faster: listed only when asked


def test_a_gpu_moves_the_8b_onto_it_and_replaces_the_old_card(models):
    up = parse_upgrade("gpu RTX 4090 @1800")
    base = box(32, gpus=[("RTX 3060", 12 * GiB)])
    after = upgraded_budget(up, base)
    assert [(g.name, g.total_bytes) for g in after.gpus] == [("RTX 4090", 24 * GiB)]
    added = upgraded_budget(parse_upgrade("gpu +RTX 4090 @1800"), base)
    assert [g.name for g in added.gpus] == ["RTX 3060", "RTX 4090"]
    assert [g.index for g in added.gpus] == [0, 1]
    found = unlocks(up, models, box(32))
    small = next(u for u in found if "8B" in u.model)
    assert (small.before, small.after) == ("cpu", "gpu")
    assert small.after_decode_tps > small.before_decode_tps  # type: ignore[operator]
    shown = upgrade_report(breakeven(up, Figure(200.0, "ledger"), EconomicsSettings()), found)
    assert shown["unlocks"][0]["after"]["verdict"] in {"gpu", "partial", "cpu"}
    assert {"breakeven_months", "band", "unlocks", "why"} <= shown.keys()


def test_upgrade_json_in_one_call_parses_weighs_and_fits(models):
    doc = upgrade_json(
        "ram +96G @250 resale 100",
        Figure(50.0, "ledger"),
        EconomicsSettings(),
        models=models,
        base=box(32),
    )
    json.dumps(doc)
    assert doc["upgrade"]["label"] == "ram +96G" and doc["upgrade"]["resale"] == 100.0
    assert doc["breakeven_months"] > doc["breakeven_months_with_resale"] > 0
    assert doc["months"]["source"] == "default"  # hours of use and the RAM draw are assumptions
    assert [u["model"] for u in doc["unlocks"]] == ["Meta Llama 3.1 70B Instruct"]
    after = doc["unlocks"][0]["after"]
    assert after["verdict"] == "cpu" and after["fits"] and after["decode_tps"] > 0
    assert doc["unlocks"][0]["before"] == {"verdict": "none", "fits": False, "decode_tps": None}
    with pytest.raises(EconomicsError, match="starts with ram or gpu"):
        upgrade_json("ssd 4T @300", Figure(50.0, "ledger"), EconomicsSettings())
