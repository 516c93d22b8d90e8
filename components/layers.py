"""The layer list: visibility, opacity and order of the map's tile layers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import panel as pn
import param

from components.map import MapView

LABELS = {"basemap": "Basemap", "scenes": "Scenes (display)", "footprints": "Footprints"}


class LayerList(pn.viewable.Viewer):
    """Checkbox, opacity slider and up/down buttons per layer; edits ``map.layers``."""

    map = param.ClassSelector(class_=MapView, doc="The map whose layers this edits.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # a fixed height that scrolls: the map keeps its size as layers are added
        self._column = pn.Column(sizing_mode="stretch_width", height=180, scroll=True,
                                 name="layer-list")
        self._build()

    def _set(self, name: str, **changes: Any) -> None:
        self.map.layers = [replace(s, **changes) if s.name == name else s
                           for s in self.map.layers]

    def _move(self, name: str, step: int) -> None:
        layers = list(self.map.layers)
        i = next(k for k, s in enumerate(layers) if s.name == name)
        j = i + step
        if 0 <= j < len(layers):
            layers[i], layers[j] = layers[j], layers[i]
            self.map.layers = layers
            self._build()

    @param.depends("map.layers", watch=True)
    def _layers_changed(self) -> None:
        if [s.name for s in self.map.layers] != self._names:  # added/moved, not restyled
            self._build()

    def _build(self) -> None:
        self._names = [s.name for s in self.map.layers]
        rows = []
        for spec in reversed(self.map.layers):  # top layer first, as map apps list them
            vis = pn.widgets.Checkbox(name=LABELS.get(spec.name, spec.name), value=spec.visible,
                                      width=150)
            vis.param.watch(lambda e, n=spec.name: self._set(n, visible=e.new), "value")
            op = pn.widgets.FloatSlider(value=spec.opacity, start=0, end=1, step=0.05,
                                        width=110, show_value=False, name="")
            op.param.watch(lambda e, n=spec.name: self._set(n, opacity=e.new), "value_throttled")
            up = pn.widgets.Button(name="▲", width=32, button_type="light",
                                   description="Draw this layer above the next one")
            up.on_click(lambda e, n=spec.name: self._move(n, +1))
            down = pn.widgets.Button(name="▼", width=32, button_type="light",
                                     description="Draw this layer below the previous one")
            down.on_click(lambda e, n=spec.name: self._move(n, -1))
            row = [vis, op, up, down]
            if self.map.removable(spec.name):
                drop = pn.widgets.Button(name="✕", width=32, button_type="light",
                                         description=f"Remove {spec.name} from the map")
                drop.on_click(lambda e, n=spec.name: self.map.remove_layer(n))
                row.append(drop)
            rows.append(pn.Row(*row, margin=(0, 5)))
        self._column.objects = [pn.pane.Markdown("**Layers**", margin=(0, 5)), *rows]

    def __panel__(self) -> pn.viewable.Viewable:
        return self._column
