"""Property-based API test: schemathesis generates requests from /openapi.json (valid and
invalid ones); no answer may be a server error, and every error is the JSON error body."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from service_data import make_app, true_colour
from starlette.testclient import TestClient

OPERATIONS = [
    ("POST", "/api/chains"),
    ("GET", "/api/chains/{chain_id}"),
    ("GET", "/api/chains/{chain_id}/tiles/{z}/{x}/{y}.{fmt}"),
    ("GET", "/api/chains/{chain_id}/tilejson.json"),
    ("GET", "/api/chains/{chain_id}/point"),
    ("POST", "/api/chains/{chain_id}/statistics"),
    ("GET", "/api/collections"),
    ("GET", "/api/collections/{collection_id}"),
    ("GET", "/api/search"),
    ("GET", "/healthz"),
]
#: Operations whose every input is valid (no parameters, or a free-form string).
NO_INVALID_INPUT = {("GET", "/api/collections"), ("GET", "/api/collections/{collection_id}"),
                    ("GET", "/healthz")}
BUDGET = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def api(scene):
    app = make_app(scene.db)
    with TestClient(app) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
    return schemathesis.openapi.from_asgi("/openapi.json", app), cid


def check(case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["detail"], str) and body["detail"]
        assert isinstance(body["type"], str)


def test_schema_lists_every_operation(api):
    schema, _ = api
    found = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert set(OPERATIONS) <= found


CASES = [
    pytest.param(m, p, mode, id=f"{m} {p} {mode.value}")
    for m, p in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode == GenerationMode.NEGATIVE and (m, p) in NO_INVALID_INPUT)
]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_no_server_error(api, method, path, mode):
    fuzz(api, method, path, mode)


def fuzz(api, method: str, path: str, mode: GenerationMode, budget=BUDGET) -> None:
    """Generated requests for one operation (``api``: schema and a registered chain id),
    each answer checked by :func:`check`."""
    schema, cid = api
    operation = schema[path][method]
    known = {"chain_id": cid} if "{chain_id}" in path and mode == GenerationMode.POSITIVE else {}

    @budget
    @given(operation.as_strategy(mode, path_parameters=known or None))
    def run(case):
        check(case)

    run()
