"""The pluggable hook that runs ``execute`` steps (user functions) outside this process.

The sandbox installs its executor with :func:`set_executor`; without one, ``execute``
steps raise SandboxError. An executor is called as
``executor(step, array, *, band_names, dates) -> numpy array`` where ``step`` is the
validated :class:`engine.chain.steps.Execute` (function, source, args, kwargs), ``array``
a masked (band, y, x) or (time, band, y, x) array and ``dates`` the stack's dates or None.
It returns (y, x), (band, y, x) or, for stacks, (time, band, y, x) / (band, y, x) values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Executor = Callable[..., Any]

_lock = threading.Lock()
_executor: Executor | None = None


def set_executor(executor: Executor | None) -> Executor | None:
    """Install (or with None remove) the executor; returns the previous one."""
    global _executor
    with _lock:
        previous, _executor = _executor, executor
    return previous


def get_executor() -> Executor | None:
    """The executor in use, or None when server-side functions are not enabled."""
    return _executor
