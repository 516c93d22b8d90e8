"""Run-time guards that RestrictedPython-compiled user code calls (inside workers only).

``compile_restricted`` turns ``a.b`` into ``_getattr_(a, "b")``, ``a[i] = v`` into
``_write_(a)[i] = v`` and so on; these functions enforce at run time what the static
check enforces on the source, so a path the check missed still hits a wall.
"""

from __future__ import annotations

import builtins
import operator
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.PrintCollector import PrintCollector

from engine.sandbox.check import ARRAY_BLOCKED_ATTRS, BLOCKED_ATTR_PREFIXES, BLOCKED_ATTRS
from engine.sandbox.namespace import ModuleTree, Namespace


class SandboxViolation(BaseException):
    """A guard refused an access. A BaseException so ``except Exception`` cannot hide it."""


_SAFE_BUILTIN_NAMES = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "complex", "dict", "divmod", "object", "enumerate", "filter", "float", "frozenset", "hash",
    "hex",
    "int", "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next",
    "oct", "ord", "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str",
    "sum", "tuple", "zip", "None", "True", "False", "Ellipsis", "NotImplemented",
    "ArithmeticError", "AssertionError", "AttributeError", "Exception", "FloatingPointError",
    "IndexError", "KeyError", "LookupError", "MemoryError", "NameError", "NotImplementedError",
    "OverflowError", "RecursionError", "RuntimeError", "StopIteration", "TypeError",
    "UnboundLocalError", "ValueError", "ZeroDivisionError", "Warning", "RuntimeWarning",
    "UserWarning", "ImportError",
)

_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand,
    "|=": operator.ior, "^=": operator.ixor, "@=": operator.imatmul,
}


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    """``obj.name`` unless the name is private/blocked or the result is a real module."""
    if not isinstance(name, str) or name in BLOCKED_ATTRS or name.startswith(
            BLOCKED_ATTR_PREFIXES):
        raise SandboxViolation(f"attribute {name!r} is not allowed in the sandbox")
    if isinstance(obj, ModuleType):
        raise SandboxViolation("modules are not reachable from the sandbox")
    if name in ARRAY_BLOCKED_ATTRS and isinstance(obj, np.ndarray):
        raise SandboxViolation(f"the method {name!r} is not allowed on arrays")
    value = getattr(obj, name, *default)
    if isinstance(value, ModuleType):
        raise SandboxViolation("modules are not reachable from the sandbox")
    return value


class _ArrayWriter:
    """What ``_write_(array)`` returns: item writes pass, attribute writes only ``shape``."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray) -> None:
        object.__setattr__(self, "_array", array)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._array[key]

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "shape":
            raise SandboxViolation(f"setting the array attribute {name!r} is not allowed")
        self._array.shape = value


_WRITABLE = (list, dict, set, bytearray)


def guarded_write(obj: Any) -> Any:
    """Allow writes to the user's own containers and arrays, nothing shared."""
    if type(obj) in _WRITABLE:
        return obj
    if type(obj) is np.ndarray or type(obj) is np.ma.MaskedArray:
        return _ArrayWriter(obj)
    raise SandboxViolation(f"objects of type {type(obj).__name__} cannot be modified "
                           "in the sandbox")


def guarded_getitem(obj: Any, key: Any) -> Any:
    """``obj[key]`` (namespaces are not subscriptable, so nothing to guard but the type)."""
    if isinstance(obj, ModuleType | Namespace):
        raise SandboxViolation("modules are not subscriptable in the sandbox")
    return obj[key]


def guarded_inplace(op: str, x: Any, y: Any) -> Any:
    """``x op= y`` for a name."""
    try:
        return _INPLACE[op](x, y)
    except KeyError:
        raise SandboxViolation(f"operator {op} is not allowed") from None


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls with ``*args``/``**kwargs`` (RestrictedPython routes them here)."""
    return func(*args, **kwargs)


def make_import(tree: ModuleTree) -> Callable[..., Any]:
    """An ``__import__`` that only returns curated namespaces of the allowed modules."""

    def guarded_import(name: str, globals: Any = None, locals: Any = None,
                       fromlist: Any = (), level: int = 0) -> Any:
        if type(fromlist) is list and not fromlist and level == 0 and name in sys.modules:
            # PyImport_Import from C (numpy's lazy internals) finds __import__ in the
            # running frame's builtins, i.e. ours, and passes an empty *list* (import
            # statements pass None or a tuple). CPython discards what we return and
            # takes the module from sys.modules itself, so hand back nothing useful.
            return None
        if level != 0:
            raise SandboxViolation("relative imports are not allowed")
        if not isinstance(name, str) or name not in tree.paths:
            raise SandboxViolation(f"import of {name!r} is not allowed")
        if fromlist:
            for item in fromlist:
                if not (isinstance(item, str) and (tree.importable(f"{name}.{item}") or (
                        tree.importable(name) and not item.startswith("_")))):
                    raise SandboxViolation(f"import of {name}.{item} is not allowed")
            return tree.paths[name]
        if not tree.importable(name):
            raise SandboxViolation(f"import of {name!r} is not allowed")
        return tree.root(name)

    return guarded_import


class _DiscardPrints(PrintCollector):
    """``print`` in user code: collected and dropped (workers have no console)."""


def make_builtins(tree: ModuleTree) -> dict[str, Any]:
    """The builtins dict of a user function (a fresh copy per call)."""
    out = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    out["__import__"] = make_import(tree)
    return out


def make_globals(tree: ModuleTree, safe_builtins: dict[str, Any]) -> dict[str, Any]:
    """Globals of a user function: builtins, guards, and the pre-bound ``np``/``numpy``.

    A template: copy it (and its ``__builtins__``) for each call, see :func:`fresh`.
    """
    g: dict[str, Any] = {
        "__builtins__": safe_builtins,
        "__name__": "user_function",
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_write_": guarded_write,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": guarded_inplace,
        "_apply_": guarded_apply,
        "_print_": _DiscardPrints,
    }
    g.update(tree.prelude())
    return g


def fresh(template: dict[str, Any]) -> dict[str, Any]:
    """A per-call copy of the globals template (nothing a call changes reaches the next)."""
    g = dict(template)
    g["__builtins__"] = dict(template["__builtins__"])
    return g
