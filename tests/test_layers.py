"""The import graph keeps its layers: a package or module may import only from lower layers (or itself), and no
module imports another that imports it back, directly or not. Read from the source with ``ast``, so a new
upward or sideways edge fails here, not in a user's import."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fashionlens

PACKAGE = Path(fashionlens.__file__).resolve().parent

#: Top-level packages and modules by layer, lowest first. Each may import from its own and lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("io", "config", "distributed", "losses", "metrics"),  # cross-cutting basics
    ("data", "runtime", "index"),  # records and images; devices and the batched forward; vector search
    ("models", "features", "engine", "reports"),  # networks, cached features, training loop
    ("tasks",),  # tagging, hierarchy, retrieval on one TaskModel base
    ("catalogue",),  # catalogue indexes built, edited and searched with their embedder
    ("audit", "inference"),  # catalogue-scale jobs built on the tasks
    ("service", "export", "demo", "pretrained"),  # applications; the shipped models and their build recipes
    ("cli", "__main__"),  # the command line
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """The fashionlens modules a file imports (``from fashionlens import x`` counts as ``fashionlens.x``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fashionlens":
                yield from (f"fashionlens.{alias.name}" for alias in node.names)
            elif node.module.startswith("fashionlens."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("fashionlens."))


def _unit(module: str) -> str | None:
    """The top-level package or module of ``fashionlens.a.b`` (``a``), ``None`` for attributes of the root."""
    unit = module.split(".")[1]
    return unit if (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").is_file() else None


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_top_level_unit_has_a_layer() -> None:
    units = {unit for module in MODULES if module != "fashionlens" and (unit := _unit(module))}
    assert units - RANK.keys() == set(), "add new top-level packages/modules to LAYERS"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "fashionlens"))
def test_imports_only_its_own_or_lower_layers(module: str) -> None:
    unit = _unit(module)
    assert unit is not None
    upward = sorted({target for target in _imports(MODULES[module])
                     if (other := _unit(target)) is not None and RANK[other] > RANK[unit]})
    assert upward == [], f"{module} (layer {RANK[unit]}) imports from higher layers: {upward}"


def test_no_import_cycles() -> None:
    graph = {module: {target for target in _imports(path) if target in MODULES and target != module}
             for module, path in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target] if target in path else [module, target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
