"""A safe band-math evaluator: parse with :mod:`ast`, allowlist every node, evaluate with numpy.

Never calls Python ``eval``: the tree is walked by hand, so only numbers, band names,
arithmetic, comparisons, ``& | ~`` and the functions in :data:`FUNCTIONS` can run.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from engine.errors import ChainError

#: Longest expression accepted (characters) and largest tree (nodes): cheap DoS guards.
MAX_LENGTH = 2000
MAX_NODES = 500


def _stack_reduce(fn: Callable) -> Callable:
    def reduce(*arrays):
        if len(arrays) == 1:
            return arrays[0]
        arrays = [np.ma.asarray(a, dtype=np.float32) for a in arrays]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        full = [np.ma.MaskedArray(np.broadcast_to(a.data, shape),
                                  mask=np.broadcast_to(np.ma.getmaskarray(a), shape))
                for a in arrays]
        return fn(np.ma.stack(full), axis=0)

    return reduce


def _where(cond, a, b):
    return np.ma.where(cond, a, b)


def _clip(x, lo, hi):
    return np.ma.clip(x, lo, hi)


#: The functions an expression may call, by name.
FUNCTIONS: dict[str, Callable] = {
    "where": _where,
    "abs": np.ma.abs,
    "sqrt": np.ma.sqrt,
    "log": np.ma.log,
    "log10": np.ma.log10,
    "exp": np.ma.exp,
    "clip": _clip,
    "minimum": np.ma.minimum,
    "maximum": np.ma.maximum,
    "floor": np.ma.floor,
    "ceil": np.ma.ceil,
    "nanmean": _stack_reduce(np.ma.mean),
    "nanmax": _stack_reduce(np.ma.max),
    "nanmin": _stack_reduce(np.ma.min),
    "nansum": _stack_reduce(np.ma.sum),
    "nanmedian": _stack_reduce(np.ma.median),
}

#: How many arguments each function takes (least, most), checked when parsing.
ARITY: dict[str, tuple[int, int]] = {
    **{name: (1, 1) for name in ("abs", "sqrt", "log", "log10", "exp", "floor", "ceil")},
    "where": (3, 3), "clip": (3, 3), "minimum": (2, 2), "maximum": (2, 2),
    **{name: (1, 64) for name in ("nanmean", "nanmax", "nanmin", "nansum", "nanmedian")},
}


def _arity_text(name: str) -> str:
    least, most = ARITY[name]
    if least == most:
        return f"{least} argument{'s' if least > 1 else ''}"
    return f"{least} to {most} arguments"


_BINOPS: dict[type, Callable] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
    ast.Mod: np.mod,
    ast.BitAnd: np.logical_and,
    ast.BitOr: np.logical_or,
}
_UNARY: dict[type, Callable] = {
    ast.USub: np.negative,
    ast.UAdd: np.positive,
    ast.Invert: np.logical_not,
}
_COMPARE: dict[type, Callable] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_OP_SYMBOLS = {
    ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>", ast.BitXor: "^", ast.MatMult: "@",
    ast.Not: "not", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}


def _token(node: ast.AST, text: str) -> str:
    seg = ast.get_source_segment(text, node)
    return seg if seg is not None else type(node).__name__


class ParsedExpression:
    """A parsed, validated band-math expression; call :meth:`evaluate` with band arrays."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ChainError("expression is empty")
        if len(text) > MAX_LENGTH:
            raise ChainError(f"expression is longer than {MAX_LENGTH} characters")
        self.text = text.strip()
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            where = f" at column {exc.offset}" if exc.offset else ""
            raise ChainError(f"malformed expression {self.text!r}{where}: {exc.msg}") from None
        self.tree = tree
        self._names: tuple[str, ...] | None = None
        count = 0
        for count, node in enumerate(ast.walk(tree), start=1):
            if count > MAX_NODES:
                raise ChainError(f"expression has more than {MAX_NODES} terms")
            self._check(node)
        #: syntax nodes: each is about one numpy operation per pixel (the cost budget)
        self.terms = count

    def _check(self, node: ast.AST) -> None:
        text = self.text
        if isinstance(node, ast.Expression | ast.Load | ast.operator | ast.unaryop | ast.cmpop):
            return  # operators are checked by their BinOp/UnaryOp/Compare parent
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ChainError(f"expression: constant {_token(node, text)!r} is not a number")
            return
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise ChainError(f"expression: name {node.id!r} is not allowed")
            return  # a band name unless it is the func of a Call (checked there)
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                sym = _OP_SYMBOLS.get(type(node.op), type(node.op).__name__)
                raise ChainError(f"expression: operator {sym!r} is not allowed",
                                 choices=["+", "-", "*", "/", "**", "%", "&", "|"])
            return
        if isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                sym = _OP_SYMBOLS.get(type(node.op), type(node.op).__name__)
                raise ChainError(f"expression: operator {sym!r} is not allowed",
                                 choices=["-", "+", "~"])
            return
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARE:
                    sym = _OP_SYMBOLS.get(type(op), type(op).__name__)
                    raise ChainError(f"expression: comparison {sym!r} is not allowed",
                                     choices=["<", "<=", ">", ">=", "==", "!="])
            return
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ChainError(f"expression: call {_token(node.func, text)!r} is not allowed",
                                 choices=FUNCTIONS)
            if node.func.id not in FUNCTIONS:
                raise ChainError(f"expression: function {node.func.id!r} is not allowed",
                                 choices=FUNCTIONS)
            if node.keywords:
                raise ChainError(f"expression: keyword arguments in {node.func.id}() "
                                 "are not allowed")
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise ChainError(f"expression: '*' arguments in {node.func.id}() are not allowed")
            least, most = ARITY[node.func.id]
            if not least <= len(node.args) <= most:
                raise ChainError(f"expression: {node.func.id}() takes "
                                 f"{_arity_text(node.func.id)}, got {len(node.args)} in "
                                 f"{_token(node, text)!r}")
            return
        if isinstance(node, ast.Attribute):
            raise ChainError(f"expression: attribute access {_token(node, text)!r} "
                             "is not allowed")
        raise ChainError(f"expression: {_token(node, text)!r} ({type(node).__name__}) "
                         "is not allowed")

    def _band_names(self) -> list[str]:
        calls = {id(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)}
        return [n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and id(n) not in calls]

    def evaluate(self, bands: Mapping[str, np.ma.MaskedArray]) -> np.ma.MaskedArray:
        """Evaluate with ``bands`` (name -> masked array); returns a float32 masked array."""
        missing = [n for n in self.band_names if n not in bands]
        if missing:
            raise ChainError(f"expression {self.text!r}: unknown band {missing[0]!r}",
                             choices=bands.keys())
        # work in floating point: uint16 reflectances must not wrap around on subtraction
        values = {n: (bands[n] if np.issubdtype(np.ma.asarray(bands[n]).dtype, np.floating)
                      else np.ma.asarray(bands[n]).astype(np.float32)) for n in self.band_names}
        with np.errstate(all="ignore"):
            out = self._eval(self.tree.body, values)
        out = np.ma.asarray(out)
        if out.dtype == bool:
            out = out.astype(np.float32)
        out = np.ma.masked_invalid(out.astype(np.float32, copy=False), copy=False)
        return out

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names read (function names excluded), in order of first use."""
        if self._names is None:
            self._names = tuple(dict.fromkeys(self._band_names()))
        return self._names

    def _eval(self, node: ast.AST, bands: Mapping[str, np.ma.MaskedArray]):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return bands[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, bands), self._eval(node.right, bands)
            op = type(node.op)
            if op in (ast.Div, ast.Pow, ast.Mod):
                left = np.ma.asarray(left, dtype=np.float32) if np.ndim(left) else float(left)
            fn = {ast.Div: np.ma.divide, ast.Mod: np.ma.mod, ast.Pow: np.ma.power}.get(op)
            return (fn or _BINOPS[op])(left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, bands))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, bands)
            result = None
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comp, bands)
                part = _COMPARE[type(op)](left, right)
                result = part if result is None else np.logical_and(result, part)
                left = right
            return result
        if isinstance(node, ast.Call):
            args = [self._eval(a, bands) for a in node.args]
            try:
                return FUNCTIONS[node.func.id](*args)  # type: ignore[union-attr]
            except (TypeError, ValueError) as exc:
                raise ChainError(f"expression: bad arguments to "
                                 f"{node.func.id}(): {exc}") from None  # type: ignore[union-attr]
        raise ChainError(f"expression: {type(node).__name__} is not allowed")  # unreachable


@lru_cache(maxsize=512)
def parse_expression(text: str) -> ParsedExpression:
    """Parse and validate (cached): raises ChainError naming the offending token."""
    return ParsedExpression(text)


def split_expressions(text: str) -> list[str]:
    """Split ``"expr1; expr2"`` into its parts (one output band each)."""
    parts = [p.strip() for p in text.split(";")]
    if not all(parts):
        raise ChainError(f"malformed expression {text!r}: empty part between ';'")
    return parts
