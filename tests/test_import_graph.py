"""The import graph of ``bastion``: no cycles, and the layers of DESIGN.md kept apart.

The graph is read from the source (an AST walk), not from a running interpreter, so an import
that only some code path runs counts as well:

* every ``import`` statement counts, at module level or inside a function, a method or a ``try``;
  only those under ``if TYPE_CHECKING:`` do not (they never run; the layer rules below still
  read them, so a type-only import cannot hide a dependency the layers forbid);
* importing ``bastion.a.b`` runs ``bastion/a/__init__.py`` first, so that package counts as
  imported too, except the root ``bastion`` and the importer's own packages (a package and its
  modules always import each other that way: that is how packages work, not a cycle).

One edge may point back up: ``Bastion.asgi()`` and ``Bastion.wsgi()`` in ``bastion.core`` import
their middleware when called, while the middlewares import ``bastion.core`` at module level. That
is the deliberate direction (core never needs a middleware to exist), so those two edges are left
out of the cycle search, and only as imports inside a function: at module level they would be a
real cycle again.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "bastion"

ALLOWED_BACK_EDGES = frozenset(
    {
        ("bastion.core", "bastion.middleware.asgi"),
        ("bastion.core", "bastion.middleware.wsgi"),
    }
)
"""Imports that may close a cycle, only from inside a function (see the module docstring)."""


@dataclass(frozen=True)
class Import:
    """One import statement's edge: who imports what, where, and how."""

    source: str
    target: str
    """A module of the package (resolved), or the top-level name of another distribution."""
    line: int
    nested: bool
    """Inside a function: runs when the function is called, not when the module loads."""
    type_only: bool
    """Under ``if TYPE_CHECKING:``: never runs."""
    internal: bool

    def __str__(self) -> str:
        where = "in a function" if self.nested else "at module level"
        kind = ", type-checking only" if self.type_only else ""
        return f"{self.source}:{self.line} imports {self.target} ({where}{kind})"


def modules_of(package_dir: Path) -> dict[str, Path]:
    """Module name → file, for every module of the package (``__init__`` as the package)."""
    root = package_dir.name
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(package_dir: Path) -> list[Import]:
    """Every import statement of every module of the package, as edges."""
    modules = modules_of(package_dir)
    root = package_dir.name

    def resolve(name: str) -> str:
        """The longest module of the package that ``name`` names (or is inside)."""
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        return name

    found: list[Import] = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"

        def add(
            target: str, node: ast.stmt, nested: bool, type_only: bool, source: str = source
        ) -> None:
            internal = target == root or target.startswith(root + ".")
            name = resolve(target) if internal else target.split(".")[0]
            found.append(Import(source, name, node.lineno, nested, type_only, internal))

        def visit(
            node: ast.AST,
            nested: bool,
            type_only: bool,
            source: str = source,
            pkg: bool = is_package,
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name, child, nested, type_only)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parent = source if pkg else source.rpartition(".")[0]
                        for _ in range(child.level - 1):
                            parent = parent.rpartition(".")[0]
                        base = f"{parent}.{base}" if base else parent
                    for alias in child.names:
                        # ``from bastion.x import y`` imports module bastion.x.y, if there is one.
                        candidate = f"{base}.{alias.name}"
                        add(candidate if candidate in modules else base, child, nested, type_only)
                elif isinstance(child, ast.If) and _is_type_checking(child.test):
                    for statement in child.body:
                        visit(ast.Module(body=[statement], type_ignores=[]), nested, True)
                    for statement in child.orelse:
                        visit(ast.Module(body=[statement], type_ignores=[]), nested, type_only)
                else:
                    inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    visit(child, nested or inner, type_only)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return found


def runtime_edges(
    imports: Iterable[Import], root: str, skip: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, dict[str, Import]]:
    """``source → target → the import``: what running the code imports, packages included."""
    edges: dict[str, dict[str, Import]] = {}
    for edge in imports:
        if not edge.internal or edge.type_only:
            continue
        if (edge.source, edge.target) in skip and edge.nested:
            continue
        targets = [edge.target]
        # The packages whose __init__ runs first: not the root, not the importer's own.
        parts = edge.target.split(".")
        for depth in range(2, len(parts)):
            package = ".".join(parts[:depth])
            if package != root and not (
                edge.source == package or edge.source.startswith(package + ".")
            ):
                targets.append(package)
        for target in targets:
            if target != edge.source:
                edges.setdefault(edge.source, {}).setdefault(target, edge)
    return edges


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, {}):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def explain(component: list[str], edges: dict[str, dict[str, Import]]) -> str:
    """The imports that tie a cycle's modules together, one per line."""
    members = set(component)
    return "\n".join(
        f"  {edge}"
        for source in component
        for target, edge in sorted(edges.get(source, {}).items())
        if target in members
    )


def cycle_report(package_dir: Path, skip: frozenset[tuple[str, str]] = frozenset()) -> str:
    """Every import cycle of the package, explained; "" when there is none."""
    edges = runtime_edges(imports_of(package_dir), package_dir.name, skip)
    return "\n".join(
        f"cycle among {', '.join(component)}:\n{explain(component, edges)}"
        for component in cycles(edges)
    )


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    """The imports of the bastion package."""
    return imports_of(PACKAGE_DIR)


