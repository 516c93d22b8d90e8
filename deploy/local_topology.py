"""Run deploy/compose.yaml's topology as local processes on loopback, without Docker.

The services, their commands, replica counts and EOX_ environment are read from
compose.yaml (so the two cannot drift) and localized with a fixed set of rules:

* host names of compose services (``scheduler:8786``, ``tiles:8000``, ``app:5006``) and
  container ports become ``127.0.0.1`` and free ports, one per replica;
* ``0.0.0.0`` becomes ``127.0.0.1`` (nothing listens beyond loopback), so the services'
  own rate limits, which default to off on loopback, are set to their deployed defaults;
* the shared volume's mount point ``/data`` becomes a local folder, published host ports
  (``8080``) the balancer's local port;
* the Dask worker gets ``--host 127.0.0.1 --dashboard-address 127.0.0.1:0`` (loopback only).

Anything else that still names a compose service, ``0.0.0.0`` or ``/data`` after these
rules is an error, so a change to compose.yaml that this script does not understand fails
loudly instead of running something else. nginx runs deploy/nginx.conf with the upstream
``server`` lines, ``listen`` and the cache path localized the same way.

    deploy/run-local.sh --catalog-from .cache/demo/catalog.sqlite      # Ctrl-C stops all
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import yaml

log = logging.getLogger("eox.local_topology")

HERE = Path(__file__).resolve().parent
COMPOSE = HERE / "compose.yaml"
NGINX_CONF = HERE / "nginx.conf"
LOOPBACK = "127.0.0.1"
#: Where compose mounts the shared volume, and the nginx cache volume.
DATA_MOUNT = "/data"
NGINX_CACHE_MOUNT = "/var/cache/nginx"
#: Services run from the EO Explorer image, in start order (the balancer is nginx).
PYTHON_SERVICES = ("scheduler", "worker", "tiles", "app")


class TopologyError(RuntimeError):
    """compose.yaml says something this script cannot run locally, or a process failed."""


@dataclass(frozen=True)
class ComposeService:
    """One service of compose.yaml, merge keys resolved."""

    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    replicas: int
    container_port: int | None  # the port its command listens on, if any
    published: tuple[tuple[int, int], ...] = ()  # (host port, container port)


def _option(argv: tuple[str, ...], name: str) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_compose(path: Path = COMPOSE) -> dict[str, ComposeService]:
    """The services of ``path`` (YAML anchors and ``<<`` merges resolved by PyYAML)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    services: dict[str, ComposeService] = {}
    for name, spec in doc["services"].items():
        command = tuple(str(a) for a in spec.get("command", ()))
        env = {str(k): str(v) for k, v in (spec.get("environment") or {}).items()}
        replicas = int((spec.get("deploy") or {}).get("replicas", 1))
        port = _option(command, "--port")
        published = tuple(
            (int(host), int(container))
            for host, container in (str(p).split(":")[-2:] for p in spec.get("ports", ()))
        )
        services[name] = ComposeService(name, command, env, replicas,
                                        int(port) if port else None, published)
    return services


@dataclass
class Plan:
    """Local ports of every service (one per replica) and the folder standing for /data."""

    data_dir: Path
    balancer: int
    scheduler: int
    scheduler_dashboard: int
    tiles: list[int]
    app: int

    def service_ports(self, name: str) -> list[int]:
        return {"tiles": self.tiles, "app": [self.app], "scheduler": [self.scheduler]}.get(
            name, [])


