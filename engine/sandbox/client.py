"""Try a user function locally before putting it in a chain (the seed's ``testExecute``).

Same checks and same sandbox as the server, on simulated input of the right shape and
dtype; errors point at the line of the user's file or notebook cell.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import FunctionRejected, SandboxError
from engine.sandbox.pool import default_pool

#: Simulated tile: 4 bands of 256 x 256 (e.g. B04, B06, B08, B11).
DEFAULT_SHAPE = (4, 256, 256)


def simulated_input(shape: tuple[int, ...] = DEFAULT_SHAPE, *, seed: int = 0) -> np.ndarray:
    """uint16 reflectance-like values (x 10000): smooth fields, some zeros (nodata)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape[-2:]
    y, x = np.mgrid[0:ny, 0:nx]
    base = 1500 + 1200 * np.sin(x / 23.0) * np.cos(y / 31.0)
    out = np.empty(shape, dtype=np.uint16)
    flat = out.reshape(-1, ny, nx)
    for i in range(flat.shape[0]):
        noise = rng.normal(0, 250, (ny, nx))
        flat[i] = np.clip(base * (0.6 + 0.25 * i) + noise, 0, 10000).astype(np.uint16)
    flat[:, :4, :4] = 0  # a nodata corner
    return out


def _source_of(func: Callable[..., Any]) -> tuple[str, str, int, str]:
    if not callable(func) or not hasattr(func, "__code__"):
        raise FunctionRejected(f"{func!r} is not a Python function")
    name = func.__name__
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise FunctionRejected(f"cannot get the source of {name}: {exc}") from None
    return source, name, func.__code__.co_firstlineno - 1, func.__code__.co_filename


def _try(func: Callable[..., Any], img: np.ndarray, args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> bool:
    source, name, offset, filename = _source_of(func)
    try:
        inspect.signature(func).bind(img, *args, **kwargs)
    except TypeError as exc:
        raise FunctionRejected(f"{filename}, line {offset + 1}: {name}() cannot be called "
                               f"with these arguments: {exc}", lineno=offset + 1,
                               reason=str(exc)) from None
    try:
        default_pool().run(source, name, img, args=args, kwargs=kwargs)
    except SandboxError as exc:
        if exc.lineno is None:
            raise
        line = exc.lineno + offset
        raise type(exc)(f"{filename}, line {line}: {exc.reason}", lineno=line,
                        reason=exc.reason, choices=exc.choices) from None
    return True


def test_execute(func: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run ``func(img, *args, **kwargs)`` in the sandbox on a simulated 4 x 256 x 256 tile.

    Returns:
        True when the function passes the checks and returns a valid array.

    Raises:
        SandboxError: (a subclass) naming the line of ``func``'s file at fault.
    """
    return _try(func, simulated_input(DEFAULT_SHAPE), args, kwargs)


def test_execute_times(n_times: int, n_bands: int, func: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> bool:
    """Like :func:`test_execute` on a simulated (n_times, n_bands, 256, 256) time stack."""
    if n_times < 1 or n_bands < 1:
        raise FunctionRejected("n_times and n_bands must be at least 1")
    return _try(func, simulated_input((n_times, n_bands, 256, 256)), args, kwargs)


# Not tests, even when imported into a test module.
test_execute.__test__ = False  # type: ignore[attr-defined]
test_execute_times.__test__ = False  # type: ignore[attr-defined]
