"""Example user functions shipped as plain Python sources, loadable by name.

They are sent to the sandbox like any user's function (``Chain.execute(name,
source=...)``); nothing here is imported or run in-process.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path
from typing import Any

from engine.errors import NotFound

_DIR = Path(__file__).resolve().parent


def list() -> builtins.list[str]:
    """The names of the shipped algorithms."""
    return sorted(p.stem for p in _DIR.glob("*.py") if not p.stem.startswith("_"))


def load(name: str) -> tuple[str, str, dict[str, Any]]:
    """``(source, function_name, default_args)`` of a shipped algorithm.

    ``default_args`` maps each parameter after the pixel array to its default value.

    Raises:
        NotFound: no algorithm of that name (the message lists the valid ones).
    """
    names = list()
    if name not in names:
        raise NotFound(f"unknown algorithm {name!r}", choices=names)
    source = (_DIR / f"{name}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    fdef = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    params = [a.arg for a in fdef.args.args][1:]
    defaults = [ast.literal_eval(d) for d in fdef.args.defaults]
    return source, name, dict(zip(params[len(params) - len(defaults):], defaults, strict=True))
