"""Core's layout: no import cycles (not even through imports for type checkers only), and the module paths the guides and older code use keep importing."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import livedata_core
from livedata_core import _moved

CORE = Path(livedata_core.__file__).resolve().parent
ROOT = CORE.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool):
    """Every module named by an import of ``tree``: inside functions and under ``if TYPE_CHECKING`` too."""

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([node.module] if node.module else []))
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)
            yield from visit(ast.iter_child_nodes(node))

    yield from visit(tree.body)


def import_graph() -> dict[str, set[str]]:
    """livedata_core's modules and the core modules each imports (a package's ``__init__`` is the package)."""
    files = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for name in _imports(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_core_has_no_import_cycle():
    graph = import_graph()
    assert "livedata_core.plugin_kit.broker" in graph  # the graph is really core's
    assert cycles(graph) == []


PIECES = ("", "redis_io", "plugin_kit", "default_plugins", "recording", "runner", "cli", "testing")
"""Core's pieces in the order docs/architecture.md gives ("" is the shared vocabulary at the top)."""
FACADES = {"livedata_core", "livedata_core.__main__", "livedata_core._moved"}


def _piece(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PIECES else ""


def test_each_piece_leans_only_on_the_pieces_before_it():
    graph = import_graph()
    backwards = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items() if a not in FACADES
        for b in targets if b not in FACADES and PIECES.index(_piece(b)) > PIECES.index(_piece(a))
    )  # fmt: skip
    assert backwards == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_old_module_paths_import_the_moved_modules_themselves():
    code = (
        "import sys, livedata_core.streaming as old\n"
        "from livedata_core.streaming import HEARTBEAT\n"
        "import livedata_core.plugin_kit.streaming as new\n"
        "assert old is new and HEARTBEAT is new.HEARTBEAT is __import__('livedata_core').HEARTBEAT\n"
        "assert sys.modules['livedata_core.streaming'] is new\n"
        "assert old.__name__ == 'livedata_core.plugin_kit.streaming'\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


def test_the_package_exports_what_a_plugin_author_uses_and_stays_light():
    code = (
        "import sys, livedata_core\n"
        "assert 'websockets' not in sys.modules and 'redis' not in sys.modules, 'import livedata_core got heavy'\n"
        "from livedata_core import MergeBook, NotEntitled, PermanentError, WebSocketStream\n"
        "from livedata_core.errors import NotEntitled as N, PermanentError as P\n"
        "from livedata_core.plugin_kit.merge import MergeBook as M\n"
        "from livedata_core.plugin_kit.websocket_stream import WebSocketStream as W\n"
        "assert (NotEntitled, PermanentError, MergeBook, WebSocketStream) == (N, P, M, W)\n"
        "missing = [n for n in livedata_core.__all__ if not hasattr(livedata_core, n)]\n"
        "assert not missing, missing\n"
        "assert {'NotEntitled', 'PermanentError', 'MergeBook', 'WebSocketStream'} <= set(livedata_core.__all__)\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_path_is_the_module_at_its_new_path(old):
    assert importlib.import_module(old) is importlib.import_module(_moved.MOVED[old])


def test_a_path_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("livedata_core.no_such_module")


_FROM = re.compile(r"^\s*from (livedata_core[\w.]*) import \(?([\w, ]+)\)?\s*(?:#.*)?$", re.M)
_IMPORT = re.compile(r"^\s*import (livedata_core[\w.]*)(?: as \w+)?\s*$", re.M)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _documented_imports():
    for doc in DOCS:
        text = doc.read_text()
        for match in _FROM.finditer(text):
            names = [n.strip() for n in match.group(2).split(",") if n.strip()]
            yield pytest.param(match.group(1), names, id=f"{doc.relative_to(ROOT)}:{match.group(1)}")
        for match in _IMPORT.finditer(text):
            yield pytest.param(match.group(1), [], id=f"{doc.relative_to(ROOT)}:{match.group(1)}")


@pytest.mark.parametrize("module, names", list(_documented_imports()))
def test_every_import_shown_in_the_docs_works(module, names):
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), f"{module} has no {name}"
