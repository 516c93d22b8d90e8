"""deploy/compose.yaml's topology run as local processes (deploy/local_topology.py) on the
demo catalog: nginx with deploy/nginx.conf in front of 2 tile replicas (2 uvicorn workers
each) and the dashboard, a Dask scheduler with 2 workers. Everything through the balancer,
over real HTTP. Skipped without nginx (`apt-get install nginx-light`) or the demo data."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / ".cache" / "demo"
BBOX = (12.55, 52.46, 12.65, 52.50)  # inside the demo Sentinel-2 L1C scene (T33UUU)


def load_topology_module():
    spec = importlib.util.spec_from_file_location("local_topology",
                                                  ROOT / "deploy" / "local_topology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_topology", module)
    spec.loader.exec_module(module)
    return module


lt = load_topology_module()

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None,
                                 reason="nginx is not installed (apt-get install nginx-light)")
needs_demo = pytest.mark.skipif(not (DEMO / "catalog.sqlite").exists(),
                                reason="demo catalog missing (eoexplorer demo --catalog "
                                       ".cache/demo/catalog.sqlite --data-dir .cache/demo/data)")


# -- the localization rules (no process started) -----------------------------------------

def test_local_commands_are_composes_with_only_hosts_ports_and_paths_changed(tmp_path):
    services = lt.load_compose()
    plan = lt.make_plan(services, tmp_path / "data", 18080)
    topo_cmds = {}
    for name in lt.PYTHON_SERVICES:
        svc = services[name]
        for r in range(svc.replicas):
            topo_cmds[(name, r)] = lt.local_command(svc, r, services, plan)
    assert services["tiles"].replicas == 2 and services["worker"].replicas == 2
    for (name, r), local in topo_cmds.items():
        compose = services[name].command
        extra = local[len(compose):]
        # the worker alone gets loopback-only options appended; nothing else is added
        assert extra == (["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
                         if name == "worker" else [])
        for theirs, ours in zip(compose, local, strict=False):
            if theirs != ours:  # only ports, service host names and 0.0.0.0 may differ
                assert re.fullmatch(r"\d+|:\d+|0\.0\.0\.0|tcp://scheduler:\d+", theirs), \
                    (name, theirs, ours)
                assert "127.0.0.1" in ours or ours.isdigit()
    # each tile replica its own port; the worker reaches the local scheduler
    assert topo_cmds[("tiles", 0)][3] != topo_cmds[("tiles", 1)][3]
    assert f"tcp://127.0.0.1:{plan.scheduler}" in topo_cmds[("worker", 0)]
    env = lt.local_environment(services["app"], services, plan)
    compose_env = services["app"].environment
    assert set(compose_env) <= set(env)
    assert env["EOX_CATALOG"] == str(tmp_path / "data" / "catalog.sqlite")
    assert env["EOX_DASK_SCHEDULER"] == f"tcp://127.0.0.1:{plan.scheduler}"
    assert json.loads(env["EOX_ALLOW_WEBSOCKET_ORIGIN"]) == ["localhost:18080",
                                                             "127.0.0.1:18080"]
    unchanged = {k for k, v in compose_env.items() if env[k] == v}
    assert unchanged == set(compose_env) - {"EOX_CATALOG", "EOX_DATA_DIR", "EOX_ADDRESS",
                                            "EOX_DASK_SCHEDULER", "EOX_ALLOW_WEBSOCKET_ORIGIN"}
    # bound to loopback the services would switch their rate limits off: kept as deployed
    from app.auth import access_policy
    from app.settings import Settings

    local = access_policy(Settings(address=env["EOX_ADDRESS"],
                                   rate_limit_per_minute=env["EOX_RATE_LIMIT_PER_MINUTE"],
                                   tile_rate_limit_per_minute=env[
                                       "EOX_TILE_RATE_LIMIT_PER_MINUTE"]))
    deployed = access_policy(Settings(address=compose_env["EOX_ADDRESS"]))
    assert (local.read_per_minute, local.write_per_minute) == \
        (deployed.read_per_minute, deployed.write_per_minute) != (0, 0)


def test_an_unknown_compose_address_fails_loudly(tmp_path):
    """A compose change the rules do not cover (here the workers' scheduler port no longer
    matching the scheduler's) stops the script instead of starting something else."""
    text = (ROOT / "deploy" / "compose.yaml").read_text()
    bad = tmp_path / "compose.yaml"
    bad.write_text(text.replace('"tcp://scheduler:8786"', '"tcp://scheduler:8790"'))
    services = lt.load_compose(bad)
    plan = lt.make_plan(services, tmp_path, 18080)
    lt.local_command(services["tiles"], 0, services, plan)  # untouched: fine
    with pytest.raises(lt.TopologyError, match="tcp://scheduler:8790"):
        lt.local_command(services["worker"], 0, services, plan)


def test_nginx_site_has_one_upstream_server_per_replica(tmp_path):
    services = lt.load_compose()
    plan = lt.make_plan(services, tmp_path, 18080)
    site = lt.nginx_site(services, plan, tmp_path / "cache")
    servers = re.findall(r"^\s*server\s+([\d.]+:\d+)", site, flags=re.MULTILINE)
    assert servers == [f"127.0.0.1:{p}" for p in plan.tiles] + [f"127.0.0.1:{plan.app}"]
    assert "listen 127.0.0.1:18080;" in site and "/var/cache/nginx" not in site
    assert site.count("max_fails=3") == 2  # the options of the compose server line are kept


# -- the running topology ----------------------------------------------------------------

@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    if not (DEMO / "catalog.sqlite").exists():
        pytest.skip("demo catalog missing")
    base = tmp_path_factory.mktemp("topology")
    data = base / "data"  # stands for the /data volume; chains are written to its catalog
    lt.backup_catalog(DEMO / "catalog.sqlite", data / "catalog.sqlite")
    try:
        with lt.LocalTopology(data, base / "run", start_timeout=120) as topo:
            yield topo
    except lt.TopologyError as exc:
        pytest.fail(str(exc))


def demo_chain(catalog: Path):
    from engine import Collection
    from engine.catalog import open_catalog

    coll = Collection("sentinel-2-l1c", catalog=open_catalog(str(catalog)))
    item = coll.first()
    return coll.ids(item.id).process().bands("B04", "B03", "B02").scale(0, 3000)


@needs_nginx
@needs_demo
def test_through_the_balancer(topology, tmp_path):
    url = topology.url
    catalog = topology.data_dir / "catalog.sqlite"
    chain = demo_chain(catalog)
    chain_file = tmp_path / "chain.json"
    chain_file.write_text(chain.to_json())
    # the batch run goes on while the HTTP checks run (it is the slowest part)
    env = lt.local_environment(topology.services["app"], topology.services, topology.plan)
    eox = Path(sys.executable).parent / "eoexplorer"
    dist_out = tmp_path / "dist.tif"
    run_log = open(tmp_path / "run.log", "w+")  # noqa: SIM115 - a file, not an unread pipe
    run = subprocess.Popen(
        [str(eox), "run", str(chain_file), "--bbox", ",".join(map(str, BBOX)),
         "--resolution", "60", "--chunks", "64", "--out", str(dist_out), "--quiet",
         "--scheduler", topology.scheduler],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EOX_")}, **env},
        stdout=run_log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            # /api/healthz: the tile replicas, round robin
            upstreams = set()
            for _ in range(4):
                r = http.get("/api/healthz")
                assert r.status_code == 200 and r.json()["status"] == "ok"
                assert r.json()["catalog"]["location"] == f".../{catalog.name}"  # folder hidden
                upstreams.add(r.headers["x-eox-upstream"])
            replicas = {f"127.0.0.1:{p}" for p in topology.plan.tiles}
            assert upstreams == replicas
            # the dashboard page, and its websocket upgraded through nginx
            page = http.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "Bokeh" in page.text and "EO Explorer" in page.text
            token = re.search(r'"token":\s*"([^"]+)"', page.text)
            assert token, "no Bokeh session token in the page"
            origin = f"http://127.0.0.1:{topology.plan.balancer}"
            assert ws_handshake(url, token.group(1), origin) == 101
            assert ws_handshake(url, token.group(1), "http://evil.example") == 403

            # a chain registered through the balancer: tiles from BOTH replicas
            reg = http.post("/api/chains", json=json.loads(chain.to_json()))
            assert reg.status_code in (200, 201), reg.text
            assert reg.json()["id"] == chain.id
            assert reg.json()["tiles"].startswith(url + "/api/chains/")
            tiles = list(morecantile.tms.get("WebMercatorQuad").tiles(*BBOX, zooms=[13]))
            assert len(tiles) >= 4
            served = {}
            for t in tiles:
                r = http.get(f"/api/chains/{chain.id}/tiles/{t.z}/{t.x}/{t.y}.png")
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                assert r.headers["x-cache-status"] == "MISS"
                served[(t.x, t.y)] = (r.headers["x-eox-upstream"], r.content)
            assert {up for up, _ in served.values()} == replicas
            # the balancer's cache answers again, same bytes, no replica involved
            t = tiles[0]
            again = http.get(f"/api/chains/{chain.id}/tiles/{t.z}/{t.x}/{t.y}.png")
            assert again.headers["x-cache-status"] == "HIT"
            assert again.content == served[(t.x, t.y)][1]
            # ... and each replica renders the same tile bytes as the other
            direct = [httpx.get(f"{base}/api/chains/{chain.id}/tiles/{t.z}/{t.x}/{t.y}.png",
                                timeout=30).content for base in topology.tile_urls]
            assert direct[0] == direct[1]

            # global write limit: 4 processes x a burst of 10 each would let all of these
            # through; the balancer's one bucket (burst 10, 1/s) does not
            started = time.monotonic()
            codes, limited = [], None
            for _ in range(30):
                r = http.post("/api/chains", json=json.loads(chain.to_json()))
                codes.append(r.status_code)
                if r.status_code == 429:
                    limited = r
            elapsed = time.monotonic() - started
            ok = sum(c in (200, 201) for c in codes)
            assert limited is not None, codes
            assert limited.headers["content-type"].startswith("application/json")
            assert limited.json()["type"] == "RateLimited"
            assert "balancer" in limited.json()["detail"]
            assert limited.headers["retry-after"] == "1"
            assert ok <= 10 + int(elapsed) + 1, (codes, elapsed)
            assert set(codes) <= {200, 201, 429}
            # a client sending an API key has its own bucket (many keyed users behind one
            # NAT), again bounded
            keyed = [http.post("/api/chains", json=json.loads(chain.to_json()),
                               headers={"X-API-Key": "key-a"}).status_code for _ in range(14)]
            assert keyed[0] in (200, 201) and 429 in keyed, keyed
            # writes used up do not block reads
            assert http.get("/api/healthz").status_code == 200
            assert http.get(f"/api/chains/{chain.id}").status_code == 200

        # the batch run on the local Dask cluster equals a run in this process
        run.wait(timeout=120)
        run_log.seek(0)
        out = run_log.read()
        assert run.returncode == 0, out
        assert f"wrote {dist_out}" in out
        assert scheduler_task_prefixes(topology.scheduler), "no task reached the scheduler"
        from engine.batch import run as batch_run
        from engine.catalog import open_catalog

        local_out = batch_run(chain, tmp_path / "local.tif", bbox=BBOX, resolution=60,
                              chunks=64, catalog=open_catalog(str(catalog)), client=None)
        with rasterio.open(dist_out) as a, rasterio.open(local_out) as b:
            assert a.count == b.count and a.shape == b.shape and a.shape[0] > 64
            assert a.crs == b.crs and a.transform == b.transform and a.dtypes == b.dtypes
            pa, pb = a.read(), b.read()
            assert np.array_equal(pa, pb)
            assert pa.any()  # not an empty raster on both sides
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run_log.close()


def ws_handshake(url: str, token: str, origin: str) -> int:
    """Status of a Bokeh websocket handshake at ``url``/ws from ``origin`` (101 = upgraded)."""
    import websockets

    ws = url.replace("http", "ws", 1) + "/ws"

    async def go() -> int:
        try:
            async with websockets.connect(ws, origin=origin, open_timeout=20,
                                          subprotocols=["bokeh", token]):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(go())


def scheduler_task_prefixes(address: str) -> list[str]:
    """Names of the task prefixes the scheduler has seen (kept after the tasks finish)."""
    from distributed import Client

    with Client(address, timeout=20) as client:
        return client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
