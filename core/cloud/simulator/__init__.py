"""The project's own Vast API simulator: a real HTTP server on 127.0.0.1 that the unmodified
vastai SDK talks to, for tests and ``--simulate`` mode. No money moves through it."""

from rigdeck.core.cloud.simulator.catalogue import GPU_MODELS, build_catalogue, make_offer
from rigdeck.core.cloud.simulator.faults import Fault
from rigdeck.core.cloud.simulator.server import Served
from rigdeck.core.cloud.simulator.simulate import (
    SIMULATED_API_KEY,
    simulator_state_path,
    start_simulated_api,
    stop_simulated_api,
)
from rigdeck.core.cloud.simulator.simulator import Simulator

__all__ = [
    "GPU_MODELS",
    "SIMULATED_API_KEY",
    "Fault",
    "Served",
    "Simulator",
    "build_catalogue",
    "make_offer",
    "simulator_state_path",
    "start_simulated_api",
    "stop_simulated_api",
]
