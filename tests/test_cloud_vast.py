"""VastProvider: the real vastai SDK against the project's Vast API simulator."""

from __future__ import annotations

from support import vast_sim
from support.vast_sim import boot

from rigdeck.core.cloud.provider import RentRequest

sim, provider = vast_sim.sim, vast_sim.provider  # the fixtures, for the tests below


def test_rent_list_show_destroy(sim, provider):
    offer = provider.search_offers("num_gpus=1 gpu_ram>=24")[0]
    instance_id = provider.rent(RentRequest(offer.id, "pytorch/pytorch", 20.0, label="rigdeck-t1"))
    assert [i.id for i in provider.instances()] == [instance_id]
    boot(sim)
    shown = provider.instance(instance_id)
    assert shown is not None and shown.state == "running" and shown.label == "rigdeck-t1"
    provider.destroy(instance_id)
    assert provider.instance(instance_id) is None
    assert provider.instances() == []
