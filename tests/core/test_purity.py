"""faktory_core performs no I/O: no module may import a runtime, a clock or randomness."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import faktory_core

FORBIDDEN = {
    "socket",
    "ssl",
    "select",
    "selectors",
    "asyncio",
    "threading",
    "time",
    "os",
    "random",
    "secrets",
    "uuid",
    "signal",
    "subprocess",
    "gevent",
    "multiprocessing",
    "concurrent",
}
PACKAGE = Path(faktory_core.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
#: The only packages outside the standard library a module may import.
DEPENDENCIES = {"attrs"}
#: faktory_core.testing serves users' tests, with the ``testing`` extra.
EXTRA_DEPENDENCIES = {"testing.py": {"hypothesis"}}


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            roots.add("<dynamic __import__>")
    return roots


def test_the_package_has_modules() -> None:
    names = {path.name for path in MODULES}
    assert {"__init__.py", "_connection.py", "_resp.py", "_state.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    roots = imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    assert not roots & (FORBIDDEN | {"<dynamic __import__>", "importlib"})


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_depends_on_attrs_only(path: Path) -> None:
    roots = imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    outside = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert outside <= DEPENDENCIES | EXTRA_DEPENDENCIES.get(path.name, set())


def test_the_checker_sees_every_import_form() -> None:
    source = (
        "import os.path\nfrom time import monotonic\nif x:\n    import socket\n__import__('ssl')"
    )
    roots = imported_roots(ast.parse(source))
    assert {"os", "time", "socket", "<dynamic __import__>"} <= roots
    assert not imported_roots(ast.parse("from . import _resp\nfrom ._job import Job"))
