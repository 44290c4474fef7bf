"""`rigdeck cloud up/jobs/logs/pull/sync/ssh/finish` as a user types them: --local on this
machine, and a rented instance (the project's simulator, a real sshd) through the real SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cloud_jobs import SAMPLE, train_command
from support.sshd import SshdServer
from support.vast_sim import TEST_API_KEY

from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.cloud.ssh_keys import ensure_key_pair
from rigdeck.core.economics.energy_log import EnergyLog
from rigdeck.tui.cli import main

LOCAL_SPEC = """\
name = "{name}"
[run]
command = "{command}"
[artifacts]
pull = ["out/"]
"""


def _spec(folder: Path, name: str, command: str, text: str = LOCAL_SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_bytes((SAMPLE / "train.py").read_bytes())
    path = folder / f"{name}.toml"
    path.write_text(text.format(name=name, command=command.replace('"', '\\"')))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_local_up_follow_runs_the_sample_here_and_every_command_reads_it(tmp_path, capsys):
    spec = _spec(tmp_path / "proj", "tiny", train_command("--steps", "6", "--ckpt-every", "3"))
    code, out, err = _run(capsys, "cloud", "up", str(spec), "--local", "--follow", "--json")
    assert code == 0, err
    first_json = out.index("{\n")
    lines, answer = out[:first_json].splitlines(), json.loads(out[first_json:])
    assert [line for line in lines if line.startswith("step ")][-1].startswith("step 6 loss")
    assert answer["instance"] == "local" and answer["remote_dir"] == str(spec.parent)
    assert answer["finish"]["exit_code"] == 0 and answer["finish"]["action"] == "local"
    job = answer["job"]
    # The rehearsal was metered: `rigdeck cost job` costs "here" from this record.
    energy = EnergyLog().for_ref("job", job)
    assert energy is not None and energy.seconds > 0 and energy.kwh_figure().value > 0

    code, out, _ = _run(capsys, "cloud", "jobs", "--json")
    rows = json.loads(out)["jobs"]
    assert code == 0 and [r["id"] for r in rows] == [job]
    row = rows[0]
    assert set(row) >= {"id", "name", "state", "instance", "exit_code", "usd", "remote_dir",
                        "started_at"}  # fmt: skip
    assert (row["state"], row["exit_code"], row["usd"], row["name"]) == ("done", 0, 0.0, "tiny")

    code, out, _ = _run(capsys, "cloud", "logs", "tiny")  # a name means its newest job
    assert code == 0 and "step 6 loss" in out and "[rigdeck] command ended (exit code 0)" in out
    code, tail, _ = _run(capsys, "cloud", "logs", job, "--from", str(len(out.encode()) - 40))
    assert code == 0 and tail.strip() and tail.strip() in out

    code, out, _ = _run(capsys, "cloud", "pull", job, "--to", str(tmp_path / "got"), "--json")
    files = {f["path"]: f for f in json.loads(out)["files"]}
    assert code == 0 and "out/ckpt/step-000006/state.pt" in files
    assert all(f["verified"] and len(f["sha256"]) == 64 for f in files.values())
    assert (tmp_path / "got" / "out" / "ckpt" / "step-000006" / "COMPLETE").exists()


def test_logs_follow_exits_with_the_jobs_exit_code(tmp_path, capsys):
    spec = _spec(tmp_path / "proj", "fails", 'echo "step 1 loss 3.0"; sleep 0.3; exit 3')
    code, out, _ = _run(capsys, "cloud", "up", str(spec), "--local", "--json")
    assert code == 0
    job = json.loads(out)["job"]
    code, out, err = _run(capsys, "cloud", "logs", job, "--follow")
    assert code == 3
    assert "step 1 loss 3.0" in out and "stream ended" in err


def test_a_malformed_spec_names_file_line_column_and_key_and_rents_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[run]\ncommand = "true"\n[budget]\non_finish = "explode"\n')
    with Simulator(api_key=TEST_API_KEY) as sim:
        config = _config(tmp_path, sim, user="root")
        code, out, err = _run(capsys, "--config", str(config), "cloud", "up", str(bad), "--yes")
        assert sim.create_count == 0
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"{bad}:5:1: budget.on_finish" in err.replace("\n", "")


# -- a rented instance ----------------------------------------------------------------------


def _config(tmp_path: Path, sim: Simulator, *, user: str) -> Path:
    key = tmp_path / "vast_api_key"
    key.write_text(TEST_API_KEY)
    key.chmod(0o600)
    config = tmp_path / "rigdeck.toml"
    config.write_text(
        f'[cloud]\napi_url = "{sim.url}"\napi_key_file = "{key}"\nssh_user = "{user}"\n'
    )
    return config


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[Simulator, SshdServer, Path]]:
    sshd = SshdServer(tmp_path).start()
    sshd.authorize(ensure_key_pair().public_key)  # the user's own key, as rigdeck makes it
    sim = Simulator(seed=0, created_s=0.05, loading_s=0.1, api_key=TEST_API_KEY)
    sim.start()
    done = threading.Event()

    def point_instances_at_sshd() -> None:
        # The provider gives each new instance an SSH address: this machine's sshd.
        while not done.wait(0.02):
            for inst in sim.instances():
                if inst.get("ssh_host") is None:
                    sim.set_ssh(int(inst["id"]), sshd.host, sshd.port)

    thread = threading.Thread(target=point_instances_at_sshd, daemon=True)
    thread.start()
    try:
        yield sim, sshd, _config(tmp_path, sim, user=sshd.user)
    finally:
        done.set()
        thread.join()
        sim.stop()
        sshd.close()


def test_rented_job_through_every_command(tmp_path, capsys, cloud):
    sim, _sshd, config = cloud
    remote = tmp_path / "remote" / "tiny"
    text = LOCAL_SPEC.replace("[run]\n", f'[run]\nremote_dir = "{remote}"\n')
    text += '[offer]\nquery = "num_gpus>=1"\n'
    spec = _spec(
        tmp_path / "proj", "tiny", train_command("--steps", "4", "--ckpt-every", "2"), text
    )
    base = ("--config", str(config), "cloud")

    code, out, err = _run(capsys, *base, "up", str(spec), "--yes", "--json", "--no-guard")
    assert code == 0, err
    started = json.loads(out)
    assert set(started) == {"job", "instance", "state", "remote_dir"}
    assert started["state"] == "running" and started["remote_dir"] == str(remote)
    job = started["job"]
    assert [int(i["id"]) for i in sim.instances()] == [started["instance"]]

    code, out, _ = _run(capsys, *base, "logs", job, "--follow")
    assert code == 0 and "step 4 loss" in out

    code, out, _ = _run(capsys, *base, "pull", job, "--json")
    files = json.loads(out)["files"]
    assert code == 0 and files and all(f["verified"] for f in files)

    (spec.parent / "extra.txt").write_text("added after the start\n")
    code, _, err = _run(capsys, *base, "sync", job)
    assert code == 0 and "synced" in err
    shell = subprocess.run(
        [sys.executable, "-m", "rigdeck.tui.cli", *base, "ssh", job, "--", "cat", "extra.txt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == "added after the start\n"

    code, out, _ = _run(capsys, *base, "finish", job, "--yes", "--json")
    done = json.loads(out)
    assert code == 0 and done["action"] == "destroyed" and done["exit_code"] == 0
    assert sim.instances() == []
    code, out, _ = _run(capsys, *base, "jobs", "--json")
    row = json.loads(out)["jobs"][0]
    assert row["state"] == "destroyed" and row["usd"] > 0 and row["instance"] == started["instance"]


def test_up_without_yes_asks_and_a_no_rents_nothing(tmp_path, capsys, cloud, monkeypatch):
    sim, _sshd, config = cloud
    spec = _spec(tmp_path / "proj", "ask", "true", LOCAL_SPEC + '[offer]\nquery = "num_gpus>=1"\n')
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("n\n"))
    code, _, err = _run(capsys, "--config", str(config), "cloud", "up", str(spec))
    assert code == 1 and "Rent offer" in err and "not rented" in err
    assert sim.create_count == 0
