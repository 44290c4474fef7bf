"""A job spec end to end on a rented instance: the real vastai SDK against the project's
simulator, a real OpenSSH sshd as the instance, rsync, the sample training script.

spec -> rent -> sync -> run -> logs -> pull -> verify -> destroy, and the faults around it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cloud_jobs import PYTHON, JobRig, job_rig, train_command
from support.cloud_money import assert_in_agreement

from rigdeck.core.cloud.host_keys import HostKeyChanged
from rigdeck.core.cloud.jobs.finish import finish
from rigdeck.core.cloud.jobs.follow import follow
from rigdeck.core.cloud.jobs.resume import continue_job
from rigdeck.core.cloud.jobs.runner import run_job
from rigdeck.core.cloud.jobs.up import up
from rigdeck.core.cloud.readiness import InstanceFailed


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[JobRig]:
    with job_rig(tmp_path) as made:
        yield made


def sshd_down_for(rig: JobRig, seconds: float) -> None:
    """sshd restarted on the instance, with a gap in which nothing answers on its port."""
    rig.sshd.stop()
    time.sleep(seconds)
    rig.sshd.start()


def _lines_with(lines: list[str], pattern: str) -> list[str]:
    return [line for line in lines if re.search(pattern, line)]


def test_spec_to_destroy_pulls_verified_artifacts_and_charts_every_step(rig: JobRig):
    spec = rig.spec(train_command("--steps", "30", "--ckpt-every", "10"))
    lines: list[str] = []
    result = run_job(rig.ctx, spec, on_lines=lines.extend)

    job = result.job
    assert result.finish is not None
    assert result.finish.action == "destroyed"
    assert job.state == "destroyed" and job.exit_code == 0
    # Logs: every step once, in order, and the chart has one point per step.
    steps = [int(m.group(1)) for m in map(re.compile(r"^step (\d+) loss").match, lines) if m]
    assert steps == list(range(1, 31))
    assert result.follow.series is not None
    assert [s for s, _ in result.follow.series.points("loss")] == list(range(1, 31))
    # Artifacts: here, each one's sha256 equal to the instance's, the final checkpoint included.
    files = {f.path: f for f in result.finish.files}
    final = "out/ckpt/step-000030/state.pt"
    assert final in files and all(f.verified for f in files.values())
    local = rig.ctx.job_home(job.id) / "artifacts" / final
    assert hashlib.sha256(local.read_bytes()).hexdigest() == files[final].remote_sha256
    assert "step 30 loss" in result.finish.log_path.read_text()
    # Money and machines: destroyed only after the verify, nothing left billing.
    assert rig.sim.instances() == []
    assert_in_agreement(rig.ledger, rig.sim)
    assert job.usd > 0
    kinds = rig.kinds()
    assert kinds.index("sync_plan") < kinds.index("synced") < kinds.index("started")
    assert kinds.index("artifacts") < kinds.index("destroyed")
    phases = [e.data["phase"] for e in rig.events if e.kind == "phase"]
    assert phases == ["scheduled", "loading image", "sshd answering", "shell works"]
    plan = next(e for e in rig.events if e.kind == "sync_plan")
    assert plan.data["files"] >= 2 and plan.data["bytes"] > 0


def test_link_cut_mid_stream_and_sshd_restart_lose_and_double_no_line(rig: JobRig):
    # A shell job printing numbered lines; its link is cut (a cut may heal unseen, on the next
    # call), then sshd goes down for a while and comes back: that the stream must say.
    count = 120
    command = (
        f'i=1; while [ $i -le {count} ]; do echo "step $i loss 1.$i"; i=$((i+1)); sleep 0.02; done'
    )
    spec = rig.spec(command, name="lines", on_finish="keep")
    job = up(rig.ctx, spec)
    lines: list[str] = []
    cuts = {"done": 0}

    def cut(batch: list[str]) -> None:
        lines.extend(batch)
        if cuts["done"] == 0 and len(lines) >= 20:
            cuts["done"] = 1
            rig.sshd.cut_connections()
        elif cuts["done"] == 1 and len(lines) >= 50:
            cuts["done"] = 2
            threading.Thread(target=sshd_down_for, args=(rig, 0.6)).start()

    outcome = follow(rig.ctx, job, on_lines=cut)
    assert outcome.exit_code == 0
    assert cuts["done"] == 2
    numbered = _lines_with(lines, r"^step \d+ loss")
    assert numbered == [f"step {i} loss 1.{i}" for i in range(1, count + 1)]
    kinds = rig.kinds()
    assert "reconnecting" in kinds and "reconnected" in kinds and kinds[-1] == "stream_ended"
    done = finish(rig.ctx, outcome.job)
    assert done.action == "kept" and done.job.state == "done"


def test_changed_host_key_is_refused_and_the_job_keeps_running(rig: JobRig):
    spec = rig.spec("sleep 30", name="pinned", on_finish="keep")
    job = up(rig.ctx, spec)
    rig.sshd.change_host_key()
    with pytest.raises(HostKeyChanged, match="changed: refusing to connect"):
        follow(rig.ctx, job)
    assert rig.ctx.store.get(job.id).state == "running"
    assert rig.host_keys.pinned(job.target)  # the old pin stands
    kill_job(job)


def kill_job(job) -> None:
    """End a job left running on the test machine (the instance's sshd runs here)."""
    pid = int((Path(job.job_dir) / "job.pid").read_text())
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_link_cut_mid_sync_resumes_and_the_job_sees_every_byte(rig: JobRig):
    big = rig.project / "data.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    cut = threading.Event()

    def cut_once(event) -> None:
        if event.kind == "sync_progress" and not cut.is_set():
            cut.set()
            rig.sshd.cut_connections()

    rig.hooks.append(cut_once)
    ctx = rig.context(sync_bwlimit_kbps=4000)
    spec = rig.spec("mkdir -p out && sha256sum data.bin > out/sum.txt", name="bulk")
    result = run_job(ctx, spec)
    assert cut.is_set()
    assert any(e.kind == "reconnecting" and "sync cut" in e.message for e in rig.events)
    assert result.finish is not None and result.finish.action == "destroyed"
    pulled = rig.ctx.job_home(result.job.id) / "artifacts" / "out" / "sum.txt"
    assert pulled.read_text().split()[0] == want
    assert rig.sim.instances() == []


def test_preempted_mid_job_resumes_from_the_last_verified_checkpoint(rig: JobRig):
    spec = rig.spec(
        train_command("--steps", "40", "--ckpt-every", "10", "--step-delay", "0.05"),
        name="bid",
        interruptible=True,
    )
    taken: list[int] = []

    def take_machine(event) -> None:
        # The first verified checkpoint is here: a higher bid takes the machine. Its processes
        # die and a new machine starts without its disk.
        if event.kind == "checkpoint" and not taken:
            job = rig.store.get(event.job_id)
            taken.append(job.target)
            rig.sim.outbid(job.target)
            kill_job(job)
            shutil.rmtree(rig.remote)

    rig.hooks.append(take_machine)
    lines: list[str] = []
    result = run_job(rig.ctx, spec, on_lines=lines.extend)

    assert result.follow.recoveries == 1 and result.follow.exit_code == 0
    job = result.job
    assert job.attempt == 2 and job.target != taken[0]
    resumed = _lines_with(lines, r"^resumed from .*step-0000(10|20) at step (10|20)$")
    assert len(resumed) == 1
    # The chart: every step once, though the resumed run repeated some.
    assert [s for s, _ in result.follow.series.points("loss")] == list(range(1, 41))
    assert result.finish is not None and result.finish.verified
    assert "out/ckpt/step-000040/state.pt" in {f.path for f in result.finish.files}
    # Both machines destroyed through the ledger, each step of the recovery written down.
    assert rig.sim.instances() == []
    assert_in_agreement(rig.ledger, rig.sim)
    closed = {i.id: i.closed_reason for i in rig.ledger.instances()}
    assert "preempted" in closed[taken[0]]
    details = [e.detail for e in rig.ledger.events() if e.action == "job"]
    assert any("preempted" in d for d in details) and any("recovering" in d for d in details)
    assert any("resuming from out/ckpt/step-" in d for d in details)


def test_a_failed_job_keeps_its_log_and_artifacts_here(rig: JobRig):
    command = 'mkdir -p out && echo partial > out/result.txt && echo "step 1 loss 9.5" && exit 3'
    spec = rig.spec(command, name="fails")
    result = run_job(rig.ctx, spec)
    assert result.follow.exit_code == 3
    assert result.finish is not None
    job = rig.store.get(result.job.id)
    assert (job.exit_code == 3 and job.error is None) or "exit code 3" in (job.error or "")
    home = rig.ctx.job_home(job.id)
    assert (home / "artifacts" / "out" / "result.txt").read_text() == "partial\n"
    log = (home / "job.log").read_text()
    assert "step 1 loss 9.5" in log and "exit code 3" in log
    assert result.finish.action == "destroyed"  # only after the artifact verified


def test_an_instance_that_cannot_start_is_destroyed_at_once(rig: JobRig):
    rig.sim.never_ready(msg="Error response from daemon: pull access denied for rigdeck/test")
    spec = rig.spec("true", name="badimage")
    with pytest.raises(InstanceFailed, match="pull access denied"):
        up(rig.ctx, spec)
    job = rig.store.list()[0]
    assert job.state == "failed" and "pull access denied" in (job.error or "")
    assert rig.sim.instances() == []
    assert_in_agreement(rig.ledger, rig.sim)


def test_torchrun_spreads_the_job_over_the_processes_the_spec_asks_for(rig: JobRig):
    command = (
        f"{PYTHON} -m torch.distributed.run --standalone --nproc-per-node={{nproc}} "
        "train.py --out out --steps 8 --ckpt-every 4"
    )
    spec = rig.spec(command, name="ddp", extra_run="nproc = 2")
    lines: list[str] = []
    result = run_job(rig.ctx, spec, on_lines=lines.extend)
    assert result.follow.exit_code == 0, "\n".join(lines[-20:])
    assert _lines_with(lines, r"\{nproc\}=2")
    assert _lines_with(lines, r"training \d+ parameters on 2 x cpu")
    assert [s for s, _ in result.follow.series.points("loss")] == list(range(1, 9))


class Crash(BaseException):
    """rigdeck killed at this point (nothing after it runs, no handler sees it)."""


@pytest.mark.parametrize("at", ["rented", "synced"])
def test_a_crash_mid_up_is_taken_on_from_the_stored_state_renting_nothing_twice(rig: JobRig, at):
    def crash(event) -> None:
        if event.kind == at:
            raise Crash(at)

    rig.hooks.append(crash)
    spec = rig.spec('mkdir -p out && echo "step 1 loss 1.5" | tee out/log.txt', name="crashy")
    with pytest.raises(Crash):
        up(rig.ctx, spec)
    rig.hooks.clear()
    job = rig.store.list()[0]
    assert job.state == ("provisioning" if at == "rented" else "syncing")

    job = continue_job(rig.ctx, job)
    assert job.state == "running"
    outcome = follow(rig.ctx, job)
    result = finish(rig.ctx, outcome.job)
    assert result.job.exit_code == 0 and result.action == "destroyed"
    assert rig.sim.create_count == 1  # the instance rented before the crash was the one used
    assert rig.sim.instances() == []
    assert_in_agreement(rig.ledger, rig.sim)


SHELL_RESUMABLE = (
    'if [ -n "$RIGDECK_RESUME_FROM" ]; then echo "resumed from $RIGDECK_RESUME_FROM"; exit 0; fi; '
    "mkdir -p out/ckpt/step-1 && echo weights > out/ckpt/step-1/w && "
    'touch out/ckpt/step-1/COMPLETE && echo "step 1 loss 1.0" && sleep 60'
)


def test_with_the_wait_policy_an_outbid_instance_that_runs_again_is_used_again(rig: JobRig):
    ctx = rig.context(on_preempt="wait")
    spec = rig.spec(SHELL_RESUMABLE, name="waits", interruptible=True)

    def outbid_then_rebid(event) -> None:
        job = rig.store.get(event.job_id)
        if event.kind == "checkpoint" and job.attempt == 1:
            rig.sim.outbid(job.target)
            kill_job(job)
        elif event.kind == "preempted":
            rig.provider.change_bid(job.target, 50.0)  # the user outbids the outbidder

    rig.hooks.append(outbid_then_rebid)
    lines: list[str] = []
    result = run_job(ctx, spec, on_lines=lines.extend)
    assert result.follow.recoveries == 1 and result.follow.exit_code == 0
    assert rig.sim.create_count == 1  # no second rental: the same machine came back
    assert any(line.endswith("/out/ckpt/step-1") and "resumed from" in line for line in lines)
    assert result.job.attempt == 2 and result.job.state == "destroyed"
    assert rig.sim.instances() == []
