"""A video laid on the map (MapView.add_video, the notebook Map's add_video): an exported
timelapse lands over the bounds it was exported for (checked against pyproj, not the map's own
Mercator code), one glyph row per frame of the file (counted with ffmpeg / Pillow directly),
frames the player switches, the layer list controls it, and bad input says why."""

from __future__ import annotations

import io
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from component_data import OLD, S2
from PIL import Image
from pyproj import Transformer

from components.map import MapView
from components.notebook import Map
from engine.collection import Collection
from engine.errors import InvalidInput, NotFound
from engine.timeseries import export_video

#: Inside the fixture scenes (central Berlin, UTM 33N 385000..390120 E, 5819880..5825000 N).
BBOX = (13.33, 52.52, 13.38, 52.55)
TO_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def gray(c):
    return c.process().bands("B04").scale(0, 3000)


@pytest.fixture(scope="module")
def videos(backend, tmp_path_factory):
    """An MP4 and a GIF of the two fixture dates, written by export_video."""
    folder = tmp_path_factory.mktemp("videos")
    coll = Collection(S2, catalog=backend.catalog)
    mp4 = export_video(coll, gray, folder / "t.mp4", bbox=BBOX, width=128, fps=4,
                       renderer=backend.renderer)
    gif = export_video(coll, gray, folder / "t.gif", bbox=BBOX, width=96, fps=5,
                       renderer=backend.renderer)
    return mp4, gif


def count_frames(path: Path) -> int:
    """Frames in the file, counted without the code under test."""
    if path.suffix == ".gif":
        with Image.open(path) as im:
            return im.n_frames
    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def expected_box(bounds):
    (x0, x1), (y0, y1) = TO_3857.transform([bounds[0], bounds[2]], [bounds[1], bounds[3]])
    return x0, y0, x1, y1


def decode(url: str) -> np.ndarray:
    head, _, b64 = url.partition(",")
    assert head == "data:image/jpeg;base64"
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_video_lands_on_its_bounds_one_row_per_frame(state, videos, kind):
    path = videos[0] if kind == "mp4" else videos[1]
    view = MapView(state=state)
    layer = view.add_video(path, name="T")
    n = count_frames(path)
    assert n == 2 and layer.n_frames == n
    data = layer.source.data
    assert len(data["url"]) == n and data["frame"] == list(range(n))
    assert layer.dates == ["2020-06-01", "2020-07-01"]  # from the file's metadata
    assert layer.bounds == pytest.approx(BBOX)
    assert layer.mercator_bounds == pytest.approx(expected_box(BBOX), abs=0.01)
    glyph = layer.renderer.glyph
    assert (glyph.anchor, glyph.url, glyph.x) == ("top_left", "url", "x")
    assert layer.renderer in view.figure.renderers
    assert layer.fps == (4 if kind == "mp4" else 5)
    assert layer.player.end == n - 1 and layer.player.interval == 1000 // layer.fps
    # the frames sent to the browser are the file's frames (dates differ: B04 differs)
    frames = [decode(u) for u in data["url"]]
    w = 128 if kind == "mp4" else 96
    assert frames[0].shape[1] == w
    assert not np.array_equal(frames[0], frames[1])
    # one row shown at a time; the Python side can step it like the browser does
    assert layer.filter.indices == [0] and layer.label.text == "2020-06-01"
    layer.show_frame(1)
    assert layer.filter.indices == [1] and layer.label.text == "2020-07-01"
    assert layer.player.value == 1


