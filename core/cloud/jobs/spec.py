"""The job spec: one TOML file that runs unchanged on this machine or on a rented GPU.

Every key is declared once in ``SCHEMA`` with its doc; the dataclasses below are what the rest of
rigdeck reads. A broken spec raises `JobSpecError` with one line naming ``file:line:col`` and the
key, so a user fixes it without guessing. Paths in ``[sync]`` are resolved against the spec's
folder; paths in ``[artifacts]`` are relative to the folder the job runs in.
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Literal

from rigdeck.core.cloud.provider import OFFER_SORTS, OfferSort
from rigdeck.core.config import PROJECT_TAG_RULE, is_project_tag, toml_location, toml_reason
from rigdeck.core.errors import RigdeckError

OnFinish = Literal["destroy", "stop", "keep"]
ON_FINISH: tuple[OnFinish, ...] = ("destroy", "stop", "keep")

PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "num_gpus": "GPUs on the machine running the job (nvidia-smi -L; 0 without GPUs)",
        "nproc": "processes to start: run.nproc if set, else the GPU count, at least 1",
        "remote_dir": "the folder the job runs in (run.remote_dir; the spec's folder with --local)",
        "job": "the job id (also in $RIGDECK_JOB)",
        "name": "the spec's name",
    }
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JobSpecError(RigdeckError):
    """A job spec could not be read; the message names file, line, column and key."""


@dataclass(frozen=True)
class OfferSpec:
    """Which rental offers qualify when ``up`` picks one itself."""

    query: str = ""
    sort: OfferSort = "price"
    max_dph: float | None = None
    interruptible: bool = False


@dataclass(frozen=True)
class SyncSpec:
    """What goes up to the machine before the job starts."""

    up: tuple[Path, ...] = ()
    """Absolute local paths (the spec's folder when the key is absent)."""
    exclude: tuple[str, ...] = (".git", "__pycache__", ".venv")
    gitignore: bool = True


@dataclass(frozen=True)
class RunSpec:
    command: str
    """The command template; `render_command` fills its placeholders."""
    remote_dir: str
    setup: str = ""
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    nproc: int | None = None


@dataclass(frozen=True)
class ArtifactsSpec:
    pull: tuple[str, ...] = ()
    """POSIX paths relative to the job's folder; a trailing / marks a folder."""
    checkpoint: str | None = None


@dataclass(frozen=True)
class BudgetSpec:
    max_usd: float | None = None
    max_hours: float | None = None
    on_finish: OnFinish = "destroy"


@dataclass(frozen=True)
class JobSpec:
    name: str
    path: Path
    """The spec file, absolute."""
    run: RunSpec
    image: str | None = None
    """None: [cloud] image from the config."""
    disk_gb: float | None = None
    """None: [cloud] disk_gb from the config."""
    offer: OfferSpec = field(default_factory=OfferSpec)
    sync: SyncSpec = field(default_factory=SyncSpec)
    artifacts: ArtifactsSpec = field(default_factory=ArtifactsSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    project: str = ""
    """The project tag its rentals carry ("" untagged): spend and budgets per project."""

    @property
    def root(self) -> Path:
        """The spec's folder: what relative paths in the spec mean, and where --local runs."""
        return self.path.parent


Kind = Literal["str", "int", "float", "bool", "str_list", "str_table"]


@dataclass(frozen=True)
class KeyDoc:
    kind: Kind
    doc: str
    required: bool = False


SCHEMA: Mapping[str, Mapping[str, KeyDoc]] = MappingProxyType(
    {
        "": {
            "name": KeyDoc("str", "Job name: letters, digits, . _ - (up to 64).", required=True),
            "image": KeyDoc("str", "Docker image for a rental. Absent: [cloud] image."),
            "disk_gb": KeyDoc("float", "Disk for a rental, in GB. Absent: [cloud] disk_gb."),
            "project": KeyDoc(
                "str", "Project tag of its rentals (budgets: [cloud.projects.TAG]). Absent: none."
            ),
        },
        "offer": {
            "query": KeyDoc("str", "Offer filter in Vast query syntax, e.g. gpu_ram>=16."),
            "sort": KeyDoc("str", "Best offer first by: " + ", ".join(OFFER_SORTS) + "."),
            "max_dph": KeyDoc("float", "Highest $/hour accepted. Absent: no limit."),
            "interruptible": KeyDoc("bool", "Rent interruptible (cheaper, can be preempted)."),
        },
        "sync": {
            "up": KeyDoc("str_list", "Local paths sent up, relative to the spec's folder."),
            "exclude": KeyDoc("str_list", "rsync patterns never sent."),
            "gitignore": KeyDoc("bool", "Also leave out what .gitignore files ignore."),
        },
        "run": {
            "remote_dir": KeyDoc(
                "str", "Absolute folder on the rental. Absent: /workspace/<name>."
            ),
            "setup": KeyDoc(
                "str", "Shell command run first, in that folder; failing ends the job."
            ),
            "command": KeyDoc("str", "Shell command of the job; placeholders in braces.", True),
            "env": KeyDoc("str_table", "Environment for setup and command (string values)."),
            "nproc": KeyDoc("int", "Value of {nproc}. Absent: the GPU count, at least 1."),
        },
        "artifacts": {
            "pull": KeyDoc("str_list", "Paths pulled back when the job ends (job-relative)."),
            "checkpoint": KeyDoc("str", "Checkpoint folder pulled while running; resume point."),
        },
        "budget": {
            "max_usd": KeyDoc("float", "Stop spending at this many $ for the job."),
            "max_hours": KeyDoc("float", "Stop after this many hours of rental."),
            "on_finish": KeyDoc("str", "After the job: " + ", ".join(ON_FINISH) + " the rental."),
        },
    }
)


def load_spec(path: str | Path) -> JobSpec:
    """Read and check a job spec. Raises `JobSpecError` naming file:line:col and the key."""
    spec_path = Path(path).expanduser().resolve()
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobSpecError(f"{spec_path}: no such job spec") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError(f"{spec_path}: cannot read: {exc}") from None
    return parse_spec(text, spec_path)


def parse_spec(text: str, path: Path) -> JobSpec:
    """Check spec ``text`` as if read from ``path`` (which anchors its relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"{path}:{toml_location(exc)}: {toml_reason(exc)}") from None
    reader = _Reader(text, path)
    values = reader.check(data)
    return reader.build(values)


class _Reader:
    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path
        self.lines = text.splitlines()

    def fail(self, section: str, key: str | None, reason: str) -> JobSpecError:
        line, col = self.locate(section, key)
        dotted = ".".join(p for p in (section, key) if p)
        return JobSpecError(f"{self.path}:{line}:{col}: {dotted}: {reason}")

    def locate(self, section: str, key: str | None) -> tuple[int, int]:
        """Line and column of a key (1-based), by reading the text: tomllib keeps no positions."""
        headers = [i for i, t in enumerate(self.lines) if re.match(r"^\s*\[", t)]
        header = None
        if section:
            pattern = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\]")
            header = next((i for i in headers if pattern.match(self.lines[i])), None)
            if key is None and header is not None:
                return header + 1, self.lines[header].index("[") + 1
        searches: list[tuple[range, str]] = []
        if not section:
            searches.append((range(headers[0] if headers else len(self.lines)), key or ""))
        elif header is not None and key is not None:
            end = next((i for i in headers if i > header), len(self.lines))
            searches.append((range(header + 1, end), key))
        if section:
            # `run.command = ...` at the top, or `run = { command = ... }`.
            dotted = f"{section}.{key}" if key else section
            searches.append((range(len(self.lines)), dotted))
            if key is not None:
                searches.append((range(len(self.lines)), key))
        for lines, name in searches:
            if not name:
                continue
            found = re.compile(rf"(?:^|[\s{{,])(?P<key>[\"']?{re.escape(name)}[\"']?\s*[=.])")
            for i in lines:
                if self.lines[i].lstrip().startswith("#"):
                    continue
                match = found.search(self.lines[i])
                if match:
                    return i + 1, match.start("key") + 1
        if not section and key:
            table = re.compile(rf"^\s*\[+\s*[\"']?{re.escape(key)}[\"']?\s*[\].]")
            header = next((i for i in headers if table.match(self.lines[i])), None)
        if header is not None:
            return header + 1, self.lines[header].index("[") + 1
        return 1, 1

    def check(self, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        values: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
        for key, value in data.items():
            if key in SCHEMA and key:
                if not isinstance(value, dict):
                    raise self.fail(key, None, f"expected a table ([{key}]), got {value!r}")
                for sub, subvalue in value.items():
                    values[key][sub] = self.check_key(key, sub, subvalue)
            else:
                values[""][key] = self.check_key("", key, value)
        for section, keys in SCHEMA.items():
            for key, doc in keys.items():
                if doc.required and key not in values[section]:
                    line, col = self.locate(section, None) if section else (1, 1)
                    dotted = f"{section}.{key}" if section else key
                    where = f"[{section}]" if section else "the top of the file"
                    raise JobSpecError(
                        f"{self.path}:{line}:{col}: {dotted}: missing; add {key} = ... to {where}"
                    )
        return values

    def check_key(self, section: str, key: str, value: Any) -> Any:
        known = SCHEMA[section]
        if key not in known:
            names = list(known) + ([s for s in SCHEMA if s] if not section else [])
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {names}"
            where = f"[{section}]" if section else "the top level"
            raise self.fail(section, key, f"unknown key {key!r} in {where}{hint}")
        kind = known[key].kind
        if kind == "str" and not isinstance(value, str):
            raise self.fail(section, key, f"expected a string, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise self.fail(section, key, f"expected true or false, got {value!r}")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(section, key, f"expected a whole number, got {value!r}")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self.fail(section, key, f"expected a number, got {value!r}")
        if kind == "str_list" and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            raise self.fail(section, key, f"expected a list of strings, got {value!r}")
        if kind == "str_table":
            if not isinstance(value, dict):
                raise self.fail(section, key, f"expected a table of strings, got {value!r}")
            for name, item in value.items():
                if not isinstance(item, str):
                    raise self.fail(
                        section, key, f"{name}: expected a string (quote it), got {item!r}"
                    )
        return float(value) if kind == "float" else value

    def build(self, v: dict[str, dict[str, Any]]) -> JobSpec:
        top, offer, sync, run, art, budget = (
            v[s] for s in ("", "offer", "sync", "run", "artifacts", "budget")
        )
        name = top["name"]
        if not _NAME.match(name):
            raise self.fail("", "name", "use letters, digits, '.', '_' or '-' (up to 64)")
        image = top.get("image")
        if image is not None and not image.strip():
            raise self.fail("", "image", "must not be empty (leave the key out for the default)")
        disk_gb = top.get("disk_gb")
        if disk_gb is not None and not 1 <= disk_gb <= 100_000:
            raise self.fail("", "disk_gb", f"expected 1 to 100000 GB, got {disk_gb!r}")
        project = top.get("project", "")
        if "project" in top and not is_project_tag(project):
            raise self.fail("", "project", f"{project!r} is not a project tag; {PROJECT_TAG_RULE}")
        return JobSpec(
            name=name,
            path=self.path,
            image=image,
            disk_gb=disk_gb,
            offer=self.build_offer(offer),
            sync=self.build_sync(sync),
            run=self.build_run(run, name),
            artifacts=self.build_artifacts(art),
            budget=self.build_budget(budget),
            project=project,
        )

    def positive(self, section: str, key: str, values: Mapping[str, Any]) -> float | None:
        value = values.get(key)
        if value is not None and not value > 0:
            raise self.fail(section, key, f"expected a number above 0, got {value!r}")
        return value

    def build_offer(self, v: Mapping[str, Any]) -> OfferSpec:
        sort = v.get("sort", "price")
        if sort not in OFFER_SORTS:
            raise self.fail(
                "offer", "sort", f"expected one of {', '.join(OFFER_SORTS)}, got {sort!r}"
            )
        return OfferSpec(
            query=v.get("query", ""),
            sort=sort,
            max_dph=self.positive("offer", "max_dph", v),
            interruptible=v.get("interruptible", False),
        )

    def build_sync(self, v: Mapping[str, Any]) -> SyncSpec:
        raw = v.get("up", ["."])
        if not raw:
            raise self.fail("sync", "up", 'list at least one path ("." is the spec\'s folder)')
        up = []
        for item in raw:
            resolved = (self.path.parent / Path(item).expanduser()).resolve()
            if not resolved.exists():
                raise self.fail("sync", "up", f"{item!r} does not exist (looked at {resolved})")
            up.append(resolved)
        exclude = v.get("exclude", list(SyncSpec.exclude))
        return SyncSpec(up=tuple(up), exclude=tuple(exclude), gitignore=v.get("gitignore", True))

    def build_run(self, v: Mapping[str, Any], name: str) -> RunSpec:
        remote_dir = v.get("remote_dir", f"/workspace/{name}")
        if not remote_dir.startswith("/") or "\n" in remote_dir or "\0" in remote_dir:
            raise self.fail(
                "run", "remote_dir", f"expected an absolute path like /workspace/{name}"
            )
        command = v["command"]
        if not command.strip():
            raise self.fail("run", "command", "must not be empty")
        setup = v.get("setup", "")
        for key, template in (("command", command), ("setup", setup)):
            try:
                placeholders(template)
            except ValueError as exc:
                raise self.fail("run", key, str(exc)) from None
        env = v.get("env", {})
        for var in env:
            if not _ENV_NAME.match(var):
                raise self.fail("run", "env", f"{var!r} is not a valid environment variable name")
            if var.startswith("RIGDECK_"):
                raise self.fail("run", "env", f"{var} is set by rigdeck; pick another name")
        nproc = v.get("nproc")
        if nproc is not None and not 1 <= nproc <= 1024:
            raise self.fail("run", "nproc", f"expected 1 to 1024, got {nproc!r}")
        return RunSpec(
            command=command,
            remote_dir=remote_dir.rstrip("/") or "/",
            setup=setup,
            env=MappingProxyType(dict(env)),
            nproc=nproc,
        )

    def relative(self, key: str, item: str) -> str:
        pure = PurePosixPath(item)
        if not item.strip() or pure.is_absolute() or ".." in pure.parts or item.startswith("~"):
            raise self.fail(
                "artifacts", key, f"{item!r}: expected a path inside the job's folder, like out/"
            )
        return item

    def build_artifacts(self, v: Mapping[str, Any]) -> ArtifactsSpec:
        pull = tuple(self.relative("pull", p) for p in v.get("pull", []))
        checkpoint = v.get("checkpoint")
        if checkpoint is not None:
            checkpoint = self.relative("checkpoint", checkpoint).rstrip("/")
        return ArtifactsSpec(pull=pull, checkpoint=checkpoint)

    def build_budget(self, v: Mapping[str, Any]) -> BudgetSpec:
        on_finish = v.get("on_finish", "destroy")
        if on_finish not in ON_FINISH:
            raise self.fail(
                "budget", "on_finish", f"expected one of {', '.join(ON_FINISH)}, got {on_finish!r}"
            )
        return BudgetSpec(
            max_usd=self.positive("budget", "max_usd", v),
            max_hours=self.positive("budget", "max_hours", v),
            on_finish=on_finish,
        )


def placeholders(template: str) -> tuple[str, ...]:
    """The placeholder names in ``template``; ValueError naming an unknown or malformed one."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write {{{{ and }}}} for a literal brace") from None
    for _literal, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + field_name + ("!" + conversion if conversion else "")
            shown += (":" + spec if spec else "") + "}"
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(
                f"unknown placeholder {shown}; known: {known} "
                "(write {{ and }} for a literal brace, e.g. ${{HOME}})"
            )
        names.append(field_name)
    return tuple(names)


def render_command(template: str, values: Mapping[str, str | int]) -> str:
    """Fill the placeholders of ``template`` with ``values`` (text inserted as is, unquoted).

    The runner passes shell variable references (``${RIGDECK_NPROC}``) so the numbers are read on
    the machine that runs the job; the CLI passes real values to show what will run.
    """
    out = []
    for literal, field_name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field_name is not None:
            if field_name not in values:
                raise JobSpecError(f"no value for placeholder {{{field_name}}}")
            out.append(str(values[field_name]))
    return "".join(out)


def nproc_for(spec: JobSpec, num_gpus: int) -> int:
    """What ``{nproc}`` becomes on a machine with ``num_gpus`` GPUs."""
    return spec.run.nproc if spec.run.nproc is not None else max(1, num_gpus)


def preview_command(
    spec: JobSpec, *, num_gpus: int, job_id: str = "<job id>", workdir: str | None = None
) -> str:
    """The command as it will run on a machine with ``num_gpus`` GPUs (for a dry run or an
    offer's detail); the runner itself fills the placeholders on the target."""
    return render_command(
        spec.run.command,
        {
            "num_gpus": num_gpus,
            "nproc": nproc_for(spec, num_gpus),
            "remote_dir": workdir or spec.run.remote_dir,
            "job": job_id,
            "name": spec.name,
        },
    )
