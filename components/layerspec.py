"""The map's layers as data: names, and one layer's visibility and opacity."""

from __future__ import annotations

from dataclasses import dataclass

#: Layers of the map, bottom first: the basemap (offline unless EOX_BASEMAP is set), the
#: displayed scenes, footprints.
LAYER_NAMES: tuple[str, ...] = ("basemap", "scenes", "footprints")

#: Name of the layer a user function (Functions tab) draws: ``AppState.function_layer``.
FUNCTION_LAYER = "user function"

@dataclass(frozen=True)
class LayerSpec:
    """One map layer's visibility and opacity."""

    name: str
    visible: bool = True
    opacity: float = 1.0
