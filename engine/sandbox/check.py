"""The static check of a user function: parse, allowlist the AST, compile restricted.

Runs before anything is executed (at chain registration and again in the worker), and
refuses with :class:`engine.errors.FunctionRejected` naming the user's line. The rules
are an allowlist of syntax plus name/attribute deny lists; RestrictedPython's
``compile_restricted`` then rewrites attribute, item and write access into calls to the
runtime guards of :mod:`engine.sandbox.guards` (defence in depth).
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import marshal
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython import compile_restricted_exec

from engine.errors import FunctionRejected
from engine.sandbox.namespace import (
    DEFAULT_IMPORTS,
    PRELUDE,
    ModuleTree,
    Namespace,
    installed_imports,
    module_tree,
)

#: The file name of user code in tracebacks (the worker finds the user's line by it).
USER_FILENAME = "<user function>"
MAX_SOURCE_CHARS = 50_000
MAX_NODES = 20_000

#: Builtins and names never allowed (escapes, introspection, I/O, interpreter control).
FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "hasattr", "__import__", "type", "breakpoint", "input", "help", "memoryview",
    "dir", "super", "classmethod", "staticmethod", "property", "id", "format",
    "exit", "quit", "copyright", "credits", "license", "reload", "aiter", "anext",
    "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit",
    "__builtins__", "__loader__", "__spec__", "__build_class__",
})

#: Attributes never allowed on anything: string formatting that reaches attributes,
#: file/pickle/raw-memory paths of arrays, and frame/code/traceback internals.
BLOCKED_ATTRS = frozenset({
    "format", "format_map", "mro", "tofile", "dump", "dumps", "ctypes", "cffi", "data",
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "fromfile",
    "genfromtxt", "fromregex", "memmap", "with_traceback", "gi_frame", "gi_code",
    "gi_yieldfrom", "gi_running", "gi_suspended", "cr_frame", "cr_code", "cr_await",
    "cr_origin", "ag_frame", "ag_code", "ag_await", "tb_frame", "tb_next", "tb_lasti",
    "tb_lineno", "func_globals", "func_code", "im_func", "im_self", "im_class",
    "set_printoptions", "setbufsize", "seterrcall", "capsule",
    # the real ndarray class / raw buffers behind a masked array or a view, and flags
    # that make read-only library arrays (np.ma.masked's mask) writable
    "base", "baseclass", "mvoid", "setflags", "getfield", "setfield",
})
BLOCKED_ATTR_PREFIXES = ("_", "f_", "co_", "gi_", "cr_", "ag_", "tb_")

#: Attributes refused on arrays (not on modules): ``a.resize(..., refcheck=False)``
#: frees memory that views still use.
ARRAY_BLOCKED_ATTRS = frozenset({"resize"})

_ALLOWED_NODES: frozenset[type] = frozenset({
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign,
    ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If, ast.With, ast.withitem,
    ast.Raise, ast.Try, ast.ExceptHandler, ast.Assert, ast.Import, ast.ImportFrom, ast.alias,
    ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.Delete,
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict,
    ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.comprehension, ast.Call,
    ast.keyword, ast.Compare, ast.Constant, ast.Attribute, ast.Subscript, ast.Starred,
    ast.Name, ast.List, ast.Tuple, ast.Slice, ast.JoinedStr, ast.FormattedValue,
    ast.Load, ast.Store, ast.Del, ast.And, ast.Or,
    ast.Add, ast.Sub, ast.Mult, ast.MatMult, ast.Div, ast.Mod, ast.Pow, ast.LShift,
    ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd, ast.FloorDiv,
    ast.Invert, ast.Not, ast.UAdd, ast.USub,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
})

_NODE_REASONS: dict[type, str] = {
    ast.ClassDef: "class definitions are not allowed",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.Await: "await is not allowed",
    ast.AsyncFor: "async for is not allowed",
    ast.AsyncWith: "async with is not allowed",
    ast.Yield: "yield (generators) is not allowed",
    ast.YieldFrom: "yield from (generators) is not allowed",
    ast.GeneratorExp: "generator expressions are not allowed; use a list comprehension",
    ast.Global: "global statements are not allowed",
    ast.Nonlocal: "nonlocal statements are not allowed",
    ast.Match: "match statements are not allowed",
}
_MODULE_LEVEL = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.AnnAssign,
                 ast.Pass)

_default_lock = threading.Lock()
_default_imports: tuple[str, ...] | None = None


def set_default_imports(imports: Iterable[str] | None) -> None:
    """Set the deployment's allowed imports (None: numpy, scipy.ndimage, math, cv2 if any)."""
    global _default_imports
    with _default_lock:
        _default_imports = tuple(sorted(set(imports))) if imports is not None else None


def default_imports() -> tuple[str, ...]:
    """The allowed imports used when a caller gives none."""
    return _default_imports if _default_imports is not None else installed_imports(
        DEFAULT_IMPORTS)


