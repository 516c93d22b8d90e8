"""Videos read back to lay them on a map: frames of an MP4 or GIF and the :class:`VideoInfo`
metadata an export stored in the file's comment (bounds, CRS, dates, fps, size)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import InvalidInput, NotFound

#: Output formats, chosen by the file suffix.
FORMATS: tuple[str, ...] = ("mp4", "gif")
#: Limits on a video laid on a map: every frame goes to the browser.
MAX_LAYER_FRAMES = 200
MAX_LAYER_SIDE = 1024
#: Version of the metadata JSON (``version`` key).
METADATA_VERSION = 1
#: The comment's JSON starts with this key, so other comments are told apart.
_METADATA_KEY = "eox_video"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`export_video` knows about a video: WGS84 ``bounds`` (W, S, E, N), the CRS
    of the frames' pixel grid, one ISO date per frame, fps, (width, height), frame count and
    format. Stored as compact JSON in the video's comment (see :meth:`comment`)."""

    bounds: tuple[float, float, float, float]
    crs: str = "EPSG:3857"
    dates: tuple[str, ...] = ()
    fps: float | None = None
    size: tuple[int, int] | None = None
    frames: int | None = None
    format: str | None = None

    def comment(self) -> str:
        """The JSON stored in the file: one line, no characters ffmpeg metadata escapes."""
        return json.dumps({_METADATA_KEY: METADATA_VERSION, "bounds": list(self.bounds),
                           "bounds_crs": "EPSG:4326", "crs": self.crs, "dates": list(self.dates),
                           "fps": self.fps, "size": list(self.size) if self.size else None,
                           "frames": self.frames, "format": self.format},
                          separators=(",", ":"))

    @classmethod
    def from_comment(cls, text: str | bytes | None) -> VideoInfo | None:
        """The info in a file's comment; None when the comment is not ours."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not text or _METADATA_KEY not in text:
            return None
        try:
            raw = json.loads(text)
            bounds = tuple(float(v) for v in raw["bounds"])
            if len(bounds) != 4:
                raise ValueError("bounds needs 4 numbers")
            size = raw.get("size")
            return cls(bounds=bounds,  # type: ignore[arg-type]
                       crs=str(raw.get("crs") or "EPSG:3857"),
                       dates=tuple(str(d) for d in raw.get("dates") or ()),
                       fps=float(raw["fps"]) if raw.get("fps") else None,
                       size=(int(size[0]), int(size[1])) if size else None,
                       frames=int(raw["frames"]) if raw.get("frames") is not None else None,
                       format=raw.get("format"))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidInput(f"the video's metadata is damaged ({type(exc).__name__}: "
                               f"{exc})") from None


@dataclass(frozen=True)
class Video:
    """Decoded frames ((h, w, 3) uint8 each), frames per second, format, and the metadata
    export_video stored (None for other videos)."""

    frames: list[np.ndarray]
    fps: float
    format: str
    info: VideoInfo | None = None


def _sniff(head: bytes) -> str | None:
    """'gif' or 'mp4' from a file's first bytes (None for anything else)."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        return "mp4"
    return None


def read_video(source: str | Path | bytes, *, max_frames: int = MAX_LAYER_FRAMES,
               max_side: int = MAX_LAYER_SIDE) -> Video:
    """Decode an MP4 (bundled ffmpeg) or GIF (Pillow) as written by :func:`export_video`.

    Args:
        source: a file path, or the file's bytes.
        max_frames, max_side: refuse videos with more frames or a larger side.

    Returns:
        The frames, fps (from the metadata export_video stores, else the file's own) and
        that metadata (None for a video without it).

    Raises:
        NotFound: no such file. InvalidInput: not an MP4/GIF, unreadable, or over a limit.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data, name = bytes(source), "the video data"
        fmt = _sniff(data[:16])
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise NotFound(f"no video file at {path}")
        with path.open("rb") as f:
            fmt = _sniff(f.read(16))
        data = None
    if fmt is None:
        raise InvalidInput(f"{name} is not a video: expected an MP4 or a GIF (as written by "
                           "export_video)", choices=FORMATS)
    if fmt == "gif":
        frames, fps, info = _read_gif(data if data is not None else path, name, max_frames,
                                      max_side)
    elif data is not None:
        with tempfile.TemporaryDirectory(prefix="eox-video-") as tmp:
            tmp_path = Path(tmp) / "video.mp4"
            tmp_path.write_bytes(data)
            frames, fps, info = _read_mp4(tmp_path, name, max_frames, max_side)
    else:
        frames, fps, info = _read_mp4(path, name, max_frames, max_side)
    if not frames:
        raise InvalidInput(f"{name} has no frame")
    if info is not None and info.fps:
        fps = info.fps
    return Video(frames=frames, fps=float(fps), format=fmt, info=info)


def _check_limits(name: str, n: int, size: tuple[int, int], max_frames: int,
                  max_side: int, *, exact: bool = True) -> None:
    if n > max_frames:
        count = f"{n} frames, more" if exact else "more frames"
        raise InvalidInput(f"{name} has {count} than the limit of {max_frames} for a map layer: "
                           "export fewer dates")
    if max(size) > max_side:
        raise InvalidInput(f"{name} is {size[0]}x{size[1]} px, more than {max_side} px a side, "
                           "the limit for a map layer: export a smaller width")


def _read_gif(src: bytes | Path, name: str, max_frames: int,
              max_side: int) -> tuple[list[np.ndarray], float, VideoInfo | None]:
    import io

    try:
        im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
    except (OSError, SyntaxError) as exc:
        raise InvalidInput(f"{name} is not a readable GIF: {exc}") from None
    with im:
        try:
            n = getattr(im, "n_frames", 1)
            _check_limits(name, n, im.size, max_frames, max_side)
            frames = []
            for i in range(n):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB")))
            im.seek(0)
            duration = im.info.get("duration") or 500
            comment = im.info.get("comment")
        except (OSError, EOFError, SyntaxError) as exc:  # truncated or damaged frames
            raise InvalidInput(f"{name} is not a readable GIF: {exc}") from None
    return frames, 1000.0 / float(duration), VideoInfo.from_comment(comment)


def _read_mp4(path: Path, name: str, max_frames: int,
              max_side: int) -> tuple[list[np.ndarray], float, VideoInfo | None]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as exc:
            raise InvalidInput(f"{name} is not a readable MP4: {exc}") from None
        w, h = meta["size"]
        _check_limits(name, 0, (w, h), max_frames, max_side)
        frames = []
        for raw in gen:
            if len(frames) == max_frames:
                _check_limits(name, max_frames + 1, (w, h), max_frames, max_side, exact=False)
            frames.append(np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy())
    except RuntimeError as exc:  # ffmpeg failed part way
        raise InvalidInput(f"{name} could not be decoded: {exc}") from None
    finally:
        gen.close()
    return frames, float(meta.get("fps") or 2.0), _mp4_info(path)


def _mp4_info(path: Path) -> VideoInfo | None:
    """The VideoInfo in an MP4's ``comment`` tag (read with the bundled ffmpeg)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path),
           "-f", "ffmetadata", "-"]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        return None
    for line in done.stdout.decode("utf-8", errors="replace").splitlines():
        if line.startswith("comment="):
            return VideoInfo.from_comment(re.sub(r"\\(.)", r"\1", line[len("comment="):]))
    return None