def free_port() -> int:
    """A TCP port nothing listens on at the moment (loopback)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def make_plan(services: Mapping[str, ComposeService], data_dir: Path,
              balancer_port: int = 0) -> Plan:
    """Free ports for every replica; ``balancer_port`` 0 = a free one too."""
    return Plan(data_dir=data_dir, balancer=balancer_port or free_port(),
                scheduler=free_port(), scheduler_dashboard=free_port(),
                tiles=[free_port() for _ in range(services["tiles"].replicas)], app=free_port())


def _host_map(services: Mapping[str, ComposeService], plan: Plan) -> dict[str, str]:
    """``service:container_port`` -> ``127.0.0.1:local_port`` (first replica)."""
    out = {}
    for svc in services.values():
        ports = plan.service_ports(svc.name)
        if svc.container_port and ports:
            out[f"{svc.name}:{svc.container_port}"] = f"{LOOPBACK}:{ports[0]}"
    return out


def _localize_value(value: str, services: Mapping[str, ComposeService], plan: Plan) -> str:
    for compose_host, local in _host_map(services, plan).items():
        value = value.replace(compose_host, local)
    for host, _ in services["balancer"].published:  # the address browsers use
        value = re.sub(rf"\b(localhost|127\.0\.0\.1):{host}\b", rf"\1:{plan.balancer}", value)
    if value == DATA_MOUNT or value.startswith(DATA_MOUNT + "/"):
        value = str(plan.data_dir) + value[len(DATA_MOUNT):]
    return value.replace("0.0.0.0", LOOPBACK)


def _check_local(what: str, value: str, services: Mapping[str, ComposeService]) -> None:
    names = "|".join(re.escape(n) for n in services)
    if re.search(rf"(^|[/\s\"'])({names}):\d+", value) or "0.0.0.0" in value or \
            value == DATA_MOUNT or value.startswith(DATA_MOUNT + "/"):
        raise TopologyError(f"{what}: cannot localize {value!r} (compose.yaml changed in a way "
                            "deploy/local_topology.py does not know)")


def local_command(svc: ComposeService, replica: int, services: Mapping[str, ComposeService],
                  plan: Plan) -> list[str]:
    """The service's compose command with loopback hosts and this replica's local ports."""
    argv = list(svc.command)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--port" and nxt is not None:
            out += [arg, str(plan.service_ports(svc.name)[replica])]
            i += 2
            continue
        if arg == "--dashboard-address" and nxt is not None and svc.name == "scheduler":
            out += [arg, f"{LOOPBACK}:{plan.scheduler_dashboard}"]
            i += 2
            continue
        out.append(_localize_value(arg, services, plan))
        i += 1
    if out[:2] == ["dask", "worker"]:
        out += ["--host", LOOPBACK, "--dashboard-address", f"{LOOPBACK}:0"]
    for arg in out:
        _check_local(f"{svc.name} command", arg, services)
    return out


def local_environment(svc: ComposeService, services: Mapping[str, ComposeService],
                      plan: Plan) -> dict[str, str]:
    """The service's compose environment, localized (values only; names are kept)."""
    env = {k: _localize_value(v, services, plan) for k, v in svc.environment.items()}
    if svc.environment.get("EOX_ADDRESS") == "0.0.0.0":
        # Bound to loopback the service would switch its own rate limits off (see
        # app.auth); keep the limits a container bound to 0.0.0.0 applies.
        from app.auth import DEPLOYED_READ_PER_MINUTE, DEPLOYED_WRITE_PER_MINUTE

        env.setdefault("EOX_RATE_LIMIT_PER_MINUTE", str(DEPLOYED_WRITE_PER_MINUTE))
        env.setdefault("EOX_TILE_RATE_LIMIT_PER_MINUTE", str(DEPLOYED_READ_PER_MINUTE))
    for key, value in env.items():
        _check_local(f"{svc.name} environment {key}", value, services)
    return env


def nginx_site(services: Mapping[str, ComposeService], plan: Plan, cache_dir: Path,
               source: Path = NGINX_CONF) -> str:
    """deploy/nginx.conf with upstream servers, listen and cache path made local."""
    text = source.read_text(encoding="utf-8")
    text = text.replace(NGINX_CACHE_MOUNT, str(cache_dir))

    def server_line(m: re.Match[str]) -> str:
        indent, name, port, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        svc = services.get(name)
        if svc is None or svc.container_port != int(port):
            raise TopologyError(f"nginx.conf: upstream server {name}:{port} is not a service "
                                "port of compose.yaml")
        return "\n".join(f"{indent}server {LOOPBACK}:{p}{rest}"
                         for p in plan.service_ports(name))

    text = re.sub(r"^(\s*)server\s+([a-z][\w-]*):(\d+)(.*)$", server_line, text,
                  flags=re.MULTILINE)
    published = dict(services["balancer"].published)
    container_port = next(iter(published.values()), 80)
    text, n = re.subn(rf"^(\s*)listen\s+{container_port}\s*;",
                      rf"\1listen {LOOPBACK}:{plan.balancer};", text, flags=re.MULTILINE)
    if n != 1:
        raise TopologyError(f"nginx.conf: expected one 'listen {container_port};'")
    return text


