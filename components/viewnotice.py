"""A display outside the map's view told in the dashboard: when none of the displayed scenes
lies in the view (a place zoom, a pan, a link's view elsewhere), the scene layer's tiles are
all transparent; instead of a map that silently shows nothing of it, a notification says
where the display is and how to get there. Told once per display while it stays out of view;
told again after the view came back over it and left it again.
"""

from __future__ import annotations

from typing import Any

import param

from components.state import AppState
from components.statebase import overlaps, union_box


class ViewNotice(param.Parameterized):
    """Watches ``state``'s display chain and view; notifies when no displayed scene is in
    view. (Shows nothing itself: the shell's notifications show the text.)"""

    state = param.ClassSelector(class_=AppState, doc="The session's state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._told: str | None = None  # chain id last told

    @param.depends("state.chain_id", "state.viewport", watch=True)
    def check(self) -> str:
        """Notify when the displayed scenes are all outside the view, once per chain;
        returns the text ("" when a displayed scene is in view or nothing is displayed)."""
        s = self.state
        if not s.chain_id or s.viewport is None:
            return ""
        boxes = s.selected_boxes()
        if not boxes or any(overlaps(b, s.viewport) for b in boxes):
            self._told = None
            return ""
        w, south, e, n = union_box(boxes)
        days = s.selected_days()
        what = f"scene of {days[0]}" if len(days) == 1 else (
            "scene" if len(boxes) == 1 else f"{len(boxes)} scenes")
        text = (f"Map: the displayed {what} lies outside this view (around "
                f"{(w + e) / 2:.2f}, {(south + n) / 2:.2f}), so the map shows nothing of it "
                "here: Zoom tab, 'Zoom to the selected scene(s)' goes there")
        if s.chain_id != self._told:
            self._told = s.chain_id
            s.notify(text, "info")
        return text