def edges_from(graph: list[Import], source: str) -> Iterator[Import]:
    """The imports of ``source`` and of the modules inside it (a package prefix)."""
    return (e for e in graph if e.source == source or e.source.startswith(source + "."))


def within(name: str, *prefixes: str) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# -- the rule ---------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    report = cycle_report(PACKAGE_DIR, ALLOWED_BACK_EDGES)
    assert not report, "import cycles (see tests/test_import_graph.py):\n" + report


def test_the_allowed_back_edges_stay_inside_functions(graph: list[Import]) -> None:
    back = [e for e in graph if (e.source, e.target) in ALLOWED_BACK_EDGES]
    assert back, "Bastion.asgi/wsgi no longer import their middleware: drop the allowance"
    assert all(e.nested for e in back), [str(e) for e in back if not e.nested]


# -- the checker finds what it must -----------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.b import B\n",
            "b.py": "B = 1\n\ndef late():\n    from pkg.a import nothing\n",
        },
    )
    assert "cycle among pkg.a, pkg.b" in cycle_report(root)
    assert cycle_report(root, frozenset({("pkg.b", "pkg.a")})) == ""


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.sub.b import B\n",
            "sub/__init__.py": "from pkg.sub.c import C\n",
            "sub/b.py": "B = 1\n",
            "sub/c.py": "from pkg.a import A\nC = 1\n",
        },
    )
    assert "cycle among pkg.a, pkg.sub, pkg.sub.c" in cycle_report(root)


def test_type_checking_imports_close_no_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "from pkg.b import B\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.a import A\nB = 1\n",
        },
    )
    assert cycle_report(root) == ""


# -- the layers -------------------------------------------------------------------------------


def test_settings_import_no_policy_layer_and_nothing_above_them(graph: list[Import]) -> None:
    above = (
        "bastion.policies",
        "bastion.core",
        "bastion.account",
        "bastion.middleware",
        "bastion.adapters",
    )
    bad = [str(e) for e in edges_from(graph, "bastion.settings") if within(e.target, *above)]
    assert not bad


def test_the_account_service_imports_no_bastion(graph: list[Import]) -> None:
    above = ("bastion.core", "bastion.middleware", "bastion.adapters", "bastion")
    bad = [
        str(e)
        for e in edges_from(graph, "bastion.account")
        if e.target in above or within(e.target, *above[:-1])
    ]
    assert not bad


def test_core_never_loads_a_middleware_or_an_adapter_with_itself(graph: list[Import]) -> None:
    bad = [
        str(e)
        for e in edges_from(graph, "bastion.core")
        if within(e.target, "bastion.adapters")
        or (within(e.target, "bastion.middleware") and not e.nested)
    ]
    assert not bad


def test_the_policy_runtime_loads_the_tooling_only_when_it_runs_suites(
    graph: list[Import],
) -> None:
    tools = "bastion.policies.tools"
    bad = [
        str(e)
        for e in graph
        if within(e.target, tools) and not within(e.source, tools) and not e.nested
    ]
    assert not bad


@pytest.mark.parametrize(
    ("distribution", "allowed_at_module_level", "allowed_in_functions"),
    [
        # pycasbin: one module, so a new release is checked in one place and loads lazily.
        ("casbin", {"bastion.policies.casbin_compat"}, set()),
        # PyYAML (the policy-tools extra): read when a suite is read.
        ("yaml", set(), {"bastion.policies.tools.suites"}),
        # The frameworks: their adapters (the framework-specific side, whatever its modules),
        # the ASGI middleware's scope["auth"] and the demo.
        ("starlette", {"bastion.adapters"}, {"bastion.middleware.asgi", "bastion.demo"}),
        ("fastapi", {"bastion.adapters"}, {"bastion.demo"}),
        ("flask", {"bastion.adapters"}, {"bastion.demo"}),
        # SQLAlchemy (the sqlalchemy extra): only the store an app imports itself.
        ("sqlalchemy", {"bastion.users.sqlalchemy"}, set()),
    ],
)
def test_optional_distributions_load_where_they_are_needed(
    graph: list[Import],
    distribution: str,
    allowed_at_module_level: set[str],
    allowed_in_functions: set[str],
) -> None:
    bad = [
        str(e)
        for e in graph
        if not e.internal
        and e.target == distribution
        and not e.type_only
        and not within(e.source, *allowed_at_module_level)
        and not (e.nested and e.source in allowed_in_functions)
    ]
    assert not bad


RUNTIME_DISTRIBUTIONS = {"redis", "jwt", "argon2", "idna"}
"""What ``import bastion`` may load besides the standard library: the runtime dependencies."""


def test_import_bastion_loads_only_the_runtime_dependencies(graph: list[Import]) -> None:
    loaded = {"bastion"}
    pending = ["bastion"]
    at_load = [e for e in graph if not e.nested and not e.type_only]
    edges = runtime_edges(at_load, "bastion")
    while pending:
        for target in edges.get(pending.pop(), {}):
            if target not in loaded:
                loaded.add(target)
                pending.append(target)
    others = {
        f"{e.target} ({e.source}:{e.line})"
        for e in at_load
        if e.source in loaded
        and not e.internal
        and e.target not in sys.stdlib_module_names
        and e.target not in RUNTIME_DISTRIBUTIONS
    }
    assert not others
