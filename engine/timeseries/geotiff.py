"""Single pixels from local GeoTIFFs, read without GDAL for point profiles.

A 100-date profile reads one pixel from ~300 files. Through rasterio each costs ~2 ms of CPU:
opening (the CRS is looked up in proj.db on every open) and inflating the whole 512x512
block holding the pixel. Here the TIFF header is parsed in Python and only the start of
that block is inflated (up to the pixel's row), ~0.1 ms per file.

This module only reads what it understands (one sample per pixel, 8-64 bit ints or floats,
no/DEFLATE compression, predictors 1/2/3, tiles or strips, tie point + pixel scale) and
says ``None`` for anything else, so the caller uses GDAL. The caller also checks the first
file of each :attr:`Layout.kind` against GDAL (see ``engine.timeseries.profiles``).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

#: Bytes read at once from the start of a file (GDAL puts a COG's header and tile index
#: first); what lies beyond is read on demand.
HEAD_BYTES = 16384
#: The largest tag value read (a 1 M block index is 8 MB); larger means a damaged file.
MAX_TAG_BYTES = 64 * 2**20
#: The largest compressed block read (GDAL's blocks are rarely over a few MB).
MAX_BLOCK_BYTES = 256 * 2**20
#: TIFF field type -> (numpy type code, size in bytes); others (rationals) are not needed.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("u1", 1), 2: ("S1", 1), 3: ("u2", 2), 4: ("u4", 4), 6: ("i1", 1), 7: ("u1", 1),
    8: ("i2", 2), 9: ("i4", 4), 11: ("f4", 4), 12: ("f8", 8), 16: ("u8", 8), 17: ("i8", 8),
    18: ("u8", 8),
}
_DEFLATE = (8, 32946)
_SAMPLE_KINDS = {1: "u", 2: "i", 3: "f"}


class Unsupported(Exception):
    """The file is not one this module reads (the caller falls back to GDAL)."""


@dataclass(frozen=True)
class Layout:
    """What reading a pixel of one GeoTIFF needs, parsed from its first IFD."""

    width: int
    height: int
    dtype: np.dtype  # in the file's byte order
    compression: int
    predictor: int
    block: tuple[int, int]  # (width, height) of a tile, or (image width, rows per strip)
    tiled: bool
    offsets: np.ndarray
    counts: np.ndarray
    transform: tuple[float, float, float, float, float, float]  # as ``Affine(*transform)``
    nodata: float | None
    #: Everything that decides how GDAL would read the file besides its size and blocks:
    #: files of one kind share the CRS and the decoding path.
    kind: tuple


def parse(path: str) -> Layout | None:
    """The layout of the GeoTIFF at ``path``, or None when this module does not read it."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return _parse(fh)
    except (Unsupported, OSError, struct.error, ValueError, IndexError):
        return None


