"""Timelapse export (engine.timeseries.video): MP4 decoded with the bundled ffmpeg, GIF with
Pillow; frame count, size, the date order of frames (each date has a known constant value),
the date label, limits and atomic writes."""

from __future__ import annotations

from datetime import UTC, datetime

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from rasterio.warp import transform_bounds
from test_composite import BOUNDS, EPSG, build_series

from engine.collection import Collection
from engine.errors import ChainError, InvalidInput, NotFound
from engine.timeseries import export_video, per_date

DATES = [datetime(2021, 5, 1, 10, tzinfo=UTC), datetime(2021, 6, 3, 10, tzinfo=UTC),
         datetime(2021, 7, 9, 10, tzinfo=UTC)]


@pytest.fixture(scope="module")
def const(tmp_path_factory):
    """3 dates, B04 = 1000, 2000, 3000 everywhere; a WGS84 bbox inside the data."""
    catalog, _ = build_series(tmp_path_factory.mktemp("const"), name="const", dates=DATES,
                              cloud_cover=(5.0, 50.0, 20.0), constant=True)
    w, s, e, n = transform_bounds(f"EPSG:{EPSG}", "EPSG:4326", *BOUNDS)
    dx, dy = (e - w) * 0.2, (n - s) * 0.2
    yield Collection("const", catalog=catalog), (w + dx, s + dy, e - dx, n - dy)
    catalog.close()


def gray(c):
    return c.process().bands("B04").scale(0, 4000)


#: The gray level of each date (B04 = 1000 (t+1), scaled 0..4000 -> 0..255).
LEVELS = [round(1000 * (t + 1) / 4000 * 255) for t in range(3)]


def read_mp4(path):
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return meta, frames


def read_gif(path):
    with Image.open(path) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
        return im.size, frames


def label_region(frame):
    h, w = frame.shape[:2]
    return frame[: h // 6, : w // 2]


def test_mp4_frames_sizes_order_and_labels(const, tmp_path):
    coll, bbox = const
    calls = []
    out = export_video(coll, gray, tmp_path / "t.mp4", bbox=bbox, size=(161, 120), fps=4,
                       progress=lambda done, total: calls.append((done, total)))
    assert out == tmp_path / "t.mp4" and out.stat().st_size > 0
    meta, frames = read_mp4(out)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (160, 120)  # even dimensions for yuv420p
    assert meta["fps"] == pytest.approx(4)
    assert len(frames) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for frame, level in zip(frames, LEVELS, strict=True):
        centre = frame[60:110, 40:120].astype(int)  # away from the label
        assert abs(np.median(centre) - level) <= 3
        lab = label_region(frame)
        assert (lab > 200).any() and (lab < 30).any()  # white text on its black box
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


def test_gif_frames_and_label_toggle(const, tmp_path):
    coll, bbox = const
    out = export_video(coll, gray, tmp_path / "t.gif", bbox=bbox, width=100, fps=2)
    size, frames = read_gif(out)
    assert size[0] == 100 and len(frames) == 3
    with Image.open(out) as im:
        assert im.info["duration"] == 500 and im.info.get("loop") == 0
    for frame, level in zip(frames, LEVELS, strict=True):
        h, w = frame.shape[:2]
        assert abs(int(np.median(frame[h // 2:, w // 4:])) - level) <= 1
        assert (label_region(frame) > 180).any() and (label_region(frame) == 0).any()
    plain = export_video(coll, gray, tmp_path / "plain.gif", bbox=bbox, width=100, label=False)
    _, frames = read_gif(plain)
    for frame, level in zip(frames, LEVELS, strict=True):
        assert np.abs(frame.astype(int) - level).max() <= 1  # uniform: no label drawn


def test_dates_max_cloud_and_templates(const, tmp_path):
    coll, bbox = const
    _, frames = read_gif(export_video(coll, gray, tmp_path / "a.gif", bbox=bbox, width=64,
                                      dates=["2021-07-09", "2021-05-01"], label=False))
    assert [int(np.median(f)) for f in frames] == [LEVELS[0], LEVELS[2]]
    _, frames = read_gif(export_video(coll, gray, tmp_path / "b.gif", bbox=bbox, width=64,
                                      max_cloud=25, label=False))
    assert [int(np.median(f)) for f in frames] == [LEVELS[0], LEVELS[2]]
    template = gray(Collection("const", catalog=coll.catalog).ids("const-0"))
    _, frames = read_gif(export_video(coll, per_date(template), tmp_path / "c.gif", bbox=bbox,
                                      width=64, label=False))
    assert [int(np.median(f)) for f in frames] == LEVELS  # the template's ids are replaced


def test_limits_and_errors(const, tmp_path):
    coll, bbox = const
    with pytest.raises(InvalidInput, match="limit of 2 frames"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=bbox, width=64, max_frames=2)
    with pytest.raises(InvalidInput, match="Mpx"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=bbox, size=(1000, 1000),
                     max_pixels=1_000_000)
    with pytest.raises(InvalidInput, match="2..4096"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=bbox, size=(5000, 100))
    with pytest.raises(InvalidInput, match="format") as err:
        export_video(coll, gray, tmp_path / "x.avi", bbox=bbox, width=64)
    assert err.value.choices == ["gif", "mp4"]
    with pytest.raises(InvalidInput, match="fps"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=bbox, width=64, fps=0)
    with pytest.raises(InvalidInput, match="2021-05-02"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=bbox, width=64, dates=["2021-05-02"])
    with pytest.raises(NotFound, match="intersects the bbox"):
        export_video(coll, gray, tmp_path / "x.mp4", bbox=(10, 10, 10.1, 10.1), width=64)
    with pytest.raises(ChainError, match="scale"):  # uint16 values cannot be a frame
        export_video(coll, lambda c: c.process().bands("B04"), tmp_path / "x.mp4", bbox=bbox,
                     width=64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_failure_leaves_nothing_half_written(const, tmp_path, suffix):
    coll, bbox = const
    target = tmp_path / f"v.{suffix}"
    target.write_bytes(b"old")  # an existing file survives a failed export untouched

    def flaky(c):
        if c.query.start.month == 6:
            raise RuntimeError("boom on the second frame")
        return gray(c)

    with pytest.raises(RuntimeError, match="boom"):
        export_video(coll, flaky, target, bbox=bbox, width=64)
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"
