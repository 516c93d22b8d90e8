"""Button icons as inline SVG, so the page asks nothing from the internet.

Panel turns an icon *name* (``icon="download"``) into Bokeh's TablerIcon, whose font is
fetched from a CDN; an SVG string is drawn inline instead. Shapes after Tabler Icons (MIT).
"""

from __future__ import annotations

_PATHS: dict[str, str] = {
    "download": '<path d="M4 17v2a2 2 0 0 0 2 2h12a2 2 0 0 0 2 -2v-2"/>'
                '<path d="M7 11l5 5l5 -5"/><path d="M12 4l0 12"/>',
    "link": '<path d="M9 15l6 -6"/>'
            '<path d="M11 6l.463 -.536a5 5 0 0 1 7.071 7.072l-.534 .464"/>'
            '<path d="M13 18l-.397 .534a5.068 5.068 0 0 1 -7.127 0a4.972 4.972 0 0 1 0 '
            '-7.071l.524 -.463"/>',
    "code": '<path d="M7 8l-4 4l4 4"/><path d="M17 8l4 4l-4 4"/><path d="M14 4l-4 16"/>',
    "player-play": '<path d="M7 4v16l13 -8z"/>',
    "brand-python": '<path d="M12 9h-7a2 2 0 0 0 -2 2v4a2 2 0 0 0 2 2h3"/>'
                    '<path d="M12 15h7a2 2 0 0 0 2 -2v-4a2 2 0 0 0 -2 -2h-3"/>'
                    '<path d="M8 9v-4a2 2 0 0 1 2 -2h4a2 2 0 0 1 2 2v5a2 2 0 0 1 -2 2h-4a2 2 0 '
                    '0 0 -2 2v5a2 2 0 0 0 2 2h4a2 2 0 0 0 2 -2v-4"/>'
                    '<path d="M11 6l0 .01"/><path d="M13 18l0 .01"/>',
}

#: Names :func:`icon` knows.
NAMES = tuple(_PATHS)


def icon(name: str) -> str:
    """The SVG of icon ``name`` for a Panel button's ``icon=`` (KeyError for others)."""
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" '
            'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
            f'stroke-linejoin="round">{_PATHS[name]}</svg>')
