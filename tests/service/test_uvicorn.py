"""End to end over a real socket: uvicorn serving the app on 127.0.0.1 (free port)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import morecantile
import pytest
import uvicorn
from service_data import make_app, true_colour


@pytest.fixture()
def server(scene):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(scene.db), log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_register_and_fetch_tiles_over_http(server):
    with httpx.Client(base_url=server, timeout=30) as http:
        created = http.post("/api/chains", json=true_colour())
        assert created.status_code == 201
        template = created.json()["tiles"]
        assert template.startswith(server + "/api/chains/")
        tms = morecantile.tms.get("WebMercatorQuad")
        centre = tms.tile(15.035, 50.08, 15)
        urls = [template.format(z=15, x=centre.x + dx, y=centre.y + dy)
                for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        # Concurrent requests through the thread pool all succeed.
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(http.get, urls))
        assert [r.status_code for r in responses] == [200] * 9
        assert all(r.content.startswith(b"\x89PNG") for r in responses)
        # A cached tile answers with the same bytes and ETag; 304 on revalidation.
        again = http.get(urls[4])
        assert again.content == responses[4].content
        assert http.get(urls[4], headers={"If-None-Match": again.headers["etag"]}).status_code == 304
        # Errors are JSON over the wire too, and the server keeps serving.
        bad = http.get(template.format(z=2, x=9, y=0))
        assert bad.status_code == 400 and bad.json()["type"] == "InvalidInput"
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["cache"]["hits"] >= 1
