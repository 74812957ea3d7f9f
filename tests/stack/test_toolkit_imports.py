"""chaos and bench run the stack with the toolkit in stack/ (processes, cluster, SockJS
client), never with helpers of the test suite: `make chaos` and `make bench` must work
from the packages they ship, and a test helper may change with its tests."""
from __future__ import annotations

import ast
from pathlib import Path

from stack.processes import ROOT


def imports_of_tests(root: Path, packages: tuple[str, ...] = ("chaos", "bench")) -> list[str]:
    """`file:line module` for every import of tests (or tests.*) in the packages, including
    imports inside functions."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names
                          if name == "tests" or name.startswith("tests.")]
    return found


def test_chaos_and_bench_never_import_the_tests():
    assert imports_of_tests(ROOT) == []
