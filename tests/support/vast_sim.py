"""Fixtures for code that rents GPUs: the project's Vast API simulator and a provider on it.

Use them by importing the fixtures into a test module (pytest finds them by name)::

    from support.vast_sim import provider, sim  # noqa: F401

    def test_rent(sim, provider):
        offer = provider.search_offers("num_gpus=1")[0]
        instance_id = provider.rent(RentRequest(offer.id, "img", 10, label="rigdeck-t1"))
        boot(sim)                        # simulated time past created -> loading -> running
        assert provider.instance(instance_id).state == "running"

- `sim`: a started `Simulator` (in memory, seed 0, new instances spend 1 s created and 3 s
  loading of *simulated* time: move it with `sim.advance(s)` or `boot(sim)`; nothing sleeps).
- `provider`: a `VastProvider` (the real vastai SDK) pointed at `sim`, with short timeouts and
  backoff so fault tests finish quickly.
- `TEST_API_KEY`: the key the provider sends; tests assert it never shows up in output.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.cloud.vast import VastProvider
from rigdeck.core.secrets import Secret

TEST_API_KEY = "vsim-test-key-7f3a9c1e5b2d4f60"
CREATE_TIMEOUT_S = 2.0
"""How long the fixture provider waits for a create's answer before calling it uncertain."""


def make_provider(sim: Simulator, **options: object) -> VastProvider:
    """A VastProvider on `sim` with test timings; `options` override them."""
    settings: dict[str, object] = {
        "api_url": sim.url,
        "simulated": True,
        "timeout_s": 5.0,
        "create_timeout_s": CREATE_TIMEOUT_S,
        "backoff_s": 0.05,
        "max_retry_after_s": 5.0,
    }
    settings.update(options)
    return VastProvider(Secret(TEST_API_KEY), **settings)  # type: ignore[arg-type]


def boot(sim: Simulator) -> None:
    """Advance simulated time far enough for every new instance to be running."""
    sim.advance(60.0)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=0, api_key=TEST_API_KEY) as simulator:
        yield simulator


@pytest.fixture
def provider(sim: Simulator) -> VastProvider:
    return make_provider(sim)
