"""Edit Bokeh models from any thread or callback of a served session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panel.io.state import set_curdoc


def run_locked(doc: Any, fn: Callable[[], Any]) -> None:
    """Run ``fn`` (which edits Bokeh models) at once when there is no served session
    (``doc`` None or not served: tests, notebooks), else on the session's next tick, which
    holds the document lock: Panel runs widget callbacks and worker threads without it under
    bokeh-fastapi, and Bokeh refuses model changes there."""
    if doc is None or doc.session_context is None:
        fn()
        return

    def locked() -> None:
        with set_curdoc(doc):
            fn()

    doc.add_next_tick_callback(locked)
