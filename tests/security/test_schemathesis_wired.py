"""schemathesis over the service as ``eoexplorer tiles`` wires it (Host guard, security
headers, cost budget, hidden paths, a loopback Host): no answer is a server error, every
error is the JSON error body. Covers the operations the
service tests' run leaves out (profiles, extracts, timelapses)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from service_data import true_colour
from starlette.testclient import TestClient
from test_schemathesis import fuzz

from app.wiring import build_service

BUDGET = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
OPERATIONS = [("POST", "/api/chains"), ("GET", "/api/chains/{chain_id}/tiles/{z}/{x}/{y}.{fmt}"),
              ("GET", "/api/profile"), ("POST", "/api/profile"), ("GET", "/api/search")]


@pytest.fixture(scope="module")
def api(scene, tmp_path_factory):
    from app.settings import Settings

    app = build_service(Settings(catalog=str(scene.db), data_dir=tmp_path_factory.mktemp("st"),
                                 functions_enabled=False, tile_disk_cache_mb=0,
                                 allowed_hosts=["localhost", "testserver"]))
    with TestClient(app, base_url="http://localhost") as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return schema, cid


@pytest.mark.parametrize("method, path", OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_when_wired(api, method, path, mode):
    fuzz(api, method, path, mode, budget=BUDGET)
