"""The adapter that lets chains run ``execute`` steps in the sandbox pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.sandbox.pool import SandboxPool, default_pool


def chain_executor(pool: SandboxPool | None = None) -> Callable[..., np.ma.MaskedArray]:
    """An ``engine.chain`` executor running steps in ``pool`` (default: the process pool).

    The user function gets the raw pixel values; pixels masked in every input band
    (nodata) stay masked in the output. Calls are scoped to the running chain's id, so a
    sandbox process never serves two chains.
    """
    # Imported here, not at the top: the zygote imports engine.sandbox, not chains.
    from engine.chain.executor import current_chain

    def execute(step: Any, array: Any, *, band_names: Any = None,
                dates: Any = None) -> np.ma.MaskedArray:
        data = np.ma.getdata(array)
        mask = np.ma.getmask(array)
        out = (pool or default_pool()).run(step.source, step.function, data,
                                           args=list(step.args), kwargs=dict(step.kwargs),
                                           scope=current_chain())
        if mask is np.ma.nomask:
            return np.ma.MaskedArray(out)
        nodata = mask if data.ndim == 2 else mask.all(axis=-3)  # (y, x) or (time, y, x)
        if nodata.ndim == 3 and (out.ndim < 4 or out.shape[0] != nodata.shape[0]):
            nodata = nodata.all(axis=0)  # reduced over time: masked where always nodata
        if nodata.ndim == 3:  # per date: (time, 1, y, x)
            nodata = nodata[:, np.newaxis]
        else:
            nodata = nodata.reshape((1,) * (out.ndim - 2) + nodata.shape)
        return np.ma.MaskedArray(out, mask=np.broadcast_to(nodata, out.shape).copy())

    return execute


def install_executor(pool: SandboxPool | None = None) -> None:
    """Make chains run their ``execute`` steps in ``pool`` (default: the process pool)."""
    from engine.chain.executor import set_executor

    set_executor(chain_executor(pool))
