"""The sandbox's static check, curated namespaces and run-time guards (no worker needed)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import FunctionRejected
from engine.sandbox import check_function
from engine.sandbox.guards import SandboxViolation, guarded_getattr, guarded_write, make_import
from engine.sandbox.namespace import Namespace, installed_imports, module_tree

ALLOWED = ("math", "numpy", "scipy.ndimage")


@pytest.mark.parametrize("source", [
    "def f(img):\n    return img[0]\n",
    "import numpy as np\ndef f(img, k=2):\n    return np.where(img[0] > k, 1, 0)\n",
    "import numpy\ndef f(img):\n    return numpy.linalg.norm(img, axis=0)\n",
    "from numpy.linalg import norm\ndef f(img):\n    return norm(img, axis=0)\n",
    "from numpy import random\ndef f(img):\n    return random.default_rng(1).random(img.shape)\n",
    "import scipy.ndimage as ndi\ndef f(img):\n    return ndi.median_filter(img, 3)\n",
    "import scipy.ndimage\ndef f(img):\n    return scipy.ndimage.median_filter(img, 3)\n",
    "from scipy import ndimage\ndef f(img):\n    return ndimage.label(img[0] > 0)[0]\n",
    "from scipy.ndimage import binary_opening\ndef f(img):\n    return binary_opening(img)\n",
    "import math\ndef f(img):\n    return img * math.pi\n",
    ("THRESHOLD = 3\n\ndef helper(a):\n    return a > THRESHOLD\n\ndef f(img):\n"
    "    return helper(img[0])\n"),
    ('"""doc"""\ndef f(img, *rest, scale=1.0, **opts):\n    """doc"""\n'
    "    out = [b * scale for b in img]\n    d = {k: v for k, v in opts.items()}\n"
    "    s = {1, 2}\n    t = f'{scale:.2f}' + '%d' % 3\n    return np.array(out)\n"),
    ("def f(img):\n    try:\n        x = 1 / 0\n    except (ZeroDivisionError, ValueError) as e:\n"
    "        x = 0\n    with np.errstate(all='ignore'):\n        y = img / 0\n"
    "    g = lambda a: a + x\n    for _ in range(2):\n        pass\n    return g(img)\n"),
    "def f(img):\n    return img.astype(object).astype(float) + isinstance(img, np.ndarray)\n",
])
def test_valid_functions_pass(source):
    checked = check_function(source, "f", allowed_imports=ALLOWED)
    assert checked.function == "f" and checked.params[0] == "img"
    assert len(checked.digest) == 32


def test_line_numbers_and_reasons():
    src = "import numpy as np\n\ndef f(img):\n    a = img + 1\n    return np.save('x', a)\n"
    with pytest.raises(FunctionRejected) as info:
        check_function(src, "f", allowed_imports=ALLOWED)
    assert info.value.lineno == 5
    assert str(info.value) == "line 5: attribute 'save' is not allowed in the sandbox"
    with pytest.raises(FunctionRejected, match="Valid choices: math, numpy, scipy.ndimage"):
        check_function("import os\ndef f(img):\n    return img\n", "f", allowed_imports=ALLOWED)


def test_allowed_imports_are_configurable():
    src = "from scipy import ndimage\ndef f(img):\n    return ndimage.median_filter(img, 3)\n"
    check_function(src, "f", allowed_imports=ALLOWED)
    with pytest.raises(FunctionRejected, match="import of 'scipy' is not allowed") as info:
        check_function(src, "f", allowed_imports=("numpy",))
    assert info.value.lineno == 1
    with pytest.raises(FunctionRejected, match="import of 'math'"):
        check_function("import math\ndef f(img):\n    return img\n", "f",
                       allowed_imports=("numpy",))
    with pytest.raises(ValueError, match="no curated namespace"):
        check_function("def f(img):\n    return img\n", "f", allowed_imports=("os",))


def test_cv2_is_allowed_by_default_only_when_installed():
    import importlib.util

    has_cv2 = importlib.util.find_spec("cv2") is not None
    assert ("cv2" in installed_imports()) == has_cv2
    assert {"math", "numpy", "scipy.ndimage"} <= set(installed_imports())


def test_rejects_oversized_and_deeply_nested_sources():
    with pytest.raises(FunctionRejected, match="too long"):
        check_function("def f(img):\n    return img\n" + "#" * 60_000, "f")
    for deep in ("(" * 5000 + "img" + ")" * 5000, "+".join(["img"] * 12000), "-" * 45000 + "img"):
        with pytest.raises(FunctionRejected, match="cannot be parsed|syntax error"):
            check_function(f"def f(img):\n    return {deep}\n", "f")


def test_curated_numpy_has_math_but_no_files_or_raw_memory():
    np_ns = module_tree(ALLOWED).paths["numpy"]
    members = np_ns.members
    for name in ("where", "argmax", "nanmean", "float32", "errstate", "linalg", "fft",
                 "random", "ma", "take_along_axis", "pi"):
        assert name in members, name
    for name in ("save", "load", "savez", "fromfile", "tofile", "memmap", "DataSource",
                 "ctypeslib", "lib", "f2py", "testing", "frombuffer", "recarray", "rec",
                 "set_printoptions", "typecodes", "sctypeDict", "char"):
        assert name not in members, name
    assert "bit_generator" not in members["random"].members
    assert not {"dump", "dumps", "load", "loads"} & set(members["ma"].members)
    with pytest.raises(AttributeError, match="read-only"):
        np_ns.where = None
    with pytest.raises(AttributeError, match="numpy.save is not available"):
        _ = np_ns.save
    # np.ndarray answers isinstance() but cannot wrap raw buffers into object arrays
    assert isinstance(np.zeros(2), members["ndarray"])
    with pytest.raises(TypeError, match="not available"):
        members["ndarray"]((2,), dtype=object, buffer=np.zeros(2))


def test_guards():
    ns = Namespace("demo", {"x": 1})
    assert guarded_getattr(np.zeros(2), "shape") == (2,)
    for obj, name in [(np.zeros(2), "__class__"), (np.zeros(2), "tofile"), ("", "format"),
                      (np.zeros(2), "resize"), (np, "save"), (ns, "_members")]:
        with pytest.raises(SandboxViolation):
            guarded_getattr(obj, name)
    lst = [1]
    guarded_write(lst)[0] = 2
    assert lst == [2]
    arr = np.zeros(4)
    guarded_write(arr)[1] = 5
    guarded_write(arr).shape = (2, 2)
    assert arr.shape == (2, 2) and arr[0, 1] == 5
    with pytest.raises(SandboxViolation):
        guarded_write(arr).dtype = np.dtype(object)
    with pytest.raises(SandboxViolation):
        guarded_write(ns)
    with pytest.raises(SandboxViolation):
        guarded_write(np.mean)
    imp = make_import(module_tree(ALLOWED))
    assert isinstance(imp("numpy"), Namespace)
    assert imp("scipy.ndimage", fromlist=("median_filter",)).median_filter is not None
    for name in ("os", "numpy.ctypeslib", "scipy"):
        with pytest.raises(SandboxViolation):
            imp(name)
    with pytest.raises(SandboxViolation):
        imp("numpy", fromlist=("_core",))


def test_cv2_namespace_keeps_image_ops_and_drops_io(monkeypatch):
    import types

    from engine.sandbox.namespace import ModuleTree

    fake = types.ModuleType("cv2")
    for name in ("GaussianBlur", "morphologyEx", "threshold", "imread", "imwrite",
                 "VideoCapture", "FileStorage", "setNumThreads", "CascadeClassifier"):
        setattr(fake, name, lambda *a, **k: None)
    fake.dnn = types.ModuleType("cv2.dnn")
    fake.MORPH_OPEN = 2
    monkeypatch.setitem(__import__("sys").modules, "cv2", fake)
    members = ModuleTree(("cv2", "numpy")).paths["cv2"].members
    assert {"GaussianBlur", "morphologyEx", "threshold", "MORPH_OPEN"} <= set(members)
    assert not {"imread", "imwrite", "VideoCapture", "FileStorage", "setNumThreads",
                "CascadeClassifier", "dnn"} & set(members)
