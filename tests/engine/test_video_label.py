"""The date written on timelapse frames fits the frame (issue #14 item 8: not clipped)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.timeseries.video import draw_label


@pytest.mark.parametrize("shape", [(300, 512), (200, 48), (64, 64), (40, 120), (512, 90), (120, 40)])
def test_date_label_box_stays_inside_the_frame(shape):
    h, w = shape
    frame = np.full((h, w, 3), 100, np.uint8)
    draw_label(frame, "2013-05-11")
    black = np.all(frame == 0, axis=2)
    assert black.any(), "no label box drawn"
    rows, cols = np.nonzero(black)
    # the black box is whole: it ends before the right and bottom edges (a clipped box reaches them)
    assert cols.max() < w - 1 and rows.max() < h - 1, (shape, cols.max(), rows.max())
    # and the white text lies inside the box
    white = np.all(frame > 140, axis=2)  # brighter than the grey frame: text (antialiased)
    wr, wc = np.nonzero(white)
    assert wc.size and wc.max() < cols.max() and wr.max() < rows.max()
