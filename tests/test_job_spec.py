"""Job specs: defaults, one-line errors naming file:line:col and the key, placeholders, samples."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from rigdeck.core.cloud.jobs.spec import (
    PLACEHOLDERS,
    SCHEMA,
    JobSpecError,
    load_spec,
    nproc_for,
    placeholders,
    preview_command,
    render_command,
)
from rigdeck.core.errors import RigdeckError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_configs" / "jobs"

MINIMAL = 'name = "t"\n[run]\ncommand = "python train.py"\n'


def write(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(JobSpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert isinstance(info.value, RigdeckError)
    assert "\n" not in message
    assert message.startswith(f"{path}:"), message
    return message[len(str(path)) + 1 :]


def test_minimal_spec_takes_documented_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.name == "t"
    assert spec.path == tmp_path / "job.toml"
    assert spec.root == tmp_path
    assert spec.image is None and spec.disk_gb is None
    assert spec.run.remote_dir == "/workspace/t"
    assert spec.run.setup == "" and dict(spec.run.env) == {} and spec.run.nproc is None
    assert spec.sync.up == (tmp_path,)
    assert spec.sync.gitignore is True and ".git" in spec.sync.exclude
    assert spec.offer.sort == "price" and spec.offer.max_dph is None
    assert spec.offer.interruptible is False
    assert spec.artifacts.pull == () and spec.artifacts.checkpoint is None
    assert spec.budget.on_finish == "destroy" and spec.budget.max_usd is None


def test_sync_paths_resolve_against_the_spec_folder_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "proj" / "data").mkdir(parents=True)
    path = write(tmp_path / "proj", MINIMAL + '[sync]\nup = [".", "data"]\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec(Path("proj/job.toml"))
    assert spec.sync.up == (tmp_path / "proj", tmp_path / "proj" / "data")
    assert spec.path == path


def test_toml_syntax_error_names_line_and_column(tmp_path):
    where = error_of(tmp_path, 'name = "t"\n[run]\ncommand = "x\n')
    assert re.match(r"3:\d+: invalid TOML", where), where


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        (MINIMAL + "[run2]\nx = 1\n", 4, "run2", "unknown key 'run2'"),
        (MINIMAL + "comand = 'x'\n", 4, "run.comand", "did you mean 'command'"),
        ('name = "t"\nimage = 3\n[run]\ncommand = "x"\n', 2, "image", "expected a string"),
        (MINIMAL + "nproc = 'two'\n", 4, "run.nproc", "whole number"),
        (MINIMAL + "nproc = 0\n", 4, "run.nproc", "1 to 1024"),
        (MINIMAL + "env = { A = 1 }\n", 4, "run.env", "quote it"),
        (MINIMAL + "env = { RIGDECK_JOB = '1' }\n", 4, "run.env", "set by rigdeck"),
        (MINIMAL + "remote_dir = 'work'\n", 4, "run.remote_dir", "absolute path"),
        (
            MINIMAL + "[budget]\nmax_usd = 1\non_finish = 'explode'\n",
            6,
            "budget.on_finish",
            "destroy, stop, keep",
        ),
        (MINIMAL + "[budget]\nmax_usd = -1\n", 5, "budget.max_usd", "above 0"),
        (MINIMAL + "[offer]\nsort = 'cheap'\n", 5, "offer.sort", "price"),
        (MINIMAL + "[offer]\ninterruptible = 'yes'\n", 5, "offer.interruptible", "true or false"),
        (MINIMAL + "[sync]\nup = ['missing']\n", 5, "sync.up", "does not exist"),
        (MINIMAL + "[sync]\nexclude = '.git'\n", 5, "sync.exclude", "list of strings"),
        (MINIMAL + "[artifacts]\npull = ['../up']\n", 5, "artifacts.pull", "inside the job"),
        (MINIMAL + "[artifacts]\ncheckpoint = '/abs'\n", 5, "artifacts.checkpoint", "inside"),
        ('name = "bad name"\n[run]\ncommand = "x"\n', 1, "name", "letters, digits"),
        ('name = "t"\nrun = 5\n', 2, "run", "expected a table"),
    ],
)
def test_bad_values_name_the_key_and_its_line(tmp_path, text, line, key, words):
    where = error_of(tmp_path, text)
    assert where.startswith(f"{line}:"), where
    assert f": {key}: " in where, where
    assert words in where, where


def test_column_points_at_the_key(tmp_path):
    where = error_of(tmp_path, MINIMAL + "  nproc = 'x'\n")
    assert where.startswith("4:3:"), where


def test_missing_required_keys_say_where_to_add_them(tmp_path):
    where = error_of(tmp_path, '[run]\ncommand = "x"\n')
    assert where.startswith("1:1: name: missing"), where
    where = error_of(tmp_path, 'name = "t"\n\n[run]\nsetup = "x"\n')
    assert where.startswith("3:1: run.command: missing"), where
    assert "[run]" in where


def test_dotted_and_inline_forms_are_located_too(tmp_path):
    where = error_of(tmp_path, 'name = "t"\nrun.command = "x"\nrun.nproc = "a"\n')
    assert where.startswith("3:1: run.nproc"), where
    where = error_of(tmp_path, 'name = "t"\nrun = { command = "x", nproc = "a" }\n')
    assert where.startswith("2:") and "run.nproc" in where, where


def test_unknown_placeholder_is_refused_with_the_known_ones(tmp_path):
    where = error_of(
        tmp_path, 'name = "t"\n[run]\ncommand = "torchrun --nproc-per-node={gpus} x"\n'
    )
    assert where.startswith("3:1: run.command: unknown placeholder {gpus}"), where
    for name in PLACEHOLDERS:
        assert "{" + name + "}" in where
    assert "{{" in where  # says how to write a literal brace
    where = error_of(tmp_path, 'name = "t"\n[run]\ncommand = "x"\nsetup = "echo ${HOME}"\n')
    assert where.startswith("4:1: run.setup: unknown placeholder {HOME}"), where
    where = error_of(tmp_path, 'name = "t"\n[run]\ncommand = "echo {"\n')
    assert "run.command" in where and "literal brace" in where


def test_placeholders_render_and_literal_braces_survive():
    template = "torchrun --nproc-per-node={nproc} x.py --gpus {num_gpus} ${{HOME}} {job}"
    assert placeholders(template) == ("nproc", "num_gpus", "job")
    shown = render_command(template, {"nproc": 2, "num_gpus": 0, "job": "j-1"})
    assert shown == "torchrun --nproc-per-node=2 x.py --gpus 0 ${HOME} j-1"
    with pytest.raises(JobSpecError):
        render_command("{nproc}", {})


def test_nproc_is_the_gpu_count_at_least_one_unless_set(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert [nproc_for(spec, gpus) for gpus in (0, 1, 8)] == [1, 1, 8]
    spec = load_spec(write(tmp_path, MINIMAL + "nproc = 2\n"))
    assert [nproc_for(spec, gpus) for gpus in (0, 8)] == [2, 2]


def test_preview_shows_the_command_a_machine_will_run():
    spec = load_spec(SAMPLES / "tiny-gpt.toml")
    assert preview_command(spec, num_gpus=8) == (
        "torchrun --standalone --nproc-per-node=8 train.py --out out"
    )
    assert "--nproc-per-node=1 " in preview_command(spec, num_gpus=0)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(JobSpecError, match="no such job spec"):
        load_spec(tmp_path / "nope.toml")


def sample_specs() -> list[Path]:
    return sorted(SAMPLES.glob("*.toml"))


def test_there_is_a_sample_spec():
    assert [p.name for p in sample_specs()] == ["tiny-gpt.toml"]


@pytest.mark.parametrize("path", sample_specs(), ids=lambda p: p.name)
def test_sample_spec_parses_and_documents_every_key(path):
    spec = load_spec(path)
    assert spec.root == SAMPLES
    assert spec.artifacts.checkpoint and spec.run.command
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    data = tomllib.loads(text)
    for section, keys in SCHEMA.items():
        table = data if not section else data.get(section, {})
        for key in keys:
            # Each key is set, or shown commented out, right under a comment that explains it.
            pattern = re.compile(rf"^(#\s*)?{re.escape(key)}\s*=")
            found = [i for i, line in enumerate(lines) if pattern.match(line)]
            if section:
                start = next(i for i, line in enumerate(lines) if line == f"[{section}]")
                end = next(
                    (i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
                    len(lines),
                )
                found = [i for i in found if start < i < end]
            else:
                found = [
                    i for i in found if i < lines.index(next(x for x in lines if x.startswith("[")))
                ]
            assert found, f"{path.name}: {section or 'top'}.{key} is not shown"
            assert key in table or lines[found[0]].startswith("#"), f"{key} neither set nor shown"
            assert lines[found[0] - 1].startswith("#"), f"{path.name}: {key} has no comment above"
