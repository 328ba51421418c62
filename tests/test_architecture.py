"""The house's floors, checked from the source: jobs -> pipeline -> workers, no import circles,
production never leans on test helpers, and files stay small enough to read.

A plain AST walk over the project's packages (no new dependency). Every import counts, also the
ones inside functions: a lazy import still ties two modules together.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "workers", "jobs", "simsd")
MAX_LINES = 400
# Test helpers that production code must not import.
TEST_HELPERS = ("tests", "workers.testing")
# Known exceptions, each in files another change is rewriting right now (the engine rewrite), so
# they are left to it. An entry that no longer applies fails the test too: delete it then.
KNOWN_CYCLES: list[list[str]] = []
OVER_LIMIT_ALLOWED = {
    "jobs/gpu_checks/engine_check.py",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Dotted name -> file, for every .py under the project's packages."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest project module that ``name`` (a dotted import target) names, if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``module`` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself.
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in cycles] == [], "a known cycle is gone: delete its entry"


def test_workers_never_import_the_driver_side():
    upward = {m: sorted(t for t in targets if _in(t, "pipeline") or _in(t, "jobs") or _in(t, "simsd"))
              for m, targets in import_graph().items() if _in(m, "workers")}
    assert {m: t for m, t in upward.items() if t} == {}


def test_pipeline_never_imports_jobs():
    upward = {m: sorted(t for t in targets if _in(t, "jobs") or _in(t, "simsd"))
              for m, targets in import_graph().items() if _in(m, "pipeline")}
    assert {m: t for m, t in upward.items() if t} == {}


def test_production_never_imports_test_helpers():
    modules = project_modules()
    helpers = {}
    for name, path in modules.items():
        if name in TEST_HELPERS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        named = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        named |= {f"{node.module}.{alias.name}" for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module and not node.level for alias in node.names}
        named |= imports_of(name, path, modules)  # relative imports, resolved
        bad = sorted(t for t in named if any(_in(t, h) for h in TEST_HELPERS))
        if bad:
            helpers[name] = bad
    assert helpers == {}


def test_no_file_outside_tests_is_over_the_limit():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
             for path in [*ROOT.glob("*.py"), *project_modules().values()]}
    assert {rel: n for rel, n in sizes.items() if n > MAX_LINES and rel not in OVER_LIMIT_ALLOWED} == {}
    assert sorted(rel for rel in OVER_LIMIT_ALLOWED if sizes.get(rel, 0) <= MAX_LINES) == [], \
        "an allowed file is within the limit now: delete its entry"


def test_the_check_sees_a_cycle():
    # The walk itself: a two-module circle is found, a chain is not.
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_relative_and_package_imports():
    graph = import_graph()
    assert "pipeline.config" in graph["jobs.generate"] or "pipeline.validate" in graph["jobs.generate"]
    assert "workers.models.config" in graph["workers.models"]  # `from .config import ...` in __init__
