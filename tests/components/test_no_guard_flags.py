"""No guard flags in the dashboard (issue #16: ``components/state.py`` held ten
``_syncing``/``_adjusting`` flags): state flows one way, a widget showing the state's value
sets nothing, so no callback needs ``self._busy = True ... finally: self._busy = False`` to
ignore its own echo (tests/components/test_no_echo.py checks the behaviour)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _flags_reset_in_finally(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        for stmt in node.finalbody:
            if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, bool)):
                for target in stmt.targets:
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id == "self" and target.attr.startswith("_")):
                        found.append((stmt.lineno, ast.unparse(stmt)))
    return found


def test_the_check_finds_a_guard_flag():
    code = ("def f(self):\n    self._syncing = True\n    try:\n        pass\n"
            "    finally:\n        self._syncing = False\n")
    assert _flags_reset_in_finally(ast.parse(code)) == [(6, "self._syncing = False")]


def test_no_component_or_app_module_keeps_a_guard_flag():
    found = {f"{path.relative_to(ROOT)}:{line}": text
             for package in ("components", "app")
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, text in _flags_reset_in_finally(ast.parse(path.read_text()))}
    assert found == {}