def nginx_main(site: Path, run_dir: Path) -> str:
    """A main nginx.conf like the nginx image's, with every path under ``run_dir``."""
    tmp = run_dir / "tmp"
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temps = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}worker_processes 1;\npid {run_dir / 'nginx.pid'};\n"
            f"error_log {run_dir / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n    default_type application/octet-stream;\n"
            f"    access_log {run_dir / 'access.log'};\n    sendfile on;\n"
            f"    keepalive_timeout 65;\n{temps}    include {site};\n}}\n")


def backup_catalog(source: Path, target: Path) -> Path:
    """Copy a SQLite catalog with its WAL content (sqlite backup API, not a file copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
            sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def _executable(name: str) -> str:
    """``name`` from this interpreter's environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise TopologyError(f"{name} is not installed")
    return found


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None


@dataclass
class LocalTopology:
    """Start (``with LocalTopology(...) as topo:``) and stop the whole topology.

    Args:
        data_dir: the folder standing for the shared /data volume (catalog inside).
        run_dir: logs, nginx config and cache.
        balancer_port: 0 = a free port.
        start_timeout: seconds to wait for everything to answer.
    """

    data_dir: Path
    run_dir: Path
    balancer_port: int = 0
    start_timeout: float = 90.0
    compose: Path = COMPOSE
    services: dict[str, ComposeService] = field(init=False)
    plan: Plan = field(init=False)
    procs: list[Proc] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.services = load_compose(self.compose)
        self.plan = make_plan(self.services, self.data_dir, self.balancer_port)

    # -- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.plan.balancer}"

    @property
    def scheduler(self) -> str:
        return f"tcp://{LOOPBACK}:{self.plan.scheduler}"

    @property
    def tile_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{p}" for p in self.plan.tiles]

    @property
    def app_url(self) -> str:
        return f"http://{LOOPBACK}:{self.plan.app}"

    # -- processes ------------------------------------------------------------------------
    def commands(self) -> list[tuple[str, list[str], dict[str, str]]]:
        """(name, argv, EOX_ environment) of every Python process, in start order."""
        out = []
        for name in PYTHON_SERVICES:
            svc = self.services[name]
            env = local_environment(svc, self.services, self.plan)
            for r in range(svc.replicas):
                label = name if svc.replicas == 1 else f"{name}-{r + 1}"
                out.append((label, local_command(svc, r, self.services, self.plan), env))
        return out

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Proc:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        proc = Proc(name, argv, logs / f"{name}.log")
        base = {k: v for k, v in os.environ.items() if not k.startswith("EOX_")}
        base.update(env)
        exe = [_executable(argv[0]), *argv[1:]]
        with open(proc.log, "wb") as out:
            # own session: stop() signals the process group (nanny and uvicorn children)
            proc.popen = subprocess.Popen(exe, stdout=out, stderr=subprocess.STDOUT, env=base,
                                          cwd=self.data_dir, start_new_session=True)
        log.info("started %s (pid %s): %s", name, proc.popen.pid, " ".join(argv))
        self.procs.append(proc)
        return proc

    def _write_nginx(self) -> list[str]:
        ndir = self.run_dir / "nginx"
        for sub in ("cache", "tmp"):
            (ndir / sub).mkdir(parents=True, exist_ok=True)
        site = ndir / "default.conf"
        site.write_text(nginx_site(self.services, self.plan, ndir / "cache"))
        main = ndir / "nginx.conf"
        main.write_text(nginx_main(site, ndir))
        return ["nginx", "-p", str(ndir), "-c", str(main), "-e", str(ndir / "error.log"),
                "-g", "daemon off;"]

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.start_timeout
        # all at once, like compose (depends_on only orders the starts): Dask workers keep
        # trying to reach the scheduler until it listens
        for name, argv, env in self.commands():
            self._spawn(name, argv, env)
        self._spawn("balancer", self._write_nginx(), {})
        scheduler_health = f"http://{LOOPBACK}:{self.plan.scheduler_dashboard}/health"
        for url in [scheduler_health, *(u + "/healthz" for u in self.tile_urls),
                    self.app_url + "/healthz", self.url + "/healthz"]:
            self._wait_http(url, deadline)
        self._wait_workers(self.services["worker"].replicas, deadline)
        return self

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.popen is not None and p.popen.poll() is not None:
                tail = p.log.read_text(errors="replace")[-3000:]
                raise TopologyError(f"{p.name} exited with {p.popen.returncode}:\n{tail}")

    def _wait_http(self, url: str, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TopologyError(f"{url} did not answer in time")
            time.sleep(0.25)

    def _wait_workers(self, n: int, deadline: float) -> None:
        url = f"http://{LOOPBACK}:{self.plan.scheduler_dashboard}/json/counts.json"
        while True:
            self._check_alive()
            with urllib.request.urlopen(url, timeout=2) as resp:
                if json.load(resp).get("workers", 0) >= n:
                    return
            if time.monotonic() > deadline:
                raise TopologyError(f"fewer than {n} Dask workers joined in time")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM every process group (reverse order), SIGKILL what is left after 10 s.

        Each leader is reaped only after its group got SIGKILL: until then its pid (the
        group id) cannot be reused, so the signal reaches only processes started here."""
        for p in reversed(self.procs):
            if p.popen is not None and p.popen.poll() is None:
                os.killpg(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in reversed(self.procs):
            if p.popen is None or p.popen.returncode is not None:
                continue
            while time.monotonic() < deadline and os.waitid(
                    os.P_PID, p.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.05)
            if os.waitid(os.P_PID, p.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                log.warning("%s did not stop on SIGTERM: killing it", p.name)
            with contextlib.suppress(ProcessLookupError):  # and what is left of its group
                os.killpg(p.popen.pid, signal.SIGKILL)  # (uvicorn workers, the nanny's worker)
            p.popen.wait()
        self.procs.clear()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> Iterator[str]:
        yield f"balancer   {self.url}/   (dashboard; /api/... -> tile replicas)"
        for p in self.procs:
            yield f"{p.name:<10} pid {p.popen.pid if p.popen else '-':<7} log {p.log}"
        yield f"scheduler  {self.scheduler}   dashboard http://{LOOPBACK}:{self.plan.scheduler_dashboard}/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        help="folder standing for the /data volume (default: a new temp dir)")
    parser.add_argument("--catalog-from", type=Path, metavar="CATALOG.sqlite",
                        help="copy this catalog to DATA_DIR/catalog.sqlite first "
                             "(e.g. .cache/demo/catalog.sqlite)")
    parser.add_argument("--port", type=int, default=8080, help="balancer port (0 = free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="eox-local-"))).resolve()
    services = load_compose()
    catalog = Path(_localize_value(services["tiles"].environment["EOX_CATALOG"], services,
                                   Plan(data_dir, 0, 0, 0, [], 0)))
    if args.catalog_from:
        backup_catalog(args.catalog_from, catalog)
    if not catalog.exists():
        parser.error(f"no catalog at {catalog}: pass --catalog-from")
    topo = LocalTopology(data_dir, data_dir / "run", balancer_port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    with topo:
        for line in topo.describe():
            log.info("%s", line)
        log.info("running; Ctrl-C stops everything")
        try:
            while True:
                time.sleep(1)
                topo._check_alive()
        except KeyboardInterrupt:
            log.info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
