"""Bounded waits of distributed batch runs, and what the workers were doing when one ran out.

A Dask run can stop making progress without any error: every worker paused for memory
(Dask starts no task on a paused worker), a block stuck in its worker thread, workers
that never joined. Instead of waiting forever the client gives up after ``stall_s``
seconds without a finished block and raises :class:`engine.errors.BatchStalled` with
each worker's status, memory, what it executes (innermost frames) and its sandbox.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import InvalidInput

log = logging.getLogger(__name__)
_ROOT = str(Path(__file__).resolve().parents[2])

#: Seconds a distributed run may go without any block finishing (``EOX_BATCH_STALL_S``).
STALL_S = 180.0
STALL_ENV = "EOX_BATCH_STALL_S"
#: How long each question to the scheduler or the workers may take while diagnosing.
ASK_S = 10.0


def stall_timeout(value: float | None = None) -> float:
    """``value``, else ``$EOX_BATCH_STALL_S``, else :data:`STALL_S` (seconds, > 0)."""
    source = "stall_s"
    if value is None:
        text = os.environ.get(STALL_ENV, "").strip()
        if not text:
            return STALL_S
        source = STALL_ENV
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"{STALL_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise InvalidInput(f"{source} must be a positive number of seconds, got {value!r}")
    return float(value)


def _bounded(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` in a daemon thread; None when it fails or takes longer than ``timeout_s``
    (a blocked worker must not block the report of the stall)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - a diagnosis that fails is left out
            log.debug("batch stall diagnosis: %s failed: %s", fn, exc)

    t = threading.Thread(target=target, name="eox-batch-diagnose", daemon=True)
    t.start()
    t.join(timeout_s)
    return box.get("value")


def _frames(stack: Any, n: int = 2) -> str:
    """Where a worker's task is: its innermost frame and the innermost ``n`` frames of
    this project's code (not the stdlib's or a library's), innermost first."""
    if not isinstance(stack, list | tuple) or not stack:
        return "?"
    lines = [" ".join(str(frame).split()).removeprefix("File ") for frame in stack]
    ours = [text for text in lines if _ROOT in text and "-packages" not in text]
    picked = [lines[-1], *(t for t in reversed(ours[-n:]) if t != lines[-1])]
    return " <- ".join(picked)


def _sandbox(state: Any) -> str:
    if not isinstance(state, dict) or "sandbox" not in state:
        return ""
    sb = state["sandbox"]
    if sb is None:
        return "no sandbox started"
    if sb.get("closed"):
        return "sandbox closed"
    if sb.get("zygote"):
        return (f"sandbox zygote pid {sb['zygote']} running, {sb.get('busy', 0)} of "
                f"{sb.get('size', '?')} calls busy")
    if sb.get("starting"):
        return "sandbox zygote starting"
    if sb.get("start_error"):
        return f"sandbox unavailable: {sb['start_error']}"
    return "sandbox zygote not running"


def describe_workers(client: Any, labels: Mapping[Any, str], *, ask_s: float = ASK_S) -> str:
    """One line per worker: status, memory, tasks assigned, what it executes (``labels``
    names the run's task keys, e.g. ``block (0, 1)``) and its sandbox."""
    from engine.batch import blocks

    info = _bounded(lambda: client.scheduler_info(n_workers=-1)["workers"], ask_s)
    if info is None:
        return f"the scheduler did not answer within {ask_s:g} s"
    if not info:
        return "no worker is connected to the scheduler"
    processing = _bounded(client.processing, ask_s) or {}
    stacks = _bounded(lambda: client.call_stack(keys=list(labels)), ask_s) or {}
    states = _bounded(lambda: client.run(blocks.worker_state, on_error="return"), ask_s) or {}
    lines = []
    for addr in sorted(info):
        w = info[addr]
        status = str(w.get("status", "unknown"))
        parts = [status]
        memory = (w.get("metrics") or {}).get("memory")
        limit = w.get("memory_limit")
        if memory and limit:
            parts.append(f"memory {memory / 2**20:.0f} MiB of its {limit / 2**20:.0f} MiB limit")
        if status == "paused":
            parts.append("paused for memory (over distributed.worker.memory.pause): it "
                         "starts no task until its memory drops")
        ours = [k for k in processing.get(addr, ()) if k in labels]
        parts.append(f"{len(ours)} of this run's tasks assigned")
        running = stacks.get(addr) or {}
        for key, stack in list(running.items())[:2]:
            parts.append(f"executing {labels.get(key, key)} at {_frames(stack)}")
        if addr not in stacks and stacks:
            parts.append("executing none of this run's tasks")
        state = states.get(addr)
        if state is None:
            parts.append(f"did not answer within {ask_s:g} s")
        elif isinstance(state, BaseException):
            parts.append(f"could not be asked ({type(state).__name__}: {state})")
        else:
            if isinstance(state, dict) and isinstance(state.get("load"), float):
                parts.append(f"pid {state.get('pid')}, host load {state['load']:.1f}")
            if text := _sandbox(state):
                parts.append(text)
        lines.append(f"  {addr}: " + "; ".join(parts))
    return "\n".join(lines)
