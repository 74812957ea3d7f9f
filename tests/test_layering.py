"""Layers point one way (issue 15; README, "How it works").

    runtime/        imports none of ours
    outbox_relay/   runtime
    syncserver/     runtime, outbox_relay          (never portal, never stack)
    portal/         runtime, outbox_relay          (never syncserver, never stack)
    stack/          anything; only tests, chaos and bench import it
    tests/ chaos/ bench/   anything, except that chaos and bench never import tests

Read from the source, not from a running interpreter: every `import` and `from ... import`
(at module level or inside a function, relative ones resolved), `importlib.import_module`,
`__import__` and `importlib.util.find_spec` with a literal name, and any string literal that is
a dotted path into one of our packages (Django settings and entry points name modules so).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("runtime", "outbox_relay", "syncserver", "portal", "stack", "tests", "chaos", "bench")
# What each package of the product may import, besides itself.
ALLOWED = {
    "runtime": set(),
    "outbox_relay": {"runtime"},
    "syncserver": {"runtime", "outbox_relay"},
    "portal": {"runtime", "outbox_relay"},
}
_DOTTED = re.compile(r"(?:%s)(?:\.[A-Za-z_]\w*)+" % "|".join(OURS))
_IMPORTERS = {"import_module", "__import__", "find_spec"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) for every module `source` imports or names, as written above."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from portal import rates` imports portal.rates
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            yield node.lineno, node.value


def edges(package: str) -> list[tuple[str, int, str]]:
    """(file, line, our top-level package) for every import of ours in `package`'s files."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = module_name(path)
        for line, target in imported(path.read_text(), module, path.name == "__init__.py"):
            top = target.split(".")[0]
            if top in OURS:
                found.append((str(path.relative_to(ROOT)), line, target))
    return found


def report(found) -> list[str]:
    """One line per import statement: `from stack import database` is found as both
    stack and stack.database; name the module it was written as."""
    shortest: dict[tuple[str, int], str] = {}
    for file, line, target in found:
        if (file, line) not in shortest or len(target) < len(shortest[file, line]):
            shortest[file, line] = target
    return [f"{file}:{line} imports {target}" for (file, line), target in sorted(shortest.items())]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_of_the_product_imports_only_the_layers_below_it(package):
    allowed = ALLOWED[package] | {package}
    wrong = report(edge for edge in edges(package) if edge[2].split(".")[0] not in allowed)
    assert not wrong, f"{package} may import only {sorted(allowed)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", ["chaos", "bench"])
def test_chaos_and_bench_never_import_tests(package):
    wrong = report(edge for edge in edges(package) if edge[2].split(".")[0] == "tests")
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_every_kind_of_import():
    """The walk above is what the layering rests on: it must not miss an import."""
    source = '''
import os
from . import sibling
from ..outbox import models
from stack import database
import syncserver.tokens

def late():
    from chaos.load import Load
    import importlib
    importlib.import_module("bench.run")
    __import__("tests.support")

BACKENDS = ["portal.lockout.LockoutBackend"]
NOT_A_PATH = "see portal for details"
'''
    found = {target for _, target in imported(source, "portal.checklists.views")}
    assert {"syncserver.tokens", "stack", "stack.database", "portal.checklists", "portal.checklists.sibling",
            "portal.outbox.models", "chaos.load", "bench.run", "tests.support",
            "portal.lockout.LockoutBackend"} <= found
    assert not any(target.startswith("see ") for target in found)


def test_the_walk_finds_the_imports_the_layers_are_made_of():
    """A walk that found nothing would pass every rule: check it finds edges that must exist."""
    targets = {(file.split("/")[0], target.split(".")[0]) for package in ALLOWED for file, _, target in edges(package)}
    assert {("syncserver", "outbox_relay"), ("syncserver", "runtime"), ("portal", "outbox_relay"),
            ("portal", "runtime"), ("outbox_relay", "runtime")} <= targets
