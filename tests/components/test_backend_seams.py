"""The dashboard's engine collaborators (issue #16): ``Backend`` types its catalog and
renderer (never ``Any``), and no component finds one of their methods or attributes with
``getattr``: a collaborator either has it or the type checker says so."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

from components.backend import Backend

ROOT = Path(__file__).resolve().parents[2]


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_backend_collaborators_are_typed():
    hints = typing.get_type_hints(Backend)
    for name in ("catalog", "chain_store", "renderer"):
        assert inspect.isclass(hints[name]) and hints[name].__module__.startswith("engine."), \
            (name, hints[name])
    assert {f.name for f in dataclasses.fields(Backend)} >= {"catalog", "renderer"}


def test_no_component_looks_up_a_collaborator_with_getattr():
    found = []
    for path in sorted((ROOT / "components").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and node.args
                    and "backend" in _dotted(node.args[0]).split(".")):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []
