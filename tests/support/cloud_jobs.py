"""A rented GPU for job tests, made of real parts: the project's Vast simulator (real vastai SDK,
wall clock, phases of a fraction of a second), a real OpenSSH sshd on 127.0.0.1 that every
rented instance answers on, the ledger and the jobs store in a temp dir, and a project folder
holding the sample training script.

    rig = JobRig(tmp_path)            # or the `rig` fixture
    spec = rig.spec(command="...")    # a job spec file in the project folder, loaded
    job = up(rig.ctx, spec)
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rigdeck.core.cloud.host_keys import HostKeyStore
from rigdeck.core.cloud.jobs.context import JobContext, JobEvent, Timings
from rigdeck.core.cloud.jobs.lifecycle import JobStore
from rigdeck.core.cloud.jobs.spec import JobSpec, load_spec
from rigdeck.core.cloud.ledger import Ledger
from rigdeck.core.cloud.simulator import Simulator
from rigdeck.core.cloud.ssh_keys import ensure_key_pair
from support.sshd import SshdServer
from support.vast_sim import TEST_API_KEY, make_provider

SAMPLE = Path(__file__).resolve().parents[2] / "sample_configs" / "jobs"
PYTHON = sys.executable

FAST = Timings(
    log_poll_s=0.05,
    status_poll_s=0.2,
    instance_poll_s=0.2,
    checkpoint_poll_s=0.3,
    ready_timeout_s=60.0,
    ready_poll_s=0.05,
    reconnect_first_s=0.05,
    reconnect_max_s=0.5,
    resume_wait_s=5.0,
)

SPEC = """\
name = "{name}"
image = "rigdeck/test:1"
disk_gb = 10
[offer]
query = "num_gpus>=1"
interruptible = {interruptible}
[sync]
up = ["."]
exclude = [".git", "__pycache__", "out/"]
[run]
remote_dir = "{remote}"
command = "{command}"
{extra_run}
[artifacts]
pull = ["out/"]
checkpoint = "out/ckpt"
[budget]
on_finish = "{on_finish}"
"""


def train_command(*args: str) -> str:
    return " ".join([PYTHON, "train.py", "--out", "out", *args])


class JobRig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sshd = SshdServer(root).start()
        self.keys = ensure_key_pair(root / "keys")
        self.sshd.authorize(self.keys.public_key)
        self.sim = Simulator(seed=0, created_s=0.05, loading_s=0.1, api_key=TEST_API_KEY)
        self.sim.start()
        self.provider = make_provider(self.sim)
        self.ledger = Ledger(root / "cloud" / "ledger.sqlite3")
        self.store = JobStore(root / "cloud" / "jobs.sqlite3")
        self.host_keys = HostKeyStore(root / "known_hosts")
        self.project = root / "project"
        self.project.mkdir()
        shutil.copy(SAMPLE / "train.py", self.project / "train.py")
        self.remote = root / "remote"
        self.events: list[JobEvent] = []
        self.hooks: list[Callable[[JobEvent], None]] = []
        self._lock = threading.Lock()
        self.ctx = self.context()

    def context(self, **changes: Any) -> JobContext:
        options: dict[str, Any] = {
            "store": self.store,
            "provider": self.provider,
            "ledger": self.ledger,
            "keys": self.keys,
            "host_keys": self.host_keys,
            "ssh_user": self.sshd.user,
            "local_jobs_root": self.root / "local-jobs",
            "home_root": self.root / "home",
            "timings": FAST,
            "on_event": self._heard,
        }
        options.update(changes)
        return JobContext(**options)

    def _heard(self, event: JobEvent) -> None:
        with self._lock:
            self.events.append(event)
        if event.kind == "rented":
            # Every instance of the simulated account is reached at this machine's sshd.
            self.sim.set_ssh(event.data["instance"], self.sshd.host, self.sshd.port)
        for hook in list(self.hooks):
            hook(event)

    def kinds(self) -> list[str]:
        with self._lock:
            return [e.kind for e in self.events]

    def spec(
        self,
        command: str,
        *,
        name: str = "tiny-gpt",
        on_finish: str = "destroy",
        interruptible: bool = False,
        extra_run: str = "",
    ) -> JobSpec:
        path = self.project / f"{name}.toml"
        path.write_text(
            SPEC.format(
                name=name,
                remote=self.remote / name,
                command=command.replace('"', '\\"'),
                on_finish=on_finish,
                interruptible=str(interruptible).lower(),
                extra_run=extra_run,
            )
        )
        return load_spec(path)

    def close(self) -> None:
        self.ctx.cancel.set()
        self.sim.stop()
        self.sshd.close()


@contextmanager
def job_rig(root: Path) -> Iterator[JobRig]:
    """A `JobRig` for the length of a ``with`` (a test module's fixture wraps it)."""
    made = JobRig(root)
    try:
        yield made
    finally:
        made.close()
