"""The import graph of the installed package ``vramplan`` has no cycle, and the pipeline never imports upward.

The graph is read from the source with :mod:`ast`, so an import inside a function counts as much as
one at the top of a module, and so does an object named in a string (``"vramplan.cli.plan:plan"``,
imported by name with importlib): a lazy import may save start-up time, but one that closes a loop
is a cycle (STYLE.md). Only imports under ``if TYPE_CHECKING:`` are left out — they never run.

The folders and the package names they install as come from pyproject.toml's ``package-dir``
(``engine/`` is ``vramplan``, ``plugins/`` is ``vramplan.plugins``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent

#: The request pipeline, validate → resolve → scenario → evaluate → estimate (and the data it reads).
PIPELINE = ("request", "resolve", "scenario", "formulaset", "estimate", "pipeline")
#: Layers above the pipeline: searches, reports and the faces. The pipeline imports none of them.
ABOVE = ("answer", "search", "planner", "many", "sweep", "suggest", "maps", "deploy", "deploysearch", "deployspace",
         "report", "cli", "server")


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package's __init__), for every .py file pyproject installs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    dirs = config["package-dir"]
    modules: dict[str, tuple[Path, bool]] = {}
    for package in config["packages"]:
        top = max((p for p in dirs if package == p or package.startswith(p + ".")), key=len)
        folder = ROOT / dirs[top] / Path(*package[len(top):].split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            is_init = path.stem == "__init__"
            modules[package if is_init else f"{package}.{path.stem}"] = (path, is_init)
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    skip.update(id(n) for n in ast.walk(stmt))
    return skip


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports, at any depth of its code."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_init) in modules.items():
        tree = ast.parse(path.read_text("utf-8"), str(path))
        skip = _type_checking_only(tree)
        here = name if is_init else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    module = base + (f".{node.module}" if node.module else "")
                else:
                    module = node.module or ""
                for alias in node.names:  # `from . import x` imports module x when there is one
                    deps.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
                # "module:attr" names an object to import by name (importlib: the CLI's lazy commands)
                target = node.value.partition(":")[0]
                if target in modules:
                    deps.add(target)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "vramplan.estimate" in graph and "vramplan.plugins" in graph  # it read the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_pipeline_never_imports_a_layer_above_it():
    graph = import_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    above = {m for m in graph if m.split(".")[1:2] and m.split(".")[1] in ABOVE}
    assert {"vramplan.planner", "vramplan.report", "vramplan.cli", "vramplan.server"} <= above
    for stage in PIPELINE:
        upward = sorted(reach(f"vramplan.{stage}") & above)
        assert not upward, f"vramplan.{stage} reaches {', '.join(upward)}"
    assert "vramplan" not in reach("vramplan.pipeline")  # nor the Python face, which calls it


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The checker itself: an import inside a function closes a loop; one under TYPE_CHECKING does not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import x\ndef f():\n    from . import y\n"
    tree = ast.parse(source)
    skipped = _type_checking_only(tree)
    kept = [n.names[0].name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is None
            and id(n) not in skipped]
    assert kept == ["y"]
