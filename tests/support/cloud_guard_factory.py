"""The provider factory a detached guard test process loads (``--factory``): the real
`VastProvider` on the simulator named by ``VSIM_URL`` and ``VSIM_KEY``."""

from __future__ import annotations

import os

from rigdeck.core.cloud.vast import VastProvider
from rigdeck.core.config import Settings
from rigdeck.core.secrets import Secret


def provider(settings: Settings) -> VastProvider:
    return VastProvider(
        Secret(os.environ["VSIM_KEY"]), api_url=os.environ["VSIM_URL"], simulated=True, timeout_s=5
    )
