"""Fits this model, per cloud offer: the one fit path on the offer's figures, and $ per Mtok."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rigdeck.core.cloud.offer_fit import fit_offers, load_model, usd_per_mtok
from rigdeck.core.cloud.provider import Offer
from rigdeck.core.models.launch import build_run_settings
from rigdeck.core.models.sources.local import demo_model_path

pytestmark = pytest.mark.skipif(demo_model_path() is None, reason="demo model missing")
GiB = 1 << 30


def offer(offer_id: int, *, gpus: int, vram: int, ram: int, dph: float = 0.5) -> Offer:
    return Offer(
        id=offer_id, gpu_name="RTX 4090", num_gpus=gpus, gpu_ram_bytes=vram, dph=dph,
        storage_usd_per_gb_month=0.1, reliability=0.99, inet_down_mbps=1000, inet_up_mbps=500,
        tflops=82.6, dlperf=None, interruptible_min_bid=None, cpu_ram_bytes=ram, cpu_cores=16,
        disk_gb=100, verified=True, rentable=True, location="here", read_at=datetime.now(UTC),
    )  # fmt: skip


def test_a_gpu_offer_fits_and_prices_a_million_tokens():
    model = load_model("demo")
    fits = fit_offers(model, [offer(1, gpus=1, vram=24 * GiB, ram=64 * GiB)], build_run_settings())
    fit = fits[1]
    assert fit.fits and fit.placement.verdict == "gpu"
    expected = usd_per_mtok(0.5 + 0.1 * 20 / 720, fit.placement.decode_tps)
    assert fit.usd_per_mtok == pytest.approx(expected)
    data = fit.to_json()
    assert data["gpu_layers"] == fit.placement.gpu_layers == fit.placement.total_layers


def test_an_offer_too_small_does_not_fit_and_has_no_token_price():
    model = load_model("demo")
    fit = fit_offers(model, [offer(2, gpus=0, vram=0, ram=16 << 20)], build_run_settings())[2]
    assert not fit.fits
    assert fit.usd_per_mtok is None
    assert fit.to_json()["fits"] is False


def test_a_faster_gpu_costs_less_per_token_at_the_same_price():
    assert usd_per_mtok(1.0, 200.0) < usd_per_mtok(1.0, 100.0)
    assert usd_per_mtok(1.0, 0.0) is None