def _parse(fh) -> Layout:
    head = fh.read(HEAD_BYTES)
    file_size = os.fstat(fh.fileno()).st_size

    def raw(offset: int, size: int) -> bytes:
        if offset + size <= len(head):
            return head[offset:offset + size]
        if offset + size > file_size or size > MAX_TAG_BYTES:
            raise Unsupported("a value beyond the end of the file")
        fh.seek(offset)
        data = fh.read(size)
        if len(data) != size:
            raise Unsupported("truncated file")
        return data

    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        raise Unsupported("not a TIFF")
    magic = struct.unpack_from(order + "H", head, 2)[0]
    if magic == 42:
        ifd = struct.unpack_from(order + "I", head, 4)[0]
        n_fmt, entry_fmt, entry_size, inline = "H", "HHI", 12, 4
    elif magic == 43:
        ifd = struct.unpack_from(order + "Q", head, 8)[0]
        n_fmt, entry_fmt, entry_size, inline = "Q", "HHQ", 20, 8
    else:
        raise Unsupported("not a TIFF")
    n_size = struct.calcsize(n_fmt)
    (n,) = struct.unpack(order + n_fmt, raw(ifd, n_size))
    table = raw(ifd + n_size, n * entry_size)
    tags: dict[int, object] = {}
    for i in range(n):
        tag, typ, count = struct.unpack_from(order + entry_fmt, table, i * entry_size)
        code, size = _TYPES.get(typ, (None, 0))
        if code is None:  # rationals and the like: no tag read here has them
            continue
        nbytes = size * count
        if nbytes > MAX_TAG_BYTES:
            raise Unsupported(f"tag {tag} is too large")
        field = i * entry_size + 4 + struct.calcsize(entry_fmt[2])
        if nbytes <= inline:
            data = table[field:field + nbytes]
        else:
            (where,) = struct.unpack_from(order + entry_fmt[2], table, field)
            data = raw(where, nbytes)
        if typ == 2:
            tags[tag] = data.split(b"\0", 1)[0].decode("latin-1")
        else:
            tags[tag] = np.frombuffer(data, np.dtype(order + code), count)

    def one(tag: int, default: int | None = None) -> int:
        value = tags.get(tag)
        if value is None:
            if default is None:
                raise Unsupported(f"tag {tag} missing")
            return default
        if isinstance(value, str) or len(value) != 1:
            raise Unsupported(f"tag {tag} is not one number")
        return int(value[0])

    if one(254, 0) != 0 or one(277, 1) != 1 or 34264 in tags:
        raise Unsupported("sub-file, several samples or a model transformation")
    width, height = one(256), one(257)
    bits, fmt = one(258, 1), one(339, 1)
    compression, predictor = one(259, 1), one(317, 1)
    if fmt not in _SAMPLE_KINDS or bits not in (8, 16, 32, 64) or (fmt == 3 and bits < 32):
        raise Unsupported("sample type")
    if "SIGNEDBYTE" in str(tags.get(42112, "")):  # GDAL's old int8: not what the tags say
        raise Unsupported("signed byte")
    dtype = np.dtype(f"{order}{_SAMPLE_KINDS[fmt]}{bits // 8}")
    if compression != 1 and compression not in _DEFLATE:
        raise Unsupported("compression")
    if not (predictor == 1 or (predictor == 2 and fmt != 3) or (predictor == 3 and fmt == 3)):
        raise Unsupported("predictor")
    if 322 in tags:
        block, tiled = (one(322), one(323)), True
        offsets, counts = tags.get(324), tags.get(325)
    else:
        block, tiled = (width, min(one(278, height), height)), False
        offsets, counts = tags.get(273), tags.get(279)
    if min(width, height, *block) < 1:
        raise Unsupported("empty image or block")
    n_blocks = math.ceil(width / block[0]) * math.ceil(height / block[1])
    if (not isinstance(offsets, np.ndarray) or not isinstance(counts, np.ndarray)
            or len(offsets) != n_blocks or len(counts) != n_blocks):
        raise Unsupported("block index")
    tie, scale = tags.get(33922), tags.get(33550)
    if not isinstance(tie, np.ndarray) or not isinstance(scale, np.ndarray) \
            or len(tie) != 6 or len(scale) < 2:
        raise Unsupported("georeferencing")
    i, j, _, x, y, _ = (float(v) for v in tie)
    sx, sy = float(scale[0]), float(scale[1])
    keys = tags.get(34735)
    if not isinstance(keys, np.ndarray) or len(keys) < 4 or len(keys) != 4 * (int(keys[3]) + 1):
        raise Unsupported("GeoKeys")
    entries = keys[4:].reshape(-1, 4)
    point = any(k == 1025 and loc == 0 and v == 2 for k, loc, _, v in entries.tolist())
    if point:  # PixelIsPoint: the tie point is a pixel's centre (GDAL's default reading)
        x, y = x - 0.5 * sx, y + 0.5 * sy
    transform = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    nodata = None
    if 42113 in tags:
        nodata = float(str(tags[42113]).strip())
    geokeys = tuple(bytes(v) if isinstance(v, np.ndarray) else v
                    for v in (keys, tags.get(34736), tags.get(34737)))
    kind = (dtype.str, compression, predictor, geokeys)
    return Layout(width, height, dtype, compression, predictor, block, tiled,
                  offsets.astype(np.int64), counts.astype(np.int64), transform, nodata, kind)


def read_pixel(path: str, layout: Layout, col: int, row: int) -> int | float:
    """The raw value at (``col``, ``row``) (inside the image), as ``DatasetReader.read`` gives
    it. Raises Unsupported for a block absent from the file (sparse) or damaged."""
    bw, bh = layout.block
    if layout.tiled:
        index = (row // bh) * math.ceil(layout.width / bw) + col // bw
        r, c = row % bh, col % bw
    else:
        index, r, c = row // bh, row % bh, col
    offset, count = int(layout.offsets[index]), int(layout.counts[index])
    if offset <= 0 or count <= 0:
        raise Unsupported("sparse block")
    if count > MAX_BLOCK_BYTES or offset > 2**62:
        raise Unsupported("damaged block index")
    item = layout.dtype.itemsize
    start = r * bw * item  # the pixel's line within the (decoded) block
    need = start + (bw if layout.predictor == 3 else c + 1) * item
    fd = os.open(path, os.O_RDONLY)
    try:
        if layout.compression == 1:
            count = min(count, need)
        data = os.pread(fd, count, offset)
    finally:
        os.close(fd)
    if layout.compression != 1:
        try:
            data = zlib.decompressobj().decompress(data, need)
        except zlib.error:
            raise Unsupported("bad DEFLATE block") from None
    if len(data) < need:
        raise Unsupported("short block")
    if layout.predictor == 1:
        return np.frombuffer(data, layout.dtype, 1, start + c * item)[0].item()
    if layout.predictor == 2:  # horizontal differences: the value is the sum of the line
        line = np.frombuffer(data, layout.dtype, c + 1, start).astype(layout.dtype.newbyteorder("="))
        return line.sum(dtype=line.dtype).item()  # wraps around like the encoder
    # floating-point predictor: byte differences over the line, then byte planes MSB first
    planes = np.cumsum(np.frombuffer(data, np.uint8, bw * item, start), dtype=np.uint8)
    value = planes.reshape(item, bw)[:, c].tobytes()
    return np.frombuffer(value, layout.dtype.newbyteorder(">"), 1)[0].item()
