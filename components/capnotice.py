"""The scene cap told in the dashboard: when a tile of the map's view mosaics only the
first scenes of more than the cap (the tile service's ``X-EOX-Notice``), a notification.

Bokeh's tile layers load images through ``<img>``, so the page cannot read the tiles'
headers. Instead, once per view change, the session asks the renderer the tiles come from
(shared in-process, same caps) what each tile of the view leaves out, from the scenes'
bounding boxes only (:func:`engine.render.cap.view_cap`: no pixel is read, no wait for the
tiles). The same cut in the same display is told once; another count or display tells again.
"""

from __future__ import annotations

import logging
from typing import Any

import param

from components.state import AppState
from components.tilemath import visible_tiles
from engine.errors import EOXError
from engine.render.cap import view_cap

log = logging.getLogger(__name__)


class CapNotice(param.Parameterized):
    """Watches ``state``'s display chain and view; notifies when a visible tile is cut.
    (Shows nothing itself: the shell's notifications show the text.)"""

    state = param.ClassSelector(class_=AppState, doc="The session's state.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._told: tuple | None = None  # (chain id, total, shown) last told

    @param.depends("state.chain_id", "state.viewport", "state.map_size", watch=True)
    def check(self) -> str:
        """Notify about the view's most cut tile, once per chain and count; returns the
        text ("" when no tile is cut)."""
        s = self.state
        if not s.chain_id or s.viewport is None or s.playing:
            return ""
        try:
            chain = s.backend.chain_store.get(s.chain_id)
            cap = view_cap(s.backend.renderer, chain, visible_tiles(s.viewport, s.map_size))
        except EOXError as exc:  # the display's own error is told by the display
            log.info("scene cap of the view not checked: %s", exc)
            return ""
        if cap is None:
            self._told = None
            return ""
        text = "Map: " + cap.notice("a tile of this view")
        key = (s.chain_id, cap.total, cap.shown)
        if key != self._told:
            self._told = key
            s.notify(text, "info")
        return text
