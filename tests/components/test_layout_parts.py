"""Layout details of issue #14 item 8 that a component shows: scale bar away from the legend."""
from __future__ import annotations

import panel as pn
from bokeh.models import ScaleBar

from components.map import MapView
from components.shell import Shell


def test_scale_bar_is_not_above_the_legend(state):
    state.open_latest()
    shell = Shell(state=state)
    main = shell.main()
    footer = main.objects[-1]
    # the legend is at the right end of the row under the map ...
    assert footer.objects[-1] is shell._legend
    view = MapView(state=state)
    pn.Column(view).get_root()
    bars = [r for r in view._figure.center if isinstance(r, ScaleBar)]
    assert len(bars) == 1
    # ... so the scale bar is not in the map's bottom-right corner, right above it
    assert bars[0].location not in ("bottom_right", "bottom", "bottom_center")
    assert bars[0].location.startswith("top")
