"""The shape of the package, pinned: RPC verbs against their handlers, job states against the enum, and the import
graph (who may import the composition root, and no cycles).

Read from the source with ``ast`` where the rule is about imports, so that an import inside a function or under
``if TYPE_CHECKING`` counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from wangpd import protocol
from wangpd.control import Control
from wangpd.models import JobState
from wangpd.rpc import HANDLERS

PACKAGE = Path(__file__).resolve().parent.parent / "wangpd"
TOP = "wangpd"


# ---- RPC verbs ----------------------------------------------------------------------------------------------------


def _verbs() -> dict[str, object]:
    """Control's public methods: the class docstring says it holds "every method a client may call", so every
    public function on it (async or not; properties such as ``store`` are not functions) is a verb."""
    return {
        name: function for name, function in inspect.getmembers(Control, inspect.isfunction) if not name.startswith("_")
    }


def test_every_protocol_method_has_an_async_handler() -> None:
    # rpc.HANDLERS is built at import and refuses a method without an async Control method; this pins the table.
    assert list(HANDLERS) == list(protocol.METHODS)
    not_async = [method for method, handler in HANDLERS.items() if not inspect.iscoroutinefunction(handler.function)]
    assert not not_async, f"handlers that are not coroutine functions (call() awaits them): {not_async}"
    for method, handler in HANDLERS.items():
        assert handler.function is getattr(Control, method.replace(".", "_"))
        assert "self" not in handler.signature.parameters


def test_every_control_verb_is_a_protocol_method() -> None:
    handled = {handler.function for handler in HANDLERS.values()}
    orphans = sorted(name for name, function in _verbs().items() if function not in handled)
    assert not orphans, f"public Control methods that no protocol.METHODS entry reaches: {orphans}"


def test_handlers_and_methods_are_one_to_one() -> None:
    by_handler: dict[object, list[str]] = {}
    for method, handler in HANDLERS.items():
        by_handler.setdefault(handler.function, []).append(method)
    shared = [methods for methods in by_handler.values() if len(methods) > 1]
    assert not shared, f"methods served by the same handler: {shared}"
    assert len(by_handler) == len(_verbs()) == len(protocol.METHODS)


def test_mutating_methods_are_a_subset_of_methods() -> None:
    assert set(protocol.METHODS) >= protocol.MUTATING_METHODS
    assert {m for m, mutates in protocol.METHODS.items() if mutates} == protocol.MUTATING_METHODS


# ---- job states ---------------------------------------------------------------------------------------------------


def test_protocol_job_states_are_the_enum_values_in_order() -> None:
    assert tuple(state.value for state in JobState) == protocol.JOB_STATES


# ---- the import graph ---------------------------------------------------------------------------------------------


def _module_names() -> dict[str, Path]:
    """Dotted name -> file for every wangpd/*.py (``wangpd`` itself for ``__init__.py``)."""
    names = {}
    for path in sorted(PACKAGE.glob("*.py")):
        names[TOP if path.stem == "__init__" else f"{TOP}.{path.stem}"] = path
    return names


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """Every wangpd module ``tree`` imports, anywhere in the file (top level, in functions, under TYPE_CHECKING),
    in any form: ``import wangpd.x``, ``from wangpd import x``, ``from wangpd.x import y``, ``from . import x``,
    ``from .x import y``, and ``importlib.import_module("wangpd.x")`` with a literal name."""

    def resolve(name: str) -> str | None:
        # ``wangpd.x.y`` (an attribute path) counts as ``wangpd.x``; only modules of the package matter.
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                return candidate
        return None

    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = resolve(alias.name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: the package is flat, so one dot is wangpd itself
                base = ".".join([TOP, *([node.module] if node.module else [])]) if node.level == 1 else None
            else:
                base = node.module
            if base is None:
                continue
            base_target = resolve(base)
            if base == TOP:
                # ``from wangpd import x``: x is a submodule, or a name defined in wangpd/__init__.py.
                for alias in node.names:
                    found.add(f"{TOP}.{alias.name}" if f"{TOP}.{alias.name}" in modules else TOP)
            elif base_target:
                found.add(base_target)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    target = resolve(first.value)
                    if target:
                        found.add(target)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {
        name: _imported(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), set(modules)) - {name}
        for name, path in modules.items()
    }


def _short(module: str) -> str:
    return module.removeprefix(f"{TOP}.")


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components in no particular order, members sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _cycles(graph: dict[str, set[str]], component: list[str], limit: int = 50) -> list[list[str]]:
    """The elementary cycles inside one component, each starting at its smallest member (so each is listed once)."""
    members = set(component)
    cycles: list[list[str]] = []
    for start in component:
        path = [start]

        def walk(node: str, start: str = start, path: list[str] = path) -> None:
            for child in sorted(graph[node] & members):
                if len(cycles) >= limit:
                    return
                if child == start:
                    cycles.append([*path, start])
                elif child > start and child not in path:
                    path.append(child)
                    walk(child)
                    path.pop()

        walk(start)
    return cycles


def test_the_import_scanner_sees_every_form() -> None:
    modules = {TOP, f"{TOP}.app", f"{TOP}.store", f"{TOP}.units", f"{TOP}.errors", f"{TOP}.events", f"{TOP}.hub"}
    source = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING
import wangpd.units as u
from wangpd import __version__, errors
from . import events
from .hub import Hub
if TYPE_CHECKING:
    from wangpd.app import Daemon
def later():
    from wangpd.store import Store
    importlib.import_module("wangpd.units")
"""
    assert _imported(ast.parse(source), modules) == modules


def test_the_cycle_finder_names_each_cycle() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"b"}, "e": {"a"}}
    (component,) = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert component == ["a", "b", "c", "d"]
    assert _cycles(graph, component) == [["a", "b", "a"], ["b", "c", "d", "b"]]


def test_only_main_imports_the_daemon() -> None:
    graph = _import_graph()
    importers = sorted(_short(module) for module, imports in graph.items() if f"{TOP}.app" in imports)
    assert importers == ["main"], f"wangpd.app is imported by {importers}; only main.py may import it"


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert len(graph) > 20  # the scan found the package
    found = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            for cycle in _cycles(graph, component):
                found.append(" -> ".join(_short(m) for m in cycle))
    assert not found, "import cycles among wangpd modules:\n  " + "\n  ".join(found)