def test_explicit_bounds_bytes_layer_list_and_removal(state, videos):
    mp4 = videos[0]
    view = MapView(state=state)
    other = (13.0, 52.0, 13.5, 52.5)
    layer = view.add_video(mp4.read_bytes(), other, name="Bytes", fps=10, opacity=0.5)
    assert layer.mercator_bounds == pytest.approx(expected_box(other), abs=0.01)
    assert layer.fps == 10 and layer.player.interval == 100
    spec = next(s for s in view.layers if s.name == "Bytes")
    assert view.layers[-1] is spec and spec.opacity == 0.5
    assert layer.renderer.glyph.global_alpha == 0.5
    # the layer list's visibility hides glyph and date label
    from dataclasses import replace

    view.layers = [replace(s, visible=False) if s.name == "Bytes" else s for s in view.layers]
    assert not layer.renderer.visible and not layer.label.visible
    view.layers = [replace(s, visible=True) if s.name == "Bytes" else s for s in view.layers]
    assert layer.renderer.visible and layer.label.visible
    # re-adding the name replaces; removing drops glyph, label and stops the player
    again = view.add_video(mp4, name="Bytes")
    assert layer.removed and layer.renderer not in view.figure.renderers
    assert layer.label not in view.figure.center and again.label in view.figure.center
    assert [s.name for s in view.layers].count("Bytes") == 1
    view.remove_layer("Bytes")
    assert again.removed and again.renderer not in view.figure.renderers
    assert again.player.direction == 0


def test_bad_input_says_why(state, videos, tmp_path):
    view = MapView(state=state)
    before = list(view.figure.renderers), list(view.layers)
    with pytest.raises(NotFound, match="no video file"):
        view.add_video(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("hello, not a video")
    with pytest.raises(InvalidInput, match="not a video"):
        view.add_video(text)
    png = tmp_path / "still.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(InvalidInput, match="not a video"):
        view.add_video(png.read_bytes(), BBOX)
    # too many frames: a 205-frame GIF, then the MP4 with a lower limit
    many = tmp_path / "many.gif"
    imgs = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(205)]
    imgs[0].save(many, save_all=True, append_images=imgs[1:], duration=50)
    with pytest.raises(InvalidInput, match="205 frames, more than the limit of 200"):
        view.add_video(many, BBOX)
    from engine.timeseries.video import read_video

    with pytest.raises(InvalidInput, match="more frames than the limit of 1"):
        read_video(videos[0], max_frames=1)
    with pytest.raises(InvalidInput, match="more than 64 px a side"):
        read_video(videos[0], max_side=64)
    # no metadata and no bounds; bad bounds; bad fps
    with pytest.raises(InvalidInput, match="give bounds="):
        view.add_video(_plain_gif(tmp_path))
    with pytest.raises(InvalidInput, match="greater than east"):
        view.add_video(videos[1], (13.4, 52.0, 13.3, 52.5))
    with pytest.raises(InvalidInput, match="fps"):
        view.add_video(videos[1], fps=0)
    assert (list(view.figure.renderers), list(view.layers)) == before  # nothing half-added


def _plain_gif(folder: Path) -> Path:
    path = folder / "plain.gif"
    imgs = [Image.new("RGB", (8, 8), (0, i * 50, 0)) for i in range(3)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100)
    return path


def test_notebook_map_add_video_shows_the_player_and_zooms(backend, videos):
    m = Map(backend=backend)
    out = m.add_video(videos[1])
    assert out is m
    layer = m.videos["Video t"]
    assert layer.renderer in m.shell.map.figure.renderers
    assert m.state.view_request == pytest.approx(BBOX)  # the first thing added: zoom to it
    main = m.main()
    assert any(layer.player in col.objects for col in main.select(type(main)))


def test_timelapse_show_on_map_plays_the_export_over_its_view(state):
    from components.time_tab import TimePanel

    view = MapView(state=state)
    state.param.update(collection=S2, viewport=BBOX)
    state.selected = [OLD]
    panel = TimePanel(state=state, map=view, active=True)
    tl = panel.timelapse
    assert tl._show.disabled and not tl.show_on_map()  # nothing exported yet
    tl.param.update(format="mp4", width=256, fps=3)
    assert tl.start() and tl.wait(60), tl.message
    assert not tl._show.disabled
    tl._show.clicks += 1  # the button
    layer = tl.video
    assert layer is not None and layer.name == "Timelapse"
    assert layer.n_frames == count_frames(Path(tl.path)) == tl.total
    assert layer.fps == 3 and layer.player in tl._player.objects
    assert layer.mercator_bounds == pytest.approx(expected_box(BBOX), abs=0.01)
    assert any(s.name == "Timelapse" for s in view.layers)
    assert tl.show_on_map()  # again: replaces, one layer
    assert layer.removed and [s.name for s in view.layers].count("Timelapse") == 1
