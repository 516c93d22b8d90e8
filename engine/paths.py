"""Default locations on disk, shared by the engine's defaults and app's Settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath

import platformdirs


def default_data_dir() -> Path:
    """Where the catalog database, converted COGs and demo data live by default."""
    return Path(platformdirs.user_data_dir("eoexplorer", appauthor=False))


def default_catalog_path() -> Path:
    """The embedded catalog database used when none is configured."""
    return default_data_dir() / "catalog.sqlite"


def user_path(text: str, *, allowed: Sequence[Path | str], what: str = "file") -> Path:
    """The real path of a file a user typed, if it lies inside ``allowed`` folders.

    Relative paths are looked up in each folder in turn, symlinks are resolved, ``..`` is
    refused outright: a path typed in the browser cannot read arbitrary server files.
    Raises InvalidInput (empty, NUL, ``..``, outside, no folders) or NotFound.
    """
    from engine.errors import InvalidInput, NotFound

    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"type the path of a {what}")
    if "\x00" in text:
        raise InvalidInput(f"a {what} path cannot contain NUL characters")
    if ".." in PurePath(text).parts:
        raise InvalidInput(f"{text!r}: '..' is not allowed in a {what} path")
    roots = [Path(d).resolve() for d in allowed]
    if not roots:
        raise InvalidInput(f"opening {what}s by server path is disabled here (no folders are "
                           "configured: EOX_RASTER_DIRS)")
    path = Path(text)
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    inside = False
    for cand in candidates:
        real = cand.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            continue
        inside = True
        if real.exists():
            return real
    where = [str(r) for r in roots]
    if not inside:
        raise InvalidInput(f"{text} is outside the folders {what}s may be read from",
                           choices=where)
    raise NotFound(f"no {what} {text} in the allowed folders", choices=where)
