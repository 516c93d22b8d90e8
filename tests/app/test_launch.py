"""Scripted launches: ``launch()`` serves the dashboard from a thread and stops cleanly; its
keywords are validated; the websocket origin check bokeh-fastapi leaves out is applied."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import httpx
import pytest

from app import launch
from app.origins import origin_allowed
from engine.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("EOX_TEST_DEMO_DIR", ROOT / ".cache" / "demo"))
DB = DEMO / "catalog.sqlite"
needs_demo = pytest.mark.skipif(not DB.exists(), reason=f"no demo catalog at {DB}")


@pytest.fixture(autouse=True, scope="module")
def _keep_chain_executor():
    """Building a service installs the sandbox executor process-wide: restore it after."""
    from engine.chain import get_executor, set_executor

    before = get_executor()
    yield
    set_executor(before)


def _free(port: int) -> bool:
    """True if a new server could listen on the port (as uvicorn does: SO_REUSEADDR, so
    connections of the old one lingering in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def _ws_status(url: str, origin: str) -> int:
    """HTTP status of a websocket handshake to ``url`` sent with ``origin``."""
    import websockets

    async def go() -> int:
        try:
            async with websockets.connect(url, origin=origin, open_timeout=10):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(go())


@needs_demo
def test_launch_serves_the_dashboard_and_stops_cleanly(caplog):
    from engine import Collection
    from engine.catalog import open_catalog

    catalog = open_catalog(DB)
    item = Collection("sentinel-2-l1c", catalog=catalog).first()
    chain = Collection("sentinel-2-l1c", catalog=catalog).ids(item.id).process().bands(
        "B04", "B03", "B02").scale(0, 3000)
    server = launch(catalog=DB, data_dir=DEMO / "data", center=(12.6, 52.49), zoom=11,
                    layers=[("True colour", chain)], show=False, title="Campaign")
    port = server.port
    try:
        assert server.running and server.url == f"http://127.0.0.1:{port}/"
        page = httpx.get(server.url, timeout=60)
        assert page.status_code == 200 and "Campaign" in page.text and "bokeh" in page.text
        assert httpx.get(server.url + "healthz", timeout=10).status_code == 200
        # the session registered the layer's chain in the store the service reads
        assert httpx.get(f"{server.url}api/chains/{chain.id}", timeout=10).status_code == 200
        ws = server.url.replace("http", "ws") + "ws"
        with caplog.at_level(logging.WARNING, logger="app.origins"):
            assert _ws_status(ws, "http://evil.example") == 403
            assert "refused a websocket from origin 'http://evil.example'" in caplog.text
            caplog.clear()
            # our own origin passes the guard (then a signed session token is needed:
            # app.pagesecurity refuses this token-less socket, also with a 403)
            assert _ws_status(ws, f"http://127.0.0.1:{port}") == 403
            assert "from origin" not in caplog.text and "unsigned token" in caplog.text
        with pytest.raises(InvalidInput, match=f"cannot listen on 127.0.0.1:{port}"):
            launch(catalog=DB, port=port)
    finally:
        server.stop()
    assert not server.running and not server._thread.is_alive() and _free(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_launch_rejects_unknown_keys_and_bad_values():
    with pytest.raises(InvalidInput, match=r"launch\(\): unknown key 'zom' \(did you mean "
                                           r"'zoom'\?\)") as err:
        launch(zom=3)
    assert "zoom" in err.value.choices and "catalog" in err.value.choices
    with pytest.raises(InvalidInput, match=r"launch\(\): invalid value for 'center"):
        launch(center=(1.0,), zoom=3)


def test_origin_rule_is_bokehs():
    allowed = ["127.0.0.1:5006", "*.example.org", "embed.example:8443"]
    assert origin_allowed("http://127.0.0.1:5006", allowed)
    assert origin_allowed("http://maps.example.org", allowed)  # port 80 implied
    assert origin_allowed("https://embed.example:8443", allowed)
    assert not origin_allowed("http://127.0.0.1:5007", allowed)
    assert not origin_allowed("null", allowed)  # file:// pages and sandboxed frames
