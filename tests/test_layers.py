"""Layers point one way: no import cycle among robustft's modules (lazy imports included), analysis below
reports below experiments, and ``import robustft`` starts no plotting backend and no cluster client."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustft"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Module name → source file of every module of the package; a package is its ``__init__``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (module level, in functions, under
    ``TYPE_CHECKING``). ``from pkg import x`` is the submodule ``pkg.x`` when that is a module, else ``pkg``.
    Importing ``a.b.c`` runs ``a.b``'s ``__init__`` too, so it counts, unless ``a.b`` contains ``name`` (then it
    is already running): a module of ``report`` that imports from ``experiments``, whose ``__init__`` imports
    back from ``report``, is a cycle even when no two modules name each other."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up from this module's package
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    out |= {parent for m in out for parent in _parents(m) if not _within(name, parent)}
    return {m for m in out if m in modules and m != name}


def _parents(module: str) -> list[str]:
    """``a.b.c`` → ``a``, ``a.b``: importing a module first runs its packages' ``__init__``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, …, a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import thing\n")
    (pkg / "sub" / "__init__.py").write_text("from .a import thing\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from pkg import sub\n    from ..sub import b\nthing = 1\n")
    (pkg / "sub" / "b.py").write_text("import pkg.sub.a\n")
    files = module_files(pkg)
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    assert graph == {"pkg": {"pkg.sub"}, "pkg.sub": {"pkg.sub.a"}, "pkg.sub.a": {"pkg.sub", "pkg.sub.b"},
                     "pkg.sub.b": {"pkg.sub.a"}}
    assert find_cycle(graph) in (["pkg.sub", "pkg.sub.a", "pkg.sub"], ["pkg.sub.a", "pkg.sub", "pkg.sub.a"])
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    """A submodule that imports its own package's ``__init__`` is a cycle through it: import the submodule."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


ABOVE_EVAL = ("robustft.analysis", "robustft.report", "robustft.experiments", "robustft.cli")
LOWER = {"robustft.eval": ABOVE_EVAL, "robustft.train": ABOVE_EVAL,
         "robustft.analysis": ("robustft.report", "robustft.experiments", "robustft.cli"),
         "robustft.report": ("robustft.experiments", "robustft.cli"),
         "robustft.experiments": ("robustft.cli",)}
"""Each layer and the layers above it, which it must not import: train/eval → analysis (statistics,
diagnosis) → report → experiments → CLI."""


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("layer", sorted(LOWER))
def test_layers_point_one_way(layer):
    graph = import_graph()
    assert any(_within(m, layer) for m in graph), f"{layer} is not a package any more: update LOWER"
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() if _within(m, layer) for t in targets
                   if any(_within(t, upper) for upper in LOWER[layer]))
    assert not wrong, "\n".join(wrong)


def test_import_starts_no_plotting_backend_or_cluster_client():
    code = ("import sys, robustft; loaded = [m for m in ('matplotlib', 'ray') if m in sys.modules]; "
            "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
