"""Issue #18 item 7: which addresses count as loopback, and the Host names the server
answers (no DNS rebinding, no foreign Host echoed into TileJSON or registration URLs)."""

from __future__ import annotations

import logging

import pytest
from service_data import true_colour
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.auth import access_policy
from app.wiring import allowed_hosts, build_service


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "192.0.2.7", "eo.example.org"])
def test_wildcard_and_public_addresses_are_not_loopback(settings_for, address, caplog):
    settings = settings_for(address=address)
    assert not settings.is_loopback
    with caplog.at_level(logging.WARNING, logger="app.auth"):
        policy = access_policy(settings)
    assert policy.read_per_minute and policy.write_per_minute  # limits on
    assert "without API keys" in caplog.text  # and the operator is told


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses(settings_for, address):
    assert settings_for(address=address).is_loopback


def test_default_hosts_are_the_loopback_names_and_the_bound_address(settings_for):
    assert allowed_hosts(settings_for()) == ["localhost", "127.0.0.1", "::1"]
    assert "192.0.2.7" in allowed_hosts(settings_for(address="192.0.2.7"))
    assert allowed_hosts(settings_for(address="0.0.0.0")) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts(settings_for(allowed_hosts=["eo.example.org"])) == ["eo.example.org"]


@pytest.fixture
def served(settings_for):
    def make(**fields):
        return build_service(settings_for(**fields))
    return make


@pytest.mark.parametrize("host", ["attacker.example", "127.0.0.1.nip.io", "localhost.evil"])
def test_a_foreign_host_is_refused_naming_the_setting(served, host):
    with TestClient(served(), base_url=f"http://{host}:5006") as c:
        for r in (c.get("/healthz"), c.post("/api/chains", json=true_colour()),
                  c.get("/api/collections")):
            assert r.status_code == 400, r.text
            body = r.json()
            assert "EOX_ALLOWED_HOSTS" in body["detail"] and host in body["detail"]
            assert "localhost" in body["choices"]


@pytest.mark.parametrize("base", ["http://localhost:5006", "http://127.0.0.1:5006",
                                  "http://[::1]:5006", "http://LOCALHOST."])
def test_loopback_names_are_served(served, base):
    with TestClient(served(), base_url=base) as c:
        assert c.get("/healthz").status_code == 200


def test_a_foreign_host_cannot_open_a_websocket(served):
    with (TestClient(served(), base_url="http://attacker.example") as c,
          pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws")):
        pass


def test_urls_in_answers_carry_only_allowed_hosts(served):
    app = served(allowed_hosts=["eo.example.org", "*.tiles.example.org"])
    with TestClient(app, base_url="https://eo.example.org") as c:
        created = c.post("/api/chains", json=true_colour()).json()
        assert created["tiles"].startswith("https://eo.example.org/api/chains/")
        tj = c.get(f"/api/chains/{created['id']}/tilejson.json").json()
        assert tj["tiles"][0].startswith("https://eo.example.org/")
    with TestClient(app, base_url="http://a.tiles.example.org") as c:
        assert c.get("/healthz").status_code == 200
    with TestClient(app, base_url="http://localhost") as c:  # not in the list: refused
        assert c.get(f"/api/chains/{created['id']}/tilejson.json").status_code == 400


def test_any_host_when_the_operator_says_so(served):
    with TestClient(served(allowed_hosts=["*"]), base_url="http://whatever.example") as c:
        assert c.get("/healthz").status_code == 200