@dataclass(frozen=True)
class CheckedFunction:
    """A user function that passed the static check."""

    source: str
    function: str
    digest: str
    params: tuple[str, ...]
    allowed_imports: tuple[str, ...]
    #: The RestrictedPython-compiled module, marshalled (what a sandbox child runs).
    code: bytes = field(default=b"", repr=False, compare=False)


def reject(reason: str, lineno: int | None = None, *, choices: Iterable[str] | None = None
           ) -> FunctionRejected:
    """A FunctionRejected whose message starts with the user's line."""
    where = f"line {lineno}: " if lineno else ""
    return FunctionRejected(f"{where}{reason}", lineno=lineno, reason=reason, choices=choices)


class _Checker(ast.NodeVisitor):
    """Walks the tree once, raising FunctionRejected at the first offence."""

    def __init__(self, tree: ModuleTree) -> None:
        self.tree = tree
        self.aliases: dict[str, str] = {a: m for a, m in PRELUDE.items() if m in tree.paths}
        self.count = 0

    # -- generic ----------------------------------------------------------------------
    def generic_visit(self, node: ast.AST) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise reject(f"the function is too large (more than {MAX_NODES} syntax nodes)",
                         getattr(node, "lineno", None))
        kind = type(node)
        if kind not in _ALLOWED_NODES:
            reason = _NODE_REASONS.get(kind, f"{kind.__name__} is not allowed")
            raise reject(reason, getattr(node, "lineno", None))
        super().generic_visit(node)

    def _name(self, name: str | None, node: ast.AST, what: str = "name") -> None:
        if name is None:
            return
        if name.startswith("_") and name != "_":
            raise reject(f"{what} {name!r} is not allowed (names starting with '_' are "
                         "reserved)", node.lineno)
        if name in FORBIDDEN_NAMES:
            raise reject(f"{name!r} is not allowed in the sandbox", node.lineno)

    # -- statements -------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.decorator_list:
            raise reject("decorators are not allowed", node.lineno)
        self._name(node.name, node, "function name")
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self._name(node.arg, node, "parameter")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            raise reject("a bare 'except:' is not allowed; name the exception "
                         "(e.g. 'except ValueError:')", node.lineno)
        self._name(node.name, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if not isinstance(target, ast.Name | ast.Subscript):
                raise reject("only names and items can be deleted", node.lineno)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self.tree.importable(alias.name):
                raise self._bad_import(alias.name, node)
            self._name(alias.asname, node)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.aliases[root] = root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            raise reject("relative imports are not allowed", node.lineno)
        for alias in node.names:
            if alias.name == "*":
                raise reject("'import *' is not allowed; name what you import", node.lineno)
            full = f"{module}.{alias.name}"
            self._name(alias.name, node)
            self._name(alias.asname, node)
            if self.tree.importable(full):
                self.aliases[alias.asname or alias.name] = full
            elif self.tree.importable(module):
                if alias.name not in self.tree.paths[module].members:
                    raise reject(f"{full} is not available in the sandbox", node.lineno)
            else:
                raise self._bad_import(module, node)
        self.generic_visit(node)

    def _bad_import(self, name: str, node: ast.AST) -> FunctionRejected:
        return reject(f"import of {name!r} is not allowed", getattr(node, "lineno", None),
                      choices=self.tree.allowed)

    # -- expressions ------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        self._name(node.id, node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr in BLOCKED_ATTRS or attr.startswith(BLOCKED_ATTR_PREFIXES):
            raise reject(f"attribute {attr!r} is not allowed in the sandbox", node.lineno)
        base = self._resolve(node.value)
        if base is not None:
            if not isinstance(node.ctx, ast.Load):
                raise reject(f"{base._name} is read-only: cannot assign or delete "
                             f"{base._name}.{attr}", node.lineno)
            if attr not in base.members:
                raise reject(f"{base._name}.{attr} is not available in the sandbox",
                             node.lineno)
        elif attr in ARRAY_BLOCKED_ATTRS:
            raise reject(f"the method {attr!r} is not allowed on arrays "
                         f"(use np.{attr}(...) instead)", node.lineno)
        self.generic_visit(node)

    def _resolve(self, node: ast.AST) -> Namespace | None:
        """The curated namespace an expression like ``np.random`` names, if any."""
        if isinstance(node, ast.Name):
            path = self.aliases.get(node.id)
            return self.tree.paths.get(path) if path else None
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            if base is not None:
                value = base.members.get(node.attr)
                return value if isinstance(value, Namespace) else None
        return None


def _rp_errors(errors: Iterable[str]) -> FunctionRejected:
    first = next(iter(errors))
    match = re.match(r"Line (\d+): (.*)", first)
    if match:
        return reject(match.group(2).rstrip("."), int(match.group(1)))
    return reject(first)


def check_function(source: str, function: str, *,
                   allowed_imports: Iterable[str] | None = None) -> CheckedFunction:
    """Refuse ``source`` unless it is a safe definition of ``function``.

    Args:
        source: Python source defining ``function`` (helpers and imports allowed).
        function: the name of the function to call on the pixel array.
        allowed_imports: importable modules (default: the deployment's, see
            :func:`set_default_imports`).

    Returns:
        The checked function (with its source digest and parameter names).

    Raises:
        FunctionRejected: with the offending line and the reason.
    """
    allowed = tuple(sorted(set(allowed_imports))) if allowed_imports is not None else \
        default_imports()
    return _check_cached(source, function, allowed)


@functools.lru_cache(maxsize=256)
def _check_cached(source: str, function: str, allowed: tuple[str, ...]) -> CheckedFunction:
    if not isinstance(source, str) or not isinstance(function, str):
        raise reject("the source and the function name must be strings")
    if len(source) > MAX_SOURCE_CHARS:
        raise reject(f"the source is too long ({len(source)} characters, at most "
                     f"{MAX_SOURCE_CHARS})")
    if not function.isidentifier() or function.startswith("_"):
        raise reject(f"{function!r} is not a valid function name")
    try:
        tree = ast.parse(source, filename=USER_FILENAME)
    except SyntaxError as exc:
        raise reject(f"syntax error: {exc.msg}", exc.lineno) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise reject(f"the source cannot be parsed: {type(exc).__name__}") from None

    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue
        if not isinstance(stmt, _MODULE_LEVEL):
            raise reject("only imports, function definitions and constant assignments are "
                         "allowed at the top level", stmt.lineno)
    defs = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    matching = [d for d in defs if d.name == function]
    if not matching:
        raise reject(f"the source does not define a function named {function!r}",
                     choices=[d.name for d in defs] or None)
    if len(matching) > 1:
        raise reject(f"the function {function!r} is defined more than once",
                     matching[1].lineno)
    fdef = matching[0]
    positional = [a.arg for a in (*fdef.args.posonlyargs, *fdef.args.args)]
    if not positional and fdef.args.vararg is None:
        raise reject(f"{function}() must take the pixel array as its first parameter",
                     fdef.lineno)

    _refuse_rebinding(tree, function)
    try:
        _Checker(module_tree(allowed)).visit(tree)
    except RecursionError:
        raise reject("the source is too deeply nested") from None
    code = compile_user(source)  # RestrictedPython's own policy, on top of ours
    params = tuple(positional + [a.arg for a in fdef.args.kwonlyargs])
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    return CheckedFunction(source=source, function=function, digest=digest, params=params,
                           allowed_imports=allowed, code=marshal.dumps(code))


def _refuse_rebinding(tree: ast.Module, function: str) -> None:
    """The checked function is what runs: no top-level statement may rebind its name."""
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef):
            continue
        try:
            nodes = list(ast.walk(stmt))
        except RecursionError:
            raise reject("the source is too deeply nested") from None
        for node in nodes:
            bound = None
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                bound = node.id
            elif isinstance(node, ast.alias):
                bound = node.asname or node.name.split(".")[0]
            if bound == function:
                raise reject(f"the top level rebinds {function!r}, the function to run; "
                             "give it another name", stmt.lineno)


