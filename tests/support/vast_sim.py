"""Fixtures for code that rents GPUs: the project's Vast API simulator and a provider on it.

Bring the fixtures into a test module (pytest finds them by name). Binding them by assignment
keeps ruff quiet about the test parameters of the same name (an import would need a
``# noqa: F811`` on every test)::

    from support import vast_sim
    from support.vast_sim import boot

    sim, provider = vast_sim.sim, vast_sim.provider

    def test_rent(sim, provider):
        offer = provider.search_offers("num_gpus=1")[0]
        instance_id = provider.rent(RentRequest(offer.id, "img", 10, label="rigdeck-t1"))
        boot(sim)                        # simulated time past created -> loading -> running
        assert provider.instance(instance_id).state == "running"

- `sim`: a started `Simulator` (in memory, seed 0). Its clock stands still at the time the
  test started: only `sim.advance(s)` (or `boot(sim)`) moves it, so phases and charges are
  exact and nothing sleeps. New instances spend 1 s created and 3 s loading.
- `provider`: a `VastProvider` (the real vastai SDK) pointed at `sim`, with short timeouts and
  backoff so fault tests finish quickly.
- `TEST_API_KEY`: the key the provider sends; tests assert it never shows up in output.
- `make_provider(sim, **options)`: another provider on `sim` (other timeouts, attempts, ...).
- `CREATE_TIMEOUT_S`: how long the fixture provider waits for a create; `sim.create_late` with
  more than this makes the create uncertain.
"""

from __future__ import annotations

import time
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


class FrozenClock:
    """A clock that reads the wall-clock time of its creation, forever."""

    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(clock=FrozenClock(), seed=0, api_key=TEST_API_KEY) as simulator:
        yield simulator


@pytest.fixture
def provider(sim: Simulator) -> VastProvider:
    return make_provider(sim)
