"""The metadata export_video stores in the video (bounds, grid CRS, dates, fps, size) and
read_video, which decodes an export back to frames for a map layer: both formats, bytes or a
path, limits, and files that are not videos."""

from __future__ import annotations

import json
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import test_video
from PIL import Image

from engine.errors import InvalidInput, NotFound
from engine.timeseries import export_video
from engine.timeseries.video import VideoInfo, read_video

DATES = test_video.DATES
const = test_video.const  # the same 3-date series (a module fixture) and chain
gray = test_video.gray
DAYS = ("2021-05-01", "2021-06-03", "2021-07-09")




def ffmpeg_comment(path) -> str:
    """The MP4's comment tag, read by ffmpeg itself."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i",
                          str(path), "-f", "ffmetadata", "-"], capture_output=True, check=True)
    return next(line[8:] for line in out.stdout.decode().splitlines()
                if line.startswith("comment="))


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_export_stores_its_bounds_and_dates_and_read_video_returns_them(const, tmp_path, fmt):
    coll, bbox = const
    out = export_video(coll, gray, tmp_path / f"v.{fmt}", bbox=bbox, size=(80, 60), fps=5)
    assert list(tmp_path.iterdir()) == [out]  # the metadata is inside, no extra file
    if fmt == "mp4":
        raw = json.loads(ffmpeg_comment(out))
    else:
        with Image.open(out) as im:
            raw = json.loads(im.info["comment"])
    assert raw["bounds"] == pytest.approx(list(bbox)) and raw["bounds_crs"] == "EPSG:4326"
    assert raw["crs"] == "EPSG:3857" and raw["dates"] == list(DAYS)
    assert raw["fps"] == 5 and raw["size"] == [80, 60] and raw["frames"] == 3

    video = read_video(out)
    assert video.format == fmt and video.fps == 5
    assert video.info == VideoInfo(bounds=pytest.approx(bbox), crs="EPSG:3857", dates=DAYS,
                                   fps=5.0, size=(80, 60), frames=3, format=fmt)
    assert len(video.frames) == 3 and video.frames[0].shape == (60, 80, 3)
    assert video.frames[0].dtype == np.uint8
    levels = [float(np.median(f[30:55, 20:70])) for f in video.frames]
    assert levels == sorted(levels) and levels[0] < levels[-1] - 50  # dates in order
    same = read_video(out.read_bytes())  # the bytes carry the same metadata
    assert same.info == video.info and len(same.frames) == 3


def test_without_metadata_and_limits(const, tmp_path):
    coll, bbox = const
    out = export_video(coll, gray, tmp_path / "plain.mp4", bbox=bbox, width=64,
                       metadata=False)
    video = read_video(out)
    assert video.info is None and len(video.frames) == 3 and video.fps == pytest.approx(2)
    with pytest.raises(InvalidInput, match="more frames than the limit of 2"):
        read_video(out, max_frames=2)
    with pytest.raises(InvalidInput, match="more than 32 px a side"):
        read_video(out, max_side=32)
    with pytest.raises(NotFound, match="no video file"):
        read_video(tmp_path / "nope.gif")
    (tmp_path / "x.gif").write_bytes(b"GIF89a broken")
    with pytest.raises(InvalidInput, match="not a readable GIF"):
        read_video(tmp_path / "x.gif")
    with pytest.raises(InvalidInput, match="not a video") as err:
        read_video(b"\x89PNG\r\n\x1a\n....")
    assert err.value.choices == ["gif", "mp4"]
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(out.read_bytes()[:200])
    with pytest.raises(InvalidInput, match="cut.mp4"):
        read_video(truncated)


def test_truncated_gif_says_so(tmp_path):
    frames = [Image.new("RGB", (32, 32), (i * 50, 0, 0)) for i in range(4)]
    path = tmp_path / "g.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert len(read_video(path).frames) == 4 and read_video(path).fps == 10
    data = path.read_bytes()
    with pytest.raises(InvalidInput, match="the video data is not a readable GIF"):
        read_video(data[: len(data) // 2])
