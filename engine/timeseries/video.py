"""Timelapse export: one frame per date of a collection query, rendered over a bbox, labelled
with its date, encoded to MP4 (H.264 by the ffmpeg that imageio-ffmpeg bundles) or GIF.

The file is written under a temporary name beside the target and moved into place at the
end, so a failure never leaves a half-written video. The file carries its own metadata
(:class:`VideoInfo` as compact JSON in the container's comment: the MP4 ``comment`` tag, the
GIF comment extension): WGS84 bounds, grid CRS, one date per frame, fps and size, from which
:func:`read_video` (and the maps' ``add_video``) lay the video over its bounds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rio_tiler.models import ImageData

from engine.chain.model import Chain, Source
from engine.chain.steps import RGBA_NAMES
from engine.errors import ChainError, EOXError, InvalidInput, NotFound
from engine.timeseries.videofile import (
    FORMATS,
    MAX_LAYER_FRAMES,
    MAX_LAYER_SIDE,
    Video,
    VideoInfo,
    read_video,
)
from engine.timeutil import date_bound, normalize_bbox

if TYPE_CHECKING:
    from engine.collection import Collection

log = logging.getLogger(__name__)

#: Default bounds on one export: frames, pixels per side, and pixels over all frames.
MAX_FRAMES = 500
MAX_SIDE = 4096
MAX_TOTAL_PIXELS = 100_000_000

Progress = Callable[[int, int], Any]


def per_date(template: Chain) -> Callable[[Collection], Chain]:
    """A ``chain_fn`` for :func:`export_video` from a chain template: the template's steps and
    mosaic rule on each date's query (the template's own source query is replaced)."""
    src = template.source

    def chain_fn(coll: Collection) -> Chain:
        source = Source.from_query(coll.query, bands=src.bands, mosaic=src.mosaic,
                                   mosaic_expression=src.mosaic_expression, times=src.times)
        return Chain(source=source, steps=template.steps)

    return chain_fn


def collection_of(source: Source, catalog: Any) -> Collection:
    """The Collection a chain source queries (collection, dates, property filters, ids,
    spatial filter), rebuilt with the public query API so every value is validated again."""
    from engine.collection import Collection

    coll = Collection(source.collection, catalog=catalog)
    if source.bbox is not None:
        coll = coll.filter_bbox(source.bbox)
    if source.intersects is not None:
        coll = coll.filter_geometry(source.intersects)
    if source.start is not None or source.end is not None:
        coll = coll.filter_date(source.start, source.end)
    for f in source.filters:
        coll = coll.filter(f.prop, f.op, tuple(f.value) if isinstance(f.value, list) else f.value)
    if source.ids is not None:
        coll = coll.ids(source.ids)
    return coll


def export_video(coll: Collection, chain_fn: Callable[[Collection], Chain],
                 out: str | Path, *, bbox: str | Sequence[float],
                 size: tuple[int, int] | None = None, width: int | None = None,
                 fps: float = 2, dates: Sequence[str | date | datetime] | None = None,
                 max_cloud: float | None = None, label: bool = True,
                 progress: Progress | None = None, renderer: Any = None,
                 crs: str = "EPSG:3857", max_frames: int = MAX_FRAMES,
                 max_side: int = MAX_SIDE, max_pixels: int = MAX_TOTAL_PIXELS,
                 metadata: bool = True) -> Path:
    """Render one frame per date of ``coll`` over ``bbox`` and encode them to ``out``.

    Args:
        coll: the collection (its filters apply; its spatial filter becomes ``bbox``).
        chain_fn: ``chain_fn(collection_of_one_date) -> Chain`` giving an 8-bit image
            (1 band, 3 bands or RGBA), e.g. ``lambda c: c.process().bands(...).scale(...)``;
            :func:`per_date` makes one from a chain template.
        out: target file; its suffix picks the format (.mp4 or .gif).
        bbox: WGS84 (W, S, E, N).
        size: (width, height) in pixels; or ``width`` alone (height keeps the aspect ratio);
            512 px wide when neither is given. MP4 sizes are rounded down to even numbers.
        fps: frames per second (0.1..60).
        dates: only these UTC days (each must have a scene).
        max_cloud: only scenes with ``eo:cloud_cover`` at most this (0-100).
        label: draw the date in the top-left corner.
        progress: called ``progress(done, total)`` after each frame.
        renderer: an ``engine.render.TileRenderer`` (one over the collection's catalog when
            None); crs: the grid's CRS (Web Mercator, as the map).
        max_frames, max_side, max_pixels: limits (frames, pixels a side, w*h*frames).
        metadata: store a :class:`VideoInfo` (bounds, CRS, dates, fps, size) in the file's
            comment, so :func:`read_video` can lay the video on a map without bounds.

    Returns:
        The path written.
    """
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown video format {out.suffix!r} (from the file name {out.name})",
                           choices=FORMATS)
    if not out.parent.is_dir():
        raise InvalidInput(f"the folder {out.parent} does not exist")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0.1 <= fps <= 60:
        raise InvalidInput(f"fps must be a number in 0.1..60, got {fps!r}")
    box = normalize_bbox(bbox)
    dst = CRS.from_user_input(crs)
    w, h = _size(box, dst, size, width, even=fmt == "mp4", max_side=max_side)

    narrowed = coll.filter_bbox(box)
    if max_cloud is not None:
        if isinstance(max_cloud, bool) or not isinstance(max_cloud, int | float) or not (
                0 <= max_cloud <= 100):
            raise InvalidInput(f"max_cloud must be a number in 0..100, got {max_cloud!r}")
        narrowed = narrowed.filter("eo:cloud_cover", "<=", max_cloud)
    days = _days(narrowed, dates)
    if len(days) > max_frames:
        raise InvalidInput(f"{len(days)} dates is more than the limit of {max_frames} frames: "
                           "narrow the dates, pick dates=[...] or filter by cloud cover")
    if w * h * len(days) > max_pixels:
        raise InvalidInput(f"{len(days)} frames of {w}x{h} px is {w * h * len(days) / 1e6:.0f} "
                           f"Mpx, more than the limit of {max_pixels / 1e6:.0f} Mpx: make it "
                           "smaller or use fewer dates")
    if renderer is None:
        from engine.render import TileRenderer

        renderer = TileRenderer(coll.catalog)

    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=out.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    info = VideoInfo(bounds=box, crs=dst.to_string(), dates=tuple(d.isoformat() for d in days),
                     fps=float(fps), size=(w, h), frames=len(days), format=fmt)
    comment = info.comment() if metadata else None
    writer = (_Mp4Writer(tmp, w, h, fps, comment=comment) if fmt == "mp4"
              else _GifWriter(tmp, fps, comment=comment))
    try:
        for i, day in enumerate(days):
            chain = chain_fn(narrowed.filter_date(day, day))
            if not isinstance(chain, Chain):
                raise ChainError(f"chain_fn must return a Chain, got {type(chain).__name__}")
            img = renderer.render_bbox(chain, box, w, h, crs=dst)
            frame = to_rgb(img, w, h)
            if label:
                draw_label(frame, day.isoformat())
            writer.write(frame)
            if progress is not None:
                progress(i + 1, len(days))
        writer.close()
        tmp.chmod(0o644)  # mkstemp creates 0600; a video is an ordinary file
        os.replace(tmp, out)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s: %d frames of %dx%d at %g fps", out, len(days), w, h, fps)
    return out


def _size(box: tuple[float, float, float, float], crs: CRS, size: Any, width: Any, *,
          even: bool, max_side: int) -> tuple[int, int]:
    """Frame size from ``size`` or ``width`` (aspect ratio of the bbox in ``crs``)."""
    if size is not None and width is not None:
        raise InvalidInput("give size=(width, height) or width=, not both")
    if size is not None:
        if not (isinstance(size, Sequence) and len(size) == 2):
            raise InvalidInput(f"size must be (width, height), got {size!r}")
        w, h = size
    else:
        w = 512 if width is None else width
        if isinstance(w, bool) or not isinstance(w, int):
            raise InvalidInput(f"width must be an integer, got {w!r}")
        x0, y0, x1, y1 = transform_bounds("EPSG:4326", crs, *box, densify_pts=21)
        h = max(1, round(w * (y1 - y0) / (x1 - x0)))
    for name, v in (("width", w), ("height", h)):
        if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= max_side:
            raise InvalidInput(f"frame {name} must be an integer in 2..{max_side}, got {v!r}")
    if even:  # H.264 in yuv420p needs even dimensions
        w, h = w - w % 2, h - h % 2
    return w, h


def _days(coll: Collection, dates: Sequence[Any] | None) -> list[date]:
    """The UTC days with scenes in ``coll``, ascending (only ``dates`` if given)."""
    found = sorted({d.date() for d in (i.datetime for i in coll.items()) if d is not None})
    if dates is not None:
        if isinstance(dates, str | date):
            dates = [dates]
        wanted = []
        for d in dates:
            bound = date_bound(d, end=False)
            if bound is None:
                raise InvalidInput("dates must not contain None")
            wanted.append(bound.date())
        missing = [d for d in wanted if d not in found]
        if missing:
            raise InvalidInput(f"no scene on {missing[0].isoformat()} in the bbox",
                               choices=[d.isoformat() for d in found])
        found = sorted(set(wanted))
    if not found:
        raise NotFound(f"no scene of collection {coll.name!r} intersects the bbox with these "
                       "filters: move the bbox onto the data or widen the dates/cloud limit")
    return found


def to_rgb(img: ImageData | None, width: int, height: int,
           background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """An (h, w, 3) uint8 frame: the image over ``background`` (masked/transparent pixels
    and a missing image show the background)."""
    bg = np.array(background, dtype=np.uint8).reshape(1, 1, 3)
    if img is None:
        return np.broadcast_to(bg, (height, width, 3)).copy()
    arr = img.array
    data = np.asarray(arr.data)
    mask = np.ma.getmaskarray(arr)
    if list(img.band_names) == RGBA_NAMES:
        rgb = np.moveaxis(data[:3], 0, -1).astype(np.float32)
        a = (data[3].astype(np.float32) / 255.0 * ~mask[3])[..., None]
        return np.rint(rgb * a + bg.astype(np.float32) * (1 - a)).astype(np.uint8)
    if data.shape[0] == 3:
        rgb, valid = np.moveaxis(data, 0, -1), ~mask.any(axis=0)
    elif data.shape[0] == 1:
        rgb, valid = np.repeat(data[0][..., None], 3, axis=-1), ~mask[0]
    else:
        raise ChainError(f"a frame needs 1 or 3 bands or RGBA, the chain gives {data.shape[0]}")
    return np.where(valid[..., None], rgb, bg).astype(np.uint8)


def draw_label(frame: np.ndarray, text: str) -> None:
    """Draw ``text`` white on a black box in the top-left corner of ``frame`` (in place)."""
    h, w = frame.shape[:2]
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    pad = max(2, min(h, w) // 100)
    size = max(10, min(h, w) // 16)
    while True:  # shrink the font until the box fits the frame: a date is never clipped
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((pad * 2, pad * 2), text, font=font)
        if size <= 4 or (right + pad <= w - 1 and bottom + pad <= h - 1):
            break
        size -= 1
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad * 2, pad * 2), text, font=font, fill=(255, 255, 255))
    frame[...] = np.asarray(img)


class _Mp4Writer:
    """Pipe raw RGB frames to ffmpeg (libx264, yuv420p)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, *,
                 comment: str | None = None) -> None:
        import imageio_ffmpeg

        self.path = path
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg stderr, closed in close/abort
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
               "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
               "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
               "-pix_fmt", "yuv420p",
               *(["-metadata", f"comment={comment}"] if comment else []),
               "-movflags", "+faststart", "-f", "mp4", str(path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self._log)

    def _failed(self) -> EOXError:
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()[-3:]
        return EOXError(f"ffmpeg could not encode the video: {' '.join(tail) or 'no message'}")

    def write(self, frame: np.ndarray) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self.proc.wait()
            raise self._failed() from None

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        if code != 0:
            raise self._failed()
        self._log.close()

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class _GifWriter:
    """Collect paletted frames, write an animated GIF (loops forever) on close."""

    def __init__(self, path: Path, fps: float, *, comment: str | None = None) -> None:
        self.path = path
        self.comment = comment
        self.duration = max(20, round(1000 / fps))  # ms; browsers clamp below 20
        self.frames: list[Image.Image] = []

    def write(self, frame: np.ndarray) -> None:
        self.frames.append(Image.fromarray(frame).quantize(colors=256,
                                                           method=Image.Quantize.MEDIANCUT))

    def close(self) -> None:
        if not self.frames:
            raise InvalidInput("no frame to write")
        first, *rest = self.frames
        first.save(self.path, format="GIF", save_all=True, append_images=rest,
                   duration=self.duration, loop=0, disposal=1,
                   **({"comment": self.comment.encode()} if self.comment else {}))

    def abort(self) -> None:
        self.frames.clear()


__all__ = ["FORMATS", "MAX_FRAMES", "MAX_LAYER_FRAMES", "MAX_LAYER_SIDE", "MAX_SIDE",
           "MAX_TOTAL_PIXELS", "Video", "VideoInfo", "collection_of", "draw_label",
           "export_video", "per_date", "read_video", "to_rgb"]
