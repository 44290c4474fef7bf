"""The Vast API simulator, driven by the unmodified vastai SDK over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import pytest
import requests
from support import vast_sim
from support.vast_sim import TEST_API_KEY, FrozenClock, boot
from vastai import VastAI

from rigdeck.core.cloud.simulator import GPU_MODELS, Simulator

sim = vast_sim.sim  # the fixture, under its own name for the tests below

HOUR = 3600.0


def sdk(sim: Simulator, *, retry: int = 1, key: str = TEST_API_KEY) -> VastAI:
    return VastAI(api_key=key, server_url=sim.url, retry=retry)


def rent(sim: Simulator, offer_id: int | None = None, **body: object) -> int:
    if offer_id is None:
        offer_id = sdk(sim).search_offers("num_gpus=1", order="dph_total")[0]["id"]
    options = {"image": "pytorch/pytorch", "disk": 20.0, **body}
    return int(sdk(sim).create_instance(offer_id, **options)["new_contract"])


def admin(sim: Simulator, path: str, body: dict[str, object] | None = None) -> dict:
    request = urllib.request.Request(
        sim.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


# -- the market -----------------------------------------------------------------------------


def test_catalogue_is_seeded_and_varied():
    a, b, c = Simulator(seed=0).offers(), Simulator(seed=0).offers(), Simulator(seed=1).offers()
    assert a == b and a != c
    assert {o["gpu_name"] for o in a} == {m.name for m in GPU_MODELS}
    assert any(o["num_gpus"] > 1 for o in a)
    assert any(not o["verified"] for o in a) and any(not o["rentable"] for o in a)
    assert any(o["min_bid"] is None for o in a) and any(o["min_bid"] for o in a)
    for offer in a:
        assert offer["min_bid"] is None or offer["min_bid"] < offer["dph_base"]
        assert 0.0 < offer["reliability2"] <= 1.0 and offer["gpu_ram"] > 20_000


def test_query_syntax_filters_like_vast(sim):
    query = "gpu_ram>=24 num_gpus=1 reliability>0.98 gpu_name=RTX_4090"
    found = sdk(sim).search_offers(query, order="dph_total")
    expected = {
        o["id"]
        for o in sim.offers()
        if o["gpu_name"] == "RTX 4090"
        and o["num_gpus"] == 1
        and o["gpu_ram"] >= 24_000
        and o["reliability"] > 0.98
        and o["verified"]
        and o["rentable"]
    }
    assert expected and {o["id"] for o in found} == expected
    prices = [o["dph_total"] for o in found]
    assert prices == sorted(prices)


def test_gpu_ram_is_asked_in_gb_and_compared_in_mb(sim):
    found = sdk(sim).search_offers("gpu_ram>=40 verified=any rentable=any")
    assert found and all(o["gpu_ram"] >= 40_000 for o in found)
    smaller = [o for o in sim.offers() if o["gpu_ram"] < 40_000]
    assert smaller and not {o["id"] for o in smaller} & {o["id"] for o in found}


def test_default_search_hides_unverified_and_unrentable(sim):
    shown = sdk(sim).search_offers("", limit=1000)
    hidden = [o for o in sim.offers() if not o["verified"] or not o["rentable"]]
    assert hidden and not {o["id"] for o in hidden} & {o["id"] for o in shown}
    every = sdk(sim).search_offers("verified=any rentable=any", limit=1000)
    assert len(every) == len(sim.offers())


def test_bid_search_lists_interruptible_offers_by_min_bid(sim):
    found = sdk(sim).search_offers("num_gpus=1", type="bid", order="min_bid")
    assert found and all(o["min_bid"] is not None and o["is_bid"] for o in found)
    bids = [o["min_bid"] for o in found]
    assert bids == sorted(bids)


def test_dph_total_adds_the_allocated_storage(sim):
    offer = sim.add_offer(gpu_name="L40S", dph_base=0.80, storage_cost=0.36)
    found = sdk(sim).search_offers(f"id={offer['id']}", storage=100.0)
    assert found[0]["dph_total"] == pytest.approx(0.80 + 0.36 * 100 / 720)


def test_the_newer_search_endpoint_answers_the_same(sim):
    query = {"num_gpus": {"eq": "1"}, "verified": {"eq": True}, "rentable": {"eq": True}}
    order = [["dph_total", "asc"]]
    newer = sdk(sim).search_offers_new(query=query, order=order, no_default=True)
    older = sdk(sim).search_offers(query=query, order=order, no_default=True)
    assert newer and [o["id"] for o in newer] == [o["id"] for o in older]


def test_limit_and_added_offers(sim):
    assert len(sdk(sim).search_offers("", limit=3)) == 3
    added = sim.add_offer(gpu_name="H100 SXM", num_gpus=8, gpu_ram=81559, dph_base=17.5)
    found = sdk(sim).search_offers("num_gpus=8 gpu_name=H100_SXM")
    assert added["id"] in {o["id"] for o in found}


# -- instances ------------------------------------------------------------------------------


def test_instance_goes_created_loading_running_on_the_simulated_clock(sim):
    instance_id = rent(sim, label="rigdeck-life")
    seen = [sdk(sim).show_instance(instance_id)["actual_status"]]
    sim.advance(1.0)
    seen.append(sdk(sim).show_instance(instance_id)["actual_status"])
    sim.advance(3.0)
    row = sdk(sim).show_instance(instance_id)
    seen.append(row["actual_status"])
    assert seen == ["created", "loading", "running"]
    assert row["intended_status"] == "running" and row["label"] == "rigdeck-life"
    assert row["extra_env"] == {} and row["image_uuid"] == "pytorch/pytorch"


def test_phase_lengths_are_configurable():
    with Simulator(clock=FrozenClock(), created_s=10.0, loading_s=50.0) as slow:
        instance_id = rent(slow)
        slow.advance(59.0)
        assert sdk(slow).show_instance(instance_id)["actual_status"] == "loading"
        slow.advance(1.0)
        assert sdk(slow).show_instance(instance_id)["actual_status"] == "running"


def test_stop_start_label_and_destroy(sim):
    instance_id = rent(sim, env={"WANDB_MODE": "offline"}, onstart_cmd="echo hi")
    boot(sim)
    client = sdk(sim)
    client.stop_instance(instance_id)
    row = client.show_instance(instance_id)
    assert (row["actual_status"], row["intended_status"]) == ("stopped", "stopped")
    client.start_instance(instance_id)
    assert client.show_instance(instance_id)["actual_status"] == "loading"
    boot(sim)
    client.label_instance(instance_id, "renamed")
    row = client.show_instance(instance_id)
    assert row["actual_status"] == "running" and row["label"] == "renamed"
    assert row["extra_env"] == {"WANDB_MODE": "offline"} and row["onstart"] == "echo hi"
    client.destroy_instance(instance_id)
    assert client.show_instance(instance_id) is None
    assert client.show_instances() == []
    with pytest.raises(requests.HTTPError) as gone:
        client.destroy_instance(instance_id)
    assert gone.value.response.status_code == 404


def test_instance_list_pages_25_at_a_time(sim):
    ids = [rent(sim) for _ in range(63)]
    page = sdk(sim).show_instances_v1({"limit": 25})
    assert len(page["instances"]) == 25 and page["next_token"]
    assert page["total_instances"] == 63
    rows = sdk(sim).show_instances()
    assert [r["id"] for r in rows] == sorted(ids)
    lists = [r for r in sim.requests if r.op == "list"]
    assert len(lists) == 1 + 3  # the single page above, then three pages of 25, 25, 13


def test_paging_survives_a_destroy_between_pages(sim):
    ids = [rent(sim) for _ in range(30)]
    first = sdk(sim).show_instances_v1({"limit": 25})
    sdk(sim).destroy_instance(first["instances"][-1]["id"])
    rest = sdk(sim).show_instances_v1({"limit": 25, "after_token": first["next_token"]})
    assert [r["id"] for r in rest["instances"]] == sorted(ids)[25:]


def test_list_filters_by_label(sim):
    rent(sim, label="rigdeck-aaa")
    wanted = rent(sim, label="rigdeck-bbb")
    page = sdk(sim).show_instances_v1({"select_filters": {"label": {"eq": "rigdeck-bbb"}}})
    assert [r["id"] for r in page["instances"]] == [wanted]


def test_create_on_an_unavailable_offer_is_refused(sim):
    offer = sim.add_offer(rentable=False)
    with pytest.raises(requests.HTTPError) as refused:
        sdk(sim).create_instance(offer["id"], image="img", disk=10)
    assert refused.value.response.json()["error"] == "no_such_ask"
    assert sim.instances() == [] and sim.create_count == 1


def test_wrong_key_is_refused(sim):
    with pytest.raises(requests.HTTPError) as refused:
        sdk(sim, key="not-the-key").show_instances()
    assert refused.value.response.status_code == 401


# -- money ----------------------------------------------------------------------------------


def test_billing_by_the_second(sim):
    offer = sim.add_offer(dph_base=0.72, storage_cost=0.36)
    instance_id = rent(sim, offer["id"], disk=100.0)
    storage_hour = 0.36 * 100 / 720
    sim.advance(HOUR)
    assert sim.charges(instance_id) == pytest.approx(0.72 + storage_hour)
    sdk(sim).stop_instance(instance_id)
    sim.advance(HOUR)
    assert sim.charges(instance_id) == pytest.approx(0.72 + 2 * storage_hour)
    sdk(sim).start_instance(instance_id)
    sim.advance(90.0)
    spent = 0.72 * (HOUR + 90) / HOUR + storage_hour * (2 * HOUR + 90) / HOUR
    assert sim.charges(instance_id) == pytest.approx(spent)
    sdk(sim).destroy_instance(instance_id)
    sim.advance(HOUR)
    assert sim.charges(instance_id) == pytest.approx(spent)
    assert sdk(sim).show_user()["credit"] == pytest.approx(100.0 - spent, abs=1e-6)


def test_an_exited_or_offline_instance_bills_storage_only(sim):
    offer = sim.add_offer(dph_base=1.0, storage_cost=0.72)
    instance_id = rent(sim, offer["id"], disk=10.0)
    sim.set_state(instance_id, "exited", "the container stopped")
    sim.advance(HOUR)
    assert sim.charges(instance_id) == pytest.approx(0.72 * 10 / 720)
    row = sdk(sim).show_instance(instance_id)
    assert (row["actual_status"], row["status_msg"]) == ("exited", "the container stopped")


def test_user_credit_goes_down_as_instances_bill(sim):
    before = sdk(sim).show_user()["credit"]
    instance_id = rent(sim)
    sim.advance(2 * HOUR)
    after = sdk(sim).show_user()["credit"]
    assert before - after == pytest.approx(sim.charges(instance_id)) and after < before


# -- interruptible --------------------------------------------------------------------------


def test_outbid_and_rebid(sim):
    offer = sim.add_offer(dph_base=1.0, min_bid=0.40)
    instance_id = rent(sim, offer["id"], price=0.45)
    boot(sim)
    sim.outbid(instance_id, min_bid=0.60)
    row = sdk(sim).show_instance(instance_id)
    assert (row["actual_status"], row["intended_status"]) == ("stopped", "running")
    assert row["is_bid"] and row["min_bid"] == pytest.approx(0.60)
    sdk(sim).change_bid(instance_id, price=0.55)
    boot(sim)
    assert sdk(sim).show_instance(instance_id)["actual_status"] == "stopped"
    sdk(sim).change_bid(instance_id, price=0.65)
    boot(sim)
    row = sdk(sim).show_instance(instance_id)
    assert row["actual_status"] == "running" and row["dph_base"] == pytest.approx(0.65)


def test_a_bid_below_the_minimum_waits_stopped(sim):
    offer = sim.add_offer(min_bid=0.40)
    instance_id = rent(sim, offer["id"], price=0.30)
    boot(sim)
    row = sdk(sim).show_instance(instance_id)
    assert (row["actual_status"], row["intended_status"]) == ("stopped", "running")


def test_preempted_instance_resumes_on_start(sim):
    offer = sim.add_offer(min_bid=0.40)
    instance_id = rent(sim, offer["id"], price=0.50)
    boot(sim)
    sim.preempt(instance_id)
    assert sdk(sim).show_instance(instance_id)["actual_status"] == "stopped"
    sdk(sim).start_instance(instance_id)
    boot(sim)
    assert sdk(sim).show_instance(instance_id)["actual_status"] == "running"


# -- what a test sets -----------------------------------------------------------------------


def test_ssh_address_and_gpu_util(sim):
    instance_id = rent(sim)
    boot(sim)
    sim.set_ssh(instance_id, "127.0.0.1", 2222)
    sim.set_gpu_util(instance_id, 0.35)
    row = sdk(sim).show_instance(instance_id)
    assert (row["ssh_host"], row["ssh_port"]) == ("127.0.0.1", 2222)
    assert row["gpu_util"] == pytest.approx(35.0)
    assert sdk(sim).ssh_url(instance_id) == "ssh://root@127.0.0.1:2222"


def test_ssh_keys_registered_and_attached(sim):
    first = rent(sim)
    sdk(sim).create_ssh_key("ssh-ed25519 AAAAC3Nza account@host")
    assert [k["ssh_key"] for k in sdk(sim).show_ssh_keys()] == [
        "ssh-ed25519 AAAAC3Nza account@host"
    ]
    sdk(sim).attach_ssh(first, "ssh-ed25519 AAAAC3Nzb instance@host")
    later = rent(sim)
    keys = {i["id"]: i["ssh_keys"] for i in sim.instances()}
    assert keys[first] == ["ssh-ed25519 AAAAC3Nzb instance@host"]
    assert keys[later] == ["ssh-ed25519 AAAAC3Nza account@host"]


# -- faults ---------------------------------------------------------------------------------


def test_rate_limit_carries_retry_after(sim):
    sim.rate_limit(1, retry_after=7, op="list")
    with pytest.raises(requests.HTTPError) as limited:
        sdk(sim).show_instances()
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert sdk(sim).show_instances() == []


def test_storm_hits_only_its_op_and_runs_out(sim):
    sim.storm(2, status=502, op="search")
    assert sdk(sim).show_instances() == []
    for _ in range(2):
        with pytest.raises(requests.HTTPError) as failed:
            sdk(sim).search_offers("")
        assert failed.value.response.status_code == 502
    assert sdk(sim).search_offers("")


def test_create_never_answered_still_creates(sim):
    sim.create_never()
    with pytest.raises(requests.ConnectionError):
        rent(sim, label="rigdeck-lost")
    assert sim.create_count == 1
    assert [i["label"] for i in sim.instances()] == ["rigdeck-lost"]


def test_never_ready_stays_loading(sim):
    sim.never_ready(msg="Error response from daemon: pull access denied")
    instance_id = rent(sim)
    sim.advance(24 * HOUR)
    row = sdk(sim).show_instance(instance_id)
    assert row["actual_status"] == "loading"
    assert row["status_msg"] == "Error response from daemon: pull access denied"


def test_admin_http_injects_advances_and_sets_state(sim):
    instance_id = rent(sim)
    admin(sim, "/_sim/faults", {"kind": "http", "status": 503, "count": 1, "op": "show"})
    with pytest.raises(requests.HTTPError):
        sdk(sim).show_instance(instance_id)
    assert admin(sim, "/_sim/advance", {"seconds": 60})["now"] == pytest.approx(sim.now())
    admin(sim, "/_sim/state", {"id": instance_id, "state": "offline", "msg": "host down"})
    assert sdk(sim).show_instance(instance_id)["actual_status"] == "offline"
    admin(sim, "/_sim/gpu_util", {"id": instance_id, "util": 0.5})
    stats = admin(sim, "/_sim/stats")
    assert stats["create_count"] == 1 and stats["balance_usd"] < 100.0


# -- one account across processes ------------------------------------------------------------


def test_state_file_is_one_account_for_several_servers(tmp_path):
    path = tmp_path / "account.json"
    with Simulator(state_path=path) as one, Simulator(state_path=path) as two:
        assert one.url != two.url
        instance_id = rent(one, label="rigdeck-shared")
        assert [r["id"] for r in sdk(two).show_instances()] == [instance_id]
        two.advance(HOUR)
        assert one.now() == pytest.approx(two.now(), abs=1.0)
        two.create_never()
        with pytest.raises(requests.ConnectionError):
            rent(one)
        assert one.create_count == 2


def test_another_process_sees_and_steers_the_same_account(tmp_path):
    path = tmp_path / "account.json"
    script = textwrap.dedent(
        f"""
        from vastai import VastAI
        from rigdeck.core.cloud.simulator import Simulator
        with Simulator(state_path={str(path)!r}) as sim:
            client = VastAI(api_key="k", server_url=sim.url, retry=1)
            offer = client.search_offers("num_gpus=1")[0]["id"]
            made = client.create_instance(offer, image="img", disk=10, label="from-child")
            print(made["new_contract"])
            sim.advance(7200)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    created = int(child.stdout.strip())
    with Simulator(state_path=path) as here:
        assert [(i["id"], i["label"]) for i in here.instances()] == [(created, "from-child")]
        assert here.charges(created) > 0.0


def test_a_damaged_state_file_is_a_clear_500(tmp_path):
    path = tmp_path / "account.json"
    path.write_text("{not json")
    with Simulator(state_path=path) as damaged, pytest.raises(requests.HTTPError) as failed:
        sdk(damaged).show_instances()
    assert failed.value.response.status_code == 500
    assert "delete it to start afresh" in failed.value.response.json()["msg"]


def test_only_bids_can_be_outbid_or_preempted(sim):
    instance_id = rent(sim)
    with pytest.raises(ValueError, match="on-demand"):
        sim.outbid(instance_id)
    with pytest.raises(ValueError, match="on-demand"):
        sim.preempt(instance_id)
