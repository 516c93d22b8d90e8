"""Issue 18 item 4: Panel's own traceback display is off in served pages. A page that fails
to build, or a callback error nobody handled, reaches the visitor as plain words (escaped),
never as a traceback holding catalog or URL text; the details go to the log."""

from __future__ import annotations

import logging
from html import unescape

import panel as pn

from app import create
from app.settings import Settings

PAYLOAD = "<img src=x onerror=alert(1)>"


def test_failing_page_shows_plain_words(tmp_path, monkeypatch, caplog):
    def broken(settings, *, view=None, backend=None):
        raise ValueError(f"invalid literal for int() with base 10: '{PAYLOAD}'")

    monkeypatch.setattr(create, "create_app", broken)
    settings = Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="app.create"):
        page = create.served_page(settings)
    assert isinstance(page, pn.pane.Alert)
    assert "could not open this page" in page.object
    assert PAYLOAD not in page.object and "Traceback" not in page.object
    assert PAYLOAD in caplog.text  # the operator still gets the details


def test_unhandled_callback_error_is_an_escaped_notification(caplog):
    from components.session import exception_handler

    create.load_extensions()
    # the process default; a served session sets its own (components.session), both escape
    assert pn.config.exception_handler in (create.report_exception, exception_handler)
    area = pn.state.notifications
    before = len(area.notifications)
    with caplog.at_level(logging.ERROR, logger="app.create"):
        create.report_exception(KeyError(PAYLOAD))
    message = area.notifications[before].message
    assert "Something went wrong (KeyError)" in message
    assert "<" not in message and PAYLOAD not in message
    assert PAYLOAD in caplog.text


def test_markdown_panes_render_html_as_text():
    create.load_extensions()
    pane = pn.pane.Alert(f"Place: {PAYLOAD} **bold**")
    # Panel sends the rendered HTML escaped once more (the browser unescapes it once)
    html = unescape(pane._transform_object(pane.object)["object"])
    assert "<img" not in html and "&lt;img" in html and "<strong>bold</strong>" in html
