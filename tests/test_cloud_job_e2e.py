"""A job spec end to end on a rented instance: the real vastai SDK against the project's
simulator, a real OpenSSH sshd as the instance, rsync, the sample training script.

spec -> rent -> sync -> run -> logs -> pull -> verify -> destroy, and the faults around it.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cloud_jobs import JobRig, job_rig, train_command
from support.cloud_money import assert_in_agreement

from rigdeck.core.cloud.host_keys import HostKeyChanged
from rigdeck.core.cloud.jobs.finish import finish
from rigdeck.core.cloud.jobs.follow import follow
from rigdeck.core.cloud.jobs.runner import run_job
from rigdeck.core.cloud.jobs.up import up


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[JobRig]:
    with job_rig(tmp_path) as made:
        yield made


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
    # A shell job printing numbered lines; the link is cut twice and sshd restarted once.
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
            threading.Thread(target=rig.sshd.restart).start()

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
