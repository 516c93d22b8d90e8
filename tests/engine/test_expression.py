"""The safe band-math evaluator: allowed syntax evaluates like numpy, anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest

from engine.chain import parse_expression
from engine.errors import ChainError


def bands():
    rng = np.random.default_rng(0)
    b4 = np.ma.MaskedArray(rng.integers(1, 3000, (8, 8)).astype(np.uint16))
    b8 = np.ma.MaskedArray(rng.integers(1, 5000, (8, 8)).astype(np.uint16))
    b8[0, 0] = np.ma.masked
    return {"B04": b4, "B08": b8}


def test_ndvi_matches_numpy_and_keeps_mask():
    b = bands()
    out = parse_expression("(B08-B04)/(B08+B04)").evaluate(b)
    n, r = b["B08"].astype(float), b["B04"].astype(float)
    expected = (n - r) / (n + r)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.filled(np.nan)[1:], expected.filled(np.nan)[1:], rtol=1e-6)
    assert out.mask[0, 0] and not out.mask[1:].any()


def test_uint_subtraction_does_not_wrap():
    b = {"A": np.ma.MaskedArray(np.array([[1]], np.uint16)),
         "B": np.ma.MaskedArray(np.array([[3]], np.uint16))}
    # the evaluator works in float: 1 - 3 is -2, not 65534
    assert float(parse_expression("(A - B) / 1").evaluate(b)[0, 0]) == -2.0


def test_functions_comparisons_and_logic():
    b = bands()
    out = parse_expression("where((B08 > 2000) & ~(B04 > 2500), sqrt(abs(B08 - B04)), -1)")
    got = out.evaluate(b)
    n, r = b["B08"].astype(float), b["B04"].astype(float)
    exp = np.where((n > 2000) & ~(r > 2500), np.sqrt(np.abs(n - r)), -1)
    np.testing.assert_allclose(got.filled(0)[1:], np.ma.filled(exp, 0)[1:], rtol=1e-6)
    mean = parse_expression("nanmean(B04, B08, 2 ** 3)").evaluate(b)
    np.testing.assert_allclose(mean[2, 2], (r[2, 2] + n[2, 2] + 8) / 3, rtol=1e-6)
    names = parse_expression("clip(B04, 100, 200) + minimum(B04, B08)").band_names
    assert sorted(names) == ["B04", "B08"]  # function names are not bands


def test_division_by_zero_is_masked_not_inf():
    b = {"A": np.ma.MaskedArray(np.array([[1.0, 0.0]])), "B": np.ma.MaskedArray(np.zeros((1, 2)))}
    out = parse_expression("A / B").evaluate(b)
    assert out.mask.all()


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os')", "'__import__' is not allowed"),
    ("B04.__class__", "attribute access"),
    ("().__class__.__bases__", "not allowed"),
    ("open('x')", "function 'open' is not allowed"),
    ("B04 // 2", "operator '//' is not allowed"),
    ("'text'", "is not a number"),
    ("lambda: 1", "Lambda"),
    ("[B04, B08]", "List"),
    ("B04 if B08 else 1", "IfExp"),
    ("B04 +", "malformed expression"),
    ("", "empty"),
    ("sqrt(x=B04)", "keyword arguments"),
    ("_secret + 1", "'_secret' is not allowed"),
    ("B04 is B08", "'is' is not allowed"),
])
def test_refused(text, fragment):
    with pytest.raises(ChainError) as err:
        parse_expression(text)
    assert fragment in str(err.value)


def test_unknown_band_lists_the_available_ones():
    with pytest.raises(ChainError) as err:
        parse_expression("B99 + B04").evaluate(bands())
    assert "unknown band 'B99'" in str(err.value) and "B04, B08" in str(err.value)


def test_function_error_lists_allowed_functions():
    with pytest.raises(ChainError) as err:
        parse_expression("eval('1')")
    assert err.value.choices and "where" in err.value.choices and "sqrt" in err.value.choices


def test_too_long_is_refused():
    with pytest.raises(ChainError, match="longer than"):
        parse_expression("+".join(["B04"] * 1000))