class _AugItems(ast.NodeTransformer):
    """``a[i] += v`` -> ``a[i] = a[i] + v`` when ``a`` and ``i`` have no side effects.

    RestrictedPython refuses augmented assignment to items, a common array idiom
    (``counts[mask] += 1``); with side-effect-free operands evaluating them twice is
    equivalent, and the rewritten item write still goes through the write guard.
    """

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        target = node.target
        if not isinstance(target, ast.Subscript) or any(
                isinstance(n, ast.Call | ast.NamedExpr | ast.Lambda | ast.ListComp
                           | ast.SetComp | ast.DictComp)
                for n in ast.walk(target)):
            return node
        load = ast.Subscript(value=copy.deepcopy(target.value),
                             slice=copy.deepcopy(target.slice), ctx=ast.Load())
        value = ast.BinOp(left=load, op=node.op, right=node.value)
        new = ast.Assign(targets=[target], value=value)
        return ast.fix_missing_locations(ast.copy_location(new, node))


def compile_user(source: str) -> CodeType:
    """Compile with RestrictedPython (guarded attribute/item/write access)."""
    try:
        tree = _AugItems().visit(ast.parse(source, filename=USER_FILENAME))
        result = compile_restricted_exec(tree, filename=USER_FILENAME)
    except (RecursionError, MemoryError, ValueError) as exc:
        raise reject(f"the source cannot be compiled: {type(exc).__name__}") from None
    except SyntaxError as exc:
        raise reject(f"syntax error: {exc.msg}", exc.lineno) from None
    if result.errors:
        raise _rp_errors(result.errors)
    if result.code is None:
        raise reject("the source cannot be compiled")
    return result.code
