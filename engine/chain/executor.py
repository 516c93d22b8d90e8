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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

Executor = Callable[..., Any]
#: The chain whose steps run now (the sandbox binds its processes to its id).
_chain_scope: ContextVar[Any] = ContextVar("eox_chain_scope", default=None)

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


@contextmanager
def chain_scope(chain: Any) -> Iterator[None]:
    """Mark the steps run inside as steps of ``chain`` (a Chain, or its id)."""
    token = _chain_scope.set(chain)
    try:
        yield
    finally:
        _chain_scope.reset(token)


def current_chain() -> str:
    """The id of the chain whose steps run now ('' outside :meth:`Chain.apply`); computed
    only when asked (by execute steps), not for every tile of every chain."""
    chain = _chain_scope.get()
    return "" if chain is None else chain if isinstance(chain, str) else chain.id
