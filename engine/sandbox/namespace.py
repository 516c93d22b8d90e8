"""Curated, read-only module namespaces handed to user functions instead of real modules.

A user function never sees a real module: ``import numpy as np`` gives it a frozen
:class:`Namespace` holding only array math. Real modules would open paths to ``os``,
files (``np.save``, ``np.memmap``), raw memory (``np.ctypeslib``, ``np.lib.stride_tricks``)
and pickles; the namespaces below leave those out by name and by kind (no module
objects, no mutable containers, no raw-buffer constructors).
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

#: Imports a deployment allows by default (cv2 is added when it is installed).
DEFAULT_IMPORTS: tuple[str, ...] = ("math", "numpy", "scipy.ndimage")

#: Names pre-bound in every user function's globals (the seed's functions use ``numpy``
#: without importing it).
PRELUDE: Mapping[str, str] = MappingProxyType({"np": "numpy", "numpy": "numpy"})

#: numpy names that read or write files, pickle, reach raw memory or global state.
_NUMPY_DENY = frozenset({
    "load", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt",
    "fromfile", "fromregex", "frombuffer", "fromstring", "memmap", "DataSource",
    "ctypeslib", "lib", "f2py", "testing", "distutils", "show_config", "show_runtime",
    "info", "source", "lookfor", "get_include", "set_printoptions", "get_printoptions",
    "printoptions", "setbufsize", "getbufsize", "seterrcall", "geterrcall",
    "set_string_function", "add_newdoc", "add_docstring", "add_newdoc_ufunc", "deprecate",
    "deprecate_with_doc", "typecodes", "sctypeDict", "sctypes", "core", "char", "rec",
    "strings", "typing", "matlib", "version", "test", "from_dlpack", "recarray",
    "chararray", "polynomial", "dtypes", "exceptions", "ndarray",
})
#: numpy submodules exposed (curated the same way); all others are left out.
_NUMPY_SUBMODULES = ("linalg", "fft", "random", "ma", "emath")
_MA_DENY = frozenset({"dump", "dumps", "load", "loads", "frombuffer", "core", "extras",
                      "masked_print_option", "mvoid"})
#: Left out of every curated module: pytest runners (``np.linalg.test``...).
_ALWAYS_DENY = frozenset({"test", "Tester", "PytestTester"})

#: cv2 names touching files, devices, threads or native plugins (only when installed).
_CV2_DENY_PARTS = ("read", "write", "Video", "FileStorage", "FileNode", "dnn", "Cascade",
                   "load", "save", "Capture", "setNumThreads", "setUseOptimized", "utils",
                   "samples", "data", "ipp", "ocl", "cuda", "gapi", "haar", "imcodec",
                   "namedWindow", "imshow", "waitKey", "destroy", "Window", "Trackbar",
                   "redirectError", "setLogLevel", "Mouse", "haveImage", "Tracker", "ml")


class _ArrayTypeMeta(type):
    """Makes the curated ``np.ndarray`` answer isinstance/issubclass like the real one."""

    def __instancecheck__(cls, obj: Any) -> bool:
        import numpy as np
        return isinstance(obj, np.ndarray)

    def __subclasscheck__(cls, sub: Any) -> bool:
        import numpy as np
        return isinstance(sub, type) and issubclass(sub, np.ndarray)


class ndarray(metaclass=_ArrayTypeMeta):
    """``isinstance(x, np.ndarray)`` only: numpy's constructor can wrap raw buffers."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("numpy.ndarray(...) is not available in the sandbox; "
                        "use np.empty, np.zeros or np.array")


class Namespace:
    """A frozen module stand-in: attribute reads of its members only, no writes."""

    __slots__ = ("_members", "_name")

    def __init__(self, name: str, members: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", MappingProxyType(dict(members)))

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._members[attr]
        except KeyError:
            raise AttributeError(f"{self._name}.{attr} is not available in the sandbox") from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"{self._name} is read-only in the sandbox")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"{self._name} is read-only in the sandbox")

    def __dir__(self) -> list[str]:
        return sorted(self._members)

    def __repr__(self) -> str:
        return f"<sandboxed module {self._name}>"

    @property
    def members(self) -> Mapping[str, Any]:
        """The exposed names (for the static check)."""
        return self._members


