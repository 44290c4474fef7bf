"""VastProvider: the real vastai SDK against the project's Vast API simulator."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC

import pytest
from support import vast_sim
from support.vast_sim import CREATE_TIMEOUT_S, TEST_API_KEY, boot, make_provider

from rigdeck.core.cloud.provider import (
    CloudError,
    CreateUncertain,
    InstanceGone,
    MissingApiKey,
    ProviderUnavailable,
    RentRequest,
    new_label,
)
from rigdeck.core.cloud.simulator import simulator_state_path, stop_simulated_api
from rigdeck.core.cloud.vast import (
    VastProvider,
    load_api_key,
    provider_from_settings,
    resolve_api_url,
)
from rigdeck.core.config import CloudSettings, Settings
from rigdeck.core.secrets import Secret

sim, provider = vast_sim.sim, vast_sim.provider  # the fixtures, for the tests below

HOUR = 3600.0


def rent(provider: VastProvider, offer_id: int | None = None, **options: object) -> int:
    if offer_id is None:
        offer_id = provider.search_offers("num_gpus=1")[0].id
    settings: dict[str, object] = {"image": "pytorch/pytorch", "disk_gb": 20.0}
    settings.update(options)
    settings.setdefault("label", new_label())
    return provider.rent(RentRequest(offer_id, **settings))  # type: ignore[arg-type]


# -- offers ---------------------------------------------------------------------------------


def test_search_with_the_query_syntax(provider):
    offers = provider.search_offers("gpu_ram>=24 num_gpus=1 reliability>0.98 gpu_name=RTX_4090")
    assert offers
    for offer in offers:
        assert offer.gpu_name == "RTX 4090" and offer.num_gpus == 1
        assert offer.gpu_ram_bytes >= 24 * 1000 * 2**20 and offer.reliability > 0.98
        assert offer.verified and offer.rentable
        assert offer.read_at.tzinfo is UTC
    prices = [o.dph for o in offers]
    assert prices == sorted(prices)


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("price", lambda o: o.dph),
        ("tflops", lambda o: o.dph / o.tflops),
        ("reliability", lambda o: -o.reliability),
        ("bandwidth", lambda o: -o.inet_down_mbps),
    ],
)
def test_each_sort_orders_what_it_says(provider, sort, key):
    offers = provider.search_offers("", sort=sort, limit=200)
    assert len(offers) > 10
    values = [key(o) for o in offers]
    assert values == sorted(values)


def test_unverified_and_unrentable_only_when_asked(sim, provider):
    hidden = {o["id"] for o in sim.offers() if not o["verified"] or not o["rentable"]}
    default = {o.id for o in provider.search_offers("", limit=500)}
    shown = {o.id for o in provider.search_offers("", limit=500, show_unverified=True)}
    assert hidden and not hidden & default
    assert hidden <= shown
    configured = make_provider(sim, show_unverified=True)  # [cloud] show_unverified = true
    assert hidden <= {o.id for o in configured.search_offers("", limit=500)}


def test_interruptible_search_sorts_by_min_bid(provider):
    offers = provider.search_offers("num_gpus=1", interruptible=True)
    bids = [o.interruptible_min_bid for o in offers]
    assert offers and None not in bids and bids == sorted(bids)  # type: ignore[type-var]


def test_offer_values_are_converted_to_our_units(sim, provider):
    added = sim.add_offer(
        gpu_name="A100 SXM4", num_gpus=2, gpu_ram=81920, cpu_ram=262144, dph_base=2.1,
        storage_cost=0.2, total_flops=39.0, min_bid=0.9, geolocation="Hesse, DE",
    )  # fmt: skip
    (offer,) = provider.search_offers(f"id={added['id']}")
    assert offer.gpu_ram_bytes == 81920 * 2**20 and offer.cpu_ram_bytes == 262144 * 2**20
    assert offer.dph == pytest.approx(2.1) and offer.storage_usd_per_gb_month == 0.2
    assert offer.interruptible_min_bid == pytest.approx(0.9) and offer.tflops == 39.0
    assert offer.location == "Hesse, DE" and offer.num_gpus == 2


def test_a_mistyped_query_is_one_clear_error(provider, capfd):
    with pytest.raises(CloudError, match="unknown field 'gpu_nmae'"):
        provider.search_offers("gpu_nmae=RTX_4090")
    with pytest.raises(CloudError, match="Offer query"):
        provider.search_offers("num_gpus ~ 2")
    with pytest.raises(CloudError, match="Unknown offer sort"):
        provider.search_offers("", sort="cheapest")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- the instance life cycle -------------------------------------------------------------------


def test_rent_list_show_stop_start_destroy(sim, provider):
    offer = provider.search_offers("num_gpus=1")[0]
    instance_id = rent(provider, offer.id, disk_gb=40.0, label="rigdeck-life", env={"A": "1"})
    (listed,) = provider.instances()
    assert listed.id == instance_id and listed.state == "created"
    assert listed.created_at is not None and listed.created_at.tzinfo is UTC
    assert listed.gpu_ram_bytes == offer.gpu_ram_bytes and listed.dph == pytest.approx(offer.dph)
    assert listed.storage_dph == pytest.approx(offer.storage_dph(40.0))
    assert sim.instance(instance_id)["env"] == {"A": "1"}
    boot(sim)
    running = provider.instance(instance_id)
    assert running is not None and running.state == "running" and running.label == "rigdeck-life"
    provider.stop(instance_id)
    stopped = provider.instance(instance_id)
    assert stopped.state == "stopped" and stopped.billing_dph == pytest.approx(stopped.storage_dph)
    provider.start(instance_id)
    boot(sim)
    assert provider.instance(instance_id).state == "running"
    provider.label(instance_id, "renamed")
    assert provider.instance(instance_id).label == "renamed"
    provider.destroy(instance_id)
    assert provider.instance(instance_id) is None and provider.instances() == []
    with pytest.raises(InstanceGone):
        provider.destroy(instance_id)
    with pytest.raises(InstanceGone):
        provider.stop(instance_id)


def test_instances_walks_every_page(sim, provider):
    ids = [rent(provider) for _ in range(63)]
    assert sorted(i.id for i in provider.instances()) == sorted(ids)
    assert [r.status for r in sim.requests if r.op == "list"] == [200, 200, 200]


def test_exited_and_offline_carry_the_status_message(sim, provider):
    instance_id = rent(provider)
    sim.set_state(instance_id, "exited", "Error: the container exited with code 1")
    shown = provider.instance(instance_id)
    assert shown.state == "exited" and shown.status_message.startswith("Error: the container")
    sim.set_state(instance_id, "offline")
    assert provider.instance(instance_id).state == "offline"


def test_ssh_address_and_gpu_util_as_fractions(sim, provider):
    instance_id = rent(provider)
    boot(sim)
    sim.set_ssh(instance_id, "127.0.0.1", 2222)
    sim.set_gpu_util(instance_id, 0.25)
    shown = provider.instance(instance_id)
    assert (shown.ssh_host, shown.ssh_port, shown.gpu_util) == ("127.0.0.1", 2222, 0.25)


def test_ssh_keys(sim, provider):
    provider.register_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 rigdeck@here\n")
    instance_id = rent(provider)
    provider.attach_ssh_key(instance_id, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 second")
    assert sim.instance(instance_id)["ssh_keys"] == [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 rigdeck@here",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 second",
    ]
    with pytest.raises(CloudError, match="not an OpenSSH public key"):
        provider.register_ssh_key("hello")


# -- money ----------------------------------------------------------------------------------


def test_credit_goes_down_by_the_charges(sim, provider):
    offer = sim.add_offer(dph_base=1.2, storage_cost=0.36)
    start = provider.credit().balance_usd
    instance_id = rent(provider, offer["id"], disk_gb=100.0)
    sim.advance(HOUR)
    spent = 1.2 + 0.36 * 100 / 720
    assert sim.charges(instance_id) == pytest.approx(spent)
    assert start - provider.credit().balance_usd == pytest.approx(spent, abs=1e-5)


def test_outbid_then_rebid_above_the_minimum(sim, provider):
    offer = sim.add_offer(dph_base=1.0, min_bid=0.40)
    instance_id = rent(provider, offer["id"], bid=0.45)
    boot(sim)
    sim.outbid(instance_id, min_bid=0.70)
    shown = provider.instance(instance_id)
    assert shown.outbid and shown.interruptible and shown.bid == pytest.approx(0.45)
    provider.change_bid(instance_id, 0.75)
    boot(sim)
    shown = provider.instance(instance_id)
    assert shown.state == "running" and not shown.outbid and shown.dph == pytest.approx(0.75)


def test_instance_that_never_becomes_ready(sim, provider):
    sim.never_ready(msg="Pulling image: manifest unknown")
    instance_id = rent(provider)
    sim.advance(24 * HOUR)
    shown = provider.instance(instance_id)
    assert shown.state == "loading" and shown.status_message == "Pulling image: manifest unknown"


# -- faults ---------------------------------------------------------------------------------


def test_429_waits_out_retry_after(sim, provider):
    sim.rate_limit(2, retry_after=1, op="list")
    assert provider.instances() == []
    lists = [r for r in sim.requests if r.op == "list"]
    assert [r.status for r in lists] == [429, 429, 200]
    assert lists[1].at - lists[0].at >= 1.0 and lists[2].at - lists[1].at >= 1.0


def test_429_longer_than_the_bound_is_reported_not_waited(sim, provider):
    sim.rate_limit(1, retry_after=600, op="search")
    began = time.monotonic()
    with pytest.raises(ProviderUnavailable, match=r"rate limiting.*600 s"):
        provider.search_offers("")
    assert time.monotonic() - began < 5.0


@pytest.mark.parametrize("status", [502, 503])
def test_a_storm_on_reads_ends_as_provider_unavailable(sim, provider, status):
    sim.storm(50, status=status, op="list")
    with pytest.raises(ProviderUnavailable) as failed:
        provider.instances()
    assert str(status) in str(failed.value) and "\n" not in str(failed.value)
    assert len([r for r in sim.requests if r.op == "list"]) == 4  # bounded


def test_a_short_storm_on_reads_is_ridden_out(sim, provider):
    sim.storm(2, status=503, op="show")
    instance_id = rent(provider)
    assert provider.instance(instance_id).id == instance_id


@pytest.mark.parametrize(
    ("fault", "created"), [("never", True), ("late", True), ("502 served", True), ("503", False)]
)
def test_an_uncertain_create_is_never_sent_again(sim, provider, fault, created):
    if fault == "never":
        sim.create_never()
    elif fault == "late":
        sim.create_late(CREATE_TIMEOUT_S + 3.0)
    elif fault == "502 served":
        sim.storm(1, status=502, op="create", served=True)
    else:
        sim.storm(1, status=503, op="create")
    label = new_label()
    offer = provider.search_offers("num_gpus=1")[0]
    with pytest.raises(CreateUncertain) as unsure:
        provider.rent(RentRequest(offer.id, "pytorch/pytorch", 20.0, label=label))
    assert unsure.value.label == label and label in str(unsure.value)
    assert len(provider.instances_labelled(label)) == (1 if created else 0)
    assert sim.create_count == 1


def test_a_rate_limited_create_is_certain_and_not_retried(sim, provider):
    sim.rate_limit(1, retry_after=1, op="create")
    with pytest.raises(ProviderUnavailable, match="rate limiting"):
        rent(provider)
    assert [r.status for r in sim.requests if r.op == "create"] == [429]
    assert sim.instances() == []


def test_a_create_on_a_gone_offer_says_so(sim, provider):
    offer = sim.add_offer(rentable=False)
    with pytest.raises(CloudError, match="not available") as refused:
        rent(provider, offer["id"])
    assert not isinstance(refused.value, CreateUncertain)


def test_destroy_failing_twice_then_succeeding(sim, provider):
    instance_id = rent(provider)
    sim.fail_destroy(2)
    failures = 0
    for _ in range(5):  # the caller's retry loop
        try:
            provider.destroy(instance_id)
            break
        except ProviderUnavailable:
            failures += 1
    assert failures == 2
    assert [r.status for r in sim.requests if r.op == "destroy"] == [500, 500, 200]
    assert provider.instance(instance_id) is None


def test_an_unreachable_api_is_provider_unavailable():
    with vast_sim.Simulator() as gone:
        url = gone.url
    offline = VastProvider(Secret(TEST_API_KEY), api_url=url, backoff_s=0.01)
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        offline.instances()
    with pytest.raises(ProviderUnavailable, match="nothing was created"):
        offline.rent(RentRequest(1, "img", 10.0, label=new_label()))


# -- endpoint and key -----------------------------------------------------------------------


def test_endpoint_from_config_then_vast_url():
    assert resolve_api_url(CloudSettings(), env={}) == "https://console.vast.ai"
    assert resolve_api_url(CloudSettings(), env={"VAST_URL": "http://127.0.0.1:9/"}) == (
        "http://127.0.0.1:9"
    )
    configured = CloudSettings(api_url="http://127.0.0.1:8")
    assert resolve_api_url(configured, env={"VAST_URL": "http://127.0.0.1:9"}) == (
        "http://127.0.0.1:8"
    )


def test_vast_url_and_key_from_the_environment_reach_the_simulator(sim, monkeypatch):
    # vastai read VAST_URL when it was imported (long before this test): the provider must not
    # depend on that.
    monkeypatch.setenv("VAST_URL", sim.url)
    monkeypatch.setenv("VAST_API_KEY", TEST_API_KEY)
    provider = provider_from_settings(Settings())
    assert not provider.simulated and provider.search_offers("num_gpus=1")


def test_missing_key_says_how_to_add_one(tmp_path, monkeypatch):
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    with pytest.raises(MissingApiKey) as missing:
        load_api_key(CloudSettings(), env=env)
    message = str(missing.value)
    assert "VAST_API_KEY" in message and "api_key_file" in message and "--simulate" in message
    assert str(tmp_path / "config" / "vastai" / "vast_api_key") in message
    with pytest.raises(MissingApiKey):
        provider_from_settings(CloudSettings(), env=env)


def test_key_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    sdk_file = tmp_path / "config" / "vastai" / "vast_api_key"
    sdk_file.parent.mkdir(parents=True)
    sdk_file.write_text("from-sdk-file\n")
    sdk_file.chmod(0o600)
    ours = tmp_path / "ours"
    ours.write_text("from-our-file")
    ours.chmod(0o600)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert load_api_key(CloudSettings(), env=env).reveal() == "from-sdk-file"
    env["VAST_API_KEY"] = "from-env"
    assert load_api_key(CloudSettings(), env=env).reveal() == "from-env"
    assert load_api_key(CloudSettings(api_key_file=str(ours)), env=env).reveal() == "from-our-file"
    ours.chmod(0o644)
    with pytest.raises(CloudError, match="chmod 600"):
        load_api_key(CloudSettings(api_key_file=str(ours)), env=env)


def test_the_key_never_shows(sim, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    provider = make_provider(sim)
    texts = [repr(provider), str(provider)]
    instance_id = rent(provider)
    provider.credit()  # the real /users/current answers with the key in it
    provider.instances()
    sim.storm(100, status=503)
    for call in (provider.instances, lambda: provider.instance(instance_id), provider.credit):
        with pytest.raises(ProviderUnavailable) as failed:
            call()
        texts += [str(failed.value), repr(failed.value)]
    sim.clear_faults()
    sim.create_never()
    with pytest.raises(CreateUncertain) as unsure:
        rent(provider)
    texts += [str(unsure.value), repr(unsure.value)]
    wrong = VastProvider(Secret("wrong-key-0123456789abcdef"), api_url=sim.url)
    with pytest.raises(CloudError, match="rejected the API key") as refused:
        wrong.instances()
    texts.append(str(refused.value))
    out, err = capfd.readouterr()
    assert caplog.records  # the HTTP stack did log, at debug level
    for text in [*texts, caplog.text, out, err]:
        assert TEST_API_KEY not in text and "wrong-key-0123456789abcdef" not in text


# -- --simulate -----------------------------------------------------------------------------


def test_simulate_mode_is_one_account_across_processes(tmp_path):
    provider = provider_from_settings(Settings(), simulate=True)
    try:
        assert provider.simulated and "127.0.0.1" in provider.api_url
        instance_id = rent(provider, label="rigdeck-simulated")
        assert simulator_state_path().exists()
        script = textwrap.dedent(
            """
            from rigdeck.core.cloud.vast import provider_from_settings
            from rigdeck.core.config import Settings
            p = provider_from_settings(Settings(), simulate=True)
            print(*[f"{i.id}:{i.label}" for i in p.instances()])
            """
        )
        child = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "VAST_API_KEY": ""},
        )
        assert child.stdout.split() == [f"{instance_id}:rigdeck-simulated"]
        assert child.stderr == ""
    finally:
        stop_simulated_api()
