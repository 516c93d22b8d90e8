"""Issue 18 item 5: session ids are generated and signed by the server only. A URL-chosen
``bokeh_session_id`` is refused, and a websocket whose token was forged (another session's
id, unsigned, or signed with another key) is refused, while the page's own token works."""

from __future__ import annotations

from bokeh.util.token import check_session_id_signature, generate_jwt_token
from dashboard_client import get_page, open_websocket, page_token, token_payload


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