def _curate(module: types.ModuleType, deny: Iterable[str] | None = None, *,
            deny_parts: Iterable[str] = ()) -> dict[str, Any]:
    """Public, non-module, non-mutable members of ``module`` minus ``deny``."""
    deny = frozenset(deny or ()) | _ALWAYS_DENY
    parts = tuple(deny_parts)
    out: dict[str, Any] = {}
    for name in dir(module):
        if name.startswith("_") or name in deny or any(p in name for p in parts):
            continue
        try:
            value = getattr(module, name)
        except AttributeError:  # lazy attributes that fail to load
            continue
        if isinstance(value, types.ModuleType | dict | list | set | bytearray) \
                or type(value).__name__ == "PytestTester":
            continue
        out[name] = value
    return out


def _numpy() -> Namespace:
    import numpy as np

    members = _curate(np, _NUMPY_DENY)
    members["ndarray"] = ndarray
    for sub in _NUMPY_SUBMODULES:
        deny = _MA_DENY if sub == "ma" else ()
        members[sub] = Namespace(f"numpy.{sub}", _curate(getattr(np, sub), deny))
    return Namespace("numpy", members)


def _module(name: str) -> Namespace:
    if name == "numpy":
        return _numpy()
    module = importlib.import_module(name)
    if name == "cv2":
        return Namespace(name, _curate(module, deny_parts=_CV2_DENY_PARTS))
    return Namespace(name, _curate(module))


def installed_imports(imports: Iterable[str] = DEFAULT_IMPORTS, *,
                      with_cv2: bool = True) -> tuple[str, ...]:
    """``imports`` plus cv2 when it is installed, sorted (the deployment default)."""
    names = set(imports)
    if with_cv2 and importlib.util.find_spec("cv2") is not None:
        names.add("cv2")
    return tuple(sorted(names))


class ModuleTree:
    """Every importable dotted path -> its Namespace, for the allowed imports.

    Parents of allowed submodules (``scipy`` for ``scipy.ndimage``) are virtual
    namespaces that hold only the allowed children.
    """

    def __init__(self, allowed_imports: Iterable[str]) -> None:
        self.allowed = tuple(sorted(set(allowed_imports)))
        unknown = [m for m in self.allowed if m.split(".")[0] not in _KNOWN_ROOTS]
        if unknown:
            raise ValueError(f"no curated namespace for {unknown}; known: {sorted(_KNOWN_ROOTS)}")
        self.paths: dict[str, Namespace] = {}
        for name in self.allowed:
            ns = _module(name)
            self.paths[name] = ns
            if name == "numpy":
                for sub in _NUMPY_SUBMODULES:
                    self.paths[f"numpy.{sub}"] = ns.members[sub]
        # Virtual parents, deepest first so grandparents see their children.
        for name in sorted(self.allowed, key=lambda n: -n.count(".")):
            parts = name.split(".")
            for i in range(len(parts) - 1, 0, -1):
                parent, child = ".".join(parts[:i]), parts[i]
                members = dict(self.paths[parent].members) if parent in self.paths else {}
                members[child] = self.paths[".".join(parts[: i + 1])]
                self.paths[parent] = Namespace(parent, members)

    def importable(self, path: str) -> bool:
        """True for an allowed module or a curated submodule of one."""
        return path in self.paths and any(
            path == a or path.startswith(a + ".") for a in self.allowed)

    def root(self, path: str) -> Namespace:
        """What ``import a.b.c`` binds to ``a``."""
        return self.paths[path.split(".")[0]]

    def prelude(self) -> dict[str, Namespace]:
        """The names pre-bound in every user function's globals."""
        return {alias: self.paths[mod] for alias, mod in PRELUDE.items() if mod in self.paths}


_KNOWN_ROOTS = frozenset({"numpy", "scipy", "math", "cv2"})
_trees: dict[tuple[str, ...], ModuleTree] = {}


def module_tree(allowed_imports: Iterable[str]) -> ModuleTree:
    """The (cached) curated tree for these allowed imports."""
    key = tuple(sorted(set(allowed_imports)))
    tree = _trees.get(key)
    if tree is None:
        tree = _trees[key] = ModuleTree(key)
    return tree
