"""Issue 18 item 5: session ids are generated and signed by the server only. A URL-chosen
``bokeh_session_id`` is refused, and a websocket whose token was forged (another session's
id, unsigned, or signed with another key) is refused, while the page's own token works."""

from __future__ import annotations

import json

import pytest
from bokeh.util.token import (
    check_session_id_signature,
    generate_jwt_token,
    generate_session_id,
    get_token_payload,
)
from dashboard_client import get_page, open_websocket, page_token, pull_document, token_payload
from tiles import serve_app


def test_url_chosen_session_id_is_refused(server):
    r = get_page(server, "/?bokeh_session_id=victim-fixed-id")
    assert r.status_code == 400
    assert "bokeh_session_id" in r.text and "server chooses" in r.text
    real = page_token(get_page(server).text)
    assert open_websocket(server, real, query="bokeh_session_id=victim") == "refused 403"


def test_session_ids_are_signed_by_the_server(server):
    token = page_token(get_page(server).text)
    sid = token_payload(token)["session_id"]
    assert "." in token and "." in sid  # token and id carry signatures
    assert not check_session_id_signature(sid, secret_key=b"not-the-server-key", signed=True)


def test_forged_tokens_cannot_open_a_websocket(server):
    real = page_token(get_page(server).text)
    victim = token_payload(real)["session_id"]
    # the victim's id in a token the attacker made: unsigned, or signed with a guessed key
    unsigned = generate_jwt_token(victim, signed=False, secret_key=None)
    guessed = generate_jwt_token(victim, signed=True, secret_key=b"x" * 48)
    # the real token's payload with its signature cut off
    stripped = real.rsplit(".", 1)[0]
    for forged in (unsigned, guessed, stripped):
        assert open_websocket(server, forged) == "refused 403", forged[:40]
    # the page's own token still opens its session
    assert open_websocket(server, real) == "open"


SECRET = "s" * 48


@pytest.fixture(scope="module")
def keyed(demo_catalog, tmp_path_factory):
    """A served dashboard whose session key the test knows, and its log."""
    folder = tmp_path_factory.mktemp("serve-keyed")
    with serve_app(demo_catalog, demo_catalog.parent / "data", folder,
                   env={"EOX_SESSION_SECRET": SECRET}) as base:
        yield base, folder / "serve.log"


def test_socket_after_the_pages_session_expired_gets_the_pages_view(keyed):
    """A page whose websocket comes after its session was dropped (slow client, loaded
    server: Bokeh keeps an unused session only so long) gets a session built from the page's
    URL. It stayed blank: the session was built with the ASGI scope as its request and
    Panel's Location raised AttributeError (seen in CI under load)."""
    base, log = keyed
    real = page_token(get_page(base, "/?collection=landsat-sr").text)
    payload = get_token_payload(real)
    assert payload["arguments"]  # the page's query travels in its token
    # the server never made a session for this id: as after the page's one was dropped
    sid = generate_session_id(secret_key=SECRET.encode(), signed=True)
    extra = {k: v for k, v in payload.items() if k != "session_expiry"}
    late = generate_jwt_token(sid, secret_key=SECRET.encode(), signed=True, extra_payload=extra)
    doc = json.dumps(pull_document(base, late))
    assert "collection=landsat-sr" in doc  # the session was built from the page's URL
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "AttributeError" not in text, text[-3000:]
    assert "made again at websocket open" in text
