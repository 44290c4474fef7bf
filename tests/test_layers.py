"""The house's layers, read from the imports of every module (ast, so a lazy import inside a
function counts too).

Inside core/models the arrows point one way: ``format <- sources <- fit <- run``, and the
modules on top (``launch``, ``browser``) may use them all. core/cloud and core/economics ask the
fit engine through ``rigdeck.core.models.launch`` only, never its internals.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
MODELS = CORE / "models"
PACKAGE = "rigdeck.core.models"
# Each layer may import its own and the ones before it.
LAYERS = ("format", "sources", "fit", "run")
LAUNCH = f"{PACKAGE}.launch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("rigdeck", *parts))


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            # `from rigdeck.core.models import fit` imports the subpackage itself.
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer in LAYERS; None for the modules on top (and non-models)."""
    if not module.startswith(PACKAGE + "."):
        return None
    first = module[len(PACKAGE) + 1 :].split(".")[0]
    return LAYERS.index(first) if first in LAYERS else None


def _is_module(name: str) -> bool:
    """Whether ``name`` (maybe ``module.attribute``) names a module under core/models."""
    rel = name[len(PACKAGE) + 1 :].split(".") if name.startswith(PACKAGE + ".") else []
    path = MODELS.joinpath(*rel)
    return bool(rel) and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def test_every_models_layer_imports_only_itself_and_the_layers_below() -> None:
    wrong = []
    for path in sorted(MODELS.rglob("*.py")):
        own = layer_of(_module_name(path))
        if own is None:
            continue  # launch, browser: on top, they may use every layer
        for line, name in imports(path):
            if not _is_module(name):
                continue
            other = layer_of(name)
            if other is None or other > own:
                where = path.relative_to(ROOT)
                wrong.append(f"{where}:{line} ({LAYERS[own]}) imports {name}")
    assert not wrong, "arrows point format <- sources <- fit <- run:\n" + "\n".join(wrong)


def test_the_fit_never_imports_the_runner() -> None:
    for path in sorted((MODELS / "fit").rglob("*.py")):
        for line, name in imports(path):
            assert not name.startswith(f"{PACKAGE}.run"), f"{path.relative_to(ROOT)}:{line}"


def test_cloud_and_economics_use_only_launch() -> None:
    wrong = []
    for folder in (CORE / "cloud", CORE / "economics"):
        for path in sorted(folder.rglob("*.py")):
            for line, name in imports(path):
                if not name.startswith(PACKAGE + ".") or name == LAUNCH:
                    continue
                if not _is_module(name) and _is_module(name.rpartition(".")[0]):
                    continue  # a name from a module already listed (or from launch itself)
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, (
        "core/cloud and core/economics ask the fit through rigdeck.core.models.launch "
        "(model_info, build_run_settings, machine_budget, budget_from_offer, fit_model, "
        "fit_on_offer, plan_launch), never its internals:\n" + "\n".join(wrong)
    )


def test_the_rule_reads_imports_the_way_python_does(tmp_path: Path) -> None:
    """The checker itself: relative, lazy and package imports all count."""
    sample = MODELS / "fit" / "budget.py"
    names = {name for _, name in imports(sample)}
    assert f"{PACKAGE}.fit.speed" in names  # `from rigdeck.core.models.fit import speed`
    assert layer_of(f"{PACKAGE}.run.plan") == 3 and layer_of(LAUNCH) is None
    assert _is_module(f"{PACKAGE}.fit.speed") and not _is_module(f"{PACKAGE}.launch.fit_model")
