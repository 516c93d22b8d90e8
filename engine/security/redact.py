"""Absolute server paths left out of what clients see, unless the operator asks.

Where the catalog, the COGs and the data folder live tells an attacker the server's layout
(user names, mount points) and which files to ask for. Responses show a file's name
instead (``.../B04.tif``). ``EOX_EXPOSE_PATHS=true`` (``set_expose_paths``) shows them
whole, for a private deployment where the paths help. Process-wide, like the budget.
"""

from __future__ import annotations

import re
from typing import Any

_expose = False

#: An absolute path inside free text (a message): ``/a/b/c.tif``, ``file:///a/b``,
#: ``C:\\a\\b``; not the path of an http(s) URL (preceded by the host).
_IN_TEXT = re.compile(r"(?:file://(?=/)|(?<![\w.:/\\-]))(?!/vsi)(?:/|[A-Za-z]:\\)"
                      r"(?:[^\s/\\'\"]+[/\\])+([^\s/\\'\":,;)]+)")
_ABSOLUTE = re.compile(r"^(?:file://|/(?!/)|[A-Za-z]:[\\/])")


def set_expose_paths(expose: bool) -> None:
    """Show (True) or hide (False, the default) absolute paths in responses."""
    global _expose
    _expose = bool(expose)


def exposes_paths() -> bool:
    """True when absolute paths are shown."""
    return _expose


def shown_path(text: str) -> str:
    """``text`` itself when paths are shown or it is not a local absolute path (a URL, a
    relative name); else ``.../<file name>``."""
    if _expose or not isinstance(text, str) or not _ABSOLUTE.match(text):
        return text
    name = re.split(r"[/\\]", text.rstrip("/\\"))[-1]
    return f".../{name}" if name else "..."


def redact_text(text: str) -> str:
    """A message with every absolute path in it shortened to ``.../<file name>``."""
    if _expose or not isinstance(text, str):
        return text
    return _IN_TEXT.sub(lambda m: f".../{m.group(1)}", text)


def redact_values(value: Any) -> Any:
    """A copy of a JSON value whose string values that are local absolute paths are
    shortened (for answers built from many sources, such as /healthz)."""
    if _expose:
        return value
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return shown_path(value) if isinstance(value, str) else value


def redact_hrefs(value: Any) -> Any:
    """A copy of a JSON value (STAC item, collection) whose ``href`` strings that are local
    absolute paths are shortened (URLs and relative links are kept)."""
    if _expose:
        return value
    if isinstance(value, dict):
        return {k: (shown_path(v) if k == "href" and isinstance(v, str) else redact_hrefs(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_hrefs(v) for v in value]
    return value


__all__ = ["exposes_paths", "redact_hrefs", "redact_text", "redact_values", "set_expose_paths",
           "shown_path"]
