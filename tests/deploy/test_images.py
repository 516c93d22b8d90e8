"""Static checks of deploy/Dockerfile and deploy/compose.yaml against the project: what the
image installs and runs must be what pyproject.toml, the CLI and the Settings define. They
run in the normal suite; building the image (slow) is tests/deploy/test_image_build.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from app.cli import build_parser
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in dockerfile():
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def commands(run_args: str) -> list[list[str]]:
    """The shell commands of a RUN line (split on &&)."""
    return [shlex.split(part) for part in run_args.split("&&")]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


def test_the_build_copies_every_package_pyproject_installs():
    build = stages()[0]
    copied = set()
    for word, args in build:
        if word == "COPY" and "--from" not in args:
            *sources, _dest = args.split()
            copied.update(s.rstrip("/") for s in sources)
    if "." in copied:  # the context as .dockerignore lets it in: deny all, then an allowlist
        copied.discard(".")
        ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
        assert ignore[0] == "*", "the .dockerignore must start by excluding everything"
        copied.update(line[1:] for line in ignore if line.startswith("!"))
    # the build stage copies the smoke test and the healthcheck out of the context
    assert {"deploy/smoke.py", "deploy/healthcheck.py"} <= copied
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # setuptools' package discovery over the repository, as `pip install .` runs it
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()
                and any(re.fullmatch(pat.replace("*", ".*"), p.name) for pat in includes)}
    assert packages == {"engine", "service", "components", "app"}
    assert packages <= copied, f"the image would miss {packages - copied}"
    # the build needs pyproject.toml and the readme it names
    assert {"pyproject.toml", PROJECT["readme"]} <= copied


def test_the_build_installs_the_project_and_smoke_imports_it():
    build = stages()[0]
    installs = [c for word, args in build if word == "RUN" for c in commands(args)
                if c[:1] and c[0].endswith("/pip") and "install" in c and "." in c]
    assert len(installs) == 1, installs
    cmd = installs[0]
    # a real install (the runtime stage copies only the venv, not the sources), no extras
    assert "-e" not in cmd and "--editable" not in cmd and "." in cmd
    assert not any(a.startswith(".[") for a in cmd)
    smoke = [c for word, args in build if word == "RUN" for c in commands(args)
             if c[:1] and c[0].endswith("/python") and "-c" in c]
    assert smoke, "no import check after the install"
    # the last one, after the install (the first writes requirements.txt from pyproject)
    modules = re.findall(r"import\s+([\w., ]+)", smoke[-1][smoke[-1].index("-c") + 1])
    names = {m.strip().split(".")[0] for group in modules for m in group.split(",")}
    dists = metadata.packages_distributions()
    deps = runtime_distributions()
    own = {"engine", "service", "components", "app"}
    for name in names:
        provided_by = {d.lower() for d in dists.get(name, [])}
        assert name in own or provided_by & deps, \
            f"the image imports {name}, which no runtime dependency of pyproject provides"


def runtime_distributions() -> set[str]:
    """pyproject's runtime dependencies plus what their extras pull in (dask[distributed])."""
    names = set()
    for line in PROJECT["dependencies"]:
        req = Requirement(line)
        names.add(req.name.lower())
        for extra in req.extras:
            for sub in metadata.requires(req.name) or []:
                sub_req = Requirement(sub)
                if sub_req.marker is not None and sub_req.marker.evaluate({"extra": extra}):
                    names.add(sub_req.name.lower())
    return names


#: Python of Debian's releases (the image runs Debian's python3 from the base image)
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def test_the_base_image_python_satisfies_requires_python():
    args = {k: v for word, a in dockerfile() if word == "ARG" and "=" in a
            for k, v in [a.split("=", 1)]}
    release = re.fullmatch(r"debian:(\w+)-slim", args["BASE_IMAGE"])
    assert release, args["BASE_IMAGE"]
    version = DEBIAN_PYTHON[release.group(1)]
    assert SpecifierSet(PROJECT["requires-python"]).contains(version + ".0")
    # both stages start from that base and take python3 from Debian: the venv the build
    # stage makes points at /usr/bin/python3, which the final stage must have at that path
    assert [a.split()[0] for w, a in dockerfile() if w == "FROM"] == ["${BASE_IMAGE}"] * 2
    for stage in stages():
        assert "python3" in apt_packages(stage)
    assert any(c[:3] == ["python3", "-m", "venv"] for w, a in stages()[0] if w == "RUN"
               for c in commands(a))


def apt_packages(stage: list[tuple[str, str]]) -> list[str]:
    found = []
    for word, args in stage:
        if word != "RUN":
            continue
        for c in commands(args):
            if c[:2] == ["apt-get", "install"]:
                found += [a for a in c[2:] if not a.startswith("-")]
    return found


def test_no_stage_installs_build_tools():
    """Every dependency comes as a wheel: no compiler or headers anywhere, so none can leak
    into the final stage (test_image_build.py checks the built image's files)."""
    for stage in stages():
        for name in apt_packages(stage):
            assert not re.search(r"-dev$|^gcc|^g\+\+|^build-essential$|^make$|^cmake$", name), name
    assert set(apt_packages(stages()[0])) == {"python3", "python3-venv"}


def test_the_dependency_layer_installs_exactly_pyprojects_dependencies(tmp_path):
    """The build installs pyproject's dependencies before copying the sources (a layer that
    survives source edits): the list it writes must be pyproject's own."""
    build = stages()[0]
    cmds = [c for w, a in build if w == "RUN" for c in commands(a)]
    writer = next(c for c in cmds if c[0].endswith("/python") and c[1] == "-c"
                  and "tomllib" in c[2])
    assert writer[3:] == [">requirements.txt"], writer
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    out = subprocess.run([sys.executable, "-c", writer[2]], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines() == PROJECT["dependencies"]
    assert any(c[1:] == ["install", "-r", "requirements.txt"] for c in cmds
               if c[0].endswith("/pip"))


def test_the_final_stage_runs_the_smoke_test_as_the_non_root_user():
    final = stages()[-1]
    words = [w for w, _ in final]
    users = [a for w, a in final if w == "USER"]
    assert users == ["eox"]
    runs_as_user = [a for w, a in final[words.index("USER"):] if w == "RUN"]
    smoke = " && ".join(runs_as_user)
    assert "eoexplorer --help" in smoke
    assert 'python -c "import engine, service, components, app"' in smoke
    assert "python /opt/eox/smoke.py" in smoke
    # the build stage puts both scripts into the venv folder the final stage copies
    assert any(c == ["cp", "deploy/smoke.py", "deploy/healthcheck.py", "/opt/eox/"]
               for w, a in stages()[0] if w == "RUN" for c in commands(a))
    assert ("COPY", "--from=build /opt/eox /opt/eox") in final
    # the smoke starts the server the way the ENTRYPOINT does
    entrypoint = json.loads(next(a for w, a in final if w == "ENTRYPOINT"))
    assert f'["{entrypoint[0]}", "-s", "--", "eoexplorer", "serve"' in (
        DEPLOY / "smoke.py").read_text()
    health = next(a for w, a in final if w == "HEALTHCHECK")
    assert health.endswith('CMD ["python", "/opt/eox/healthcheck.py"]')
    # the demo step writes into /data before it becomes a volume (later writes are dropped)
    demo = next(i for i, (w, a) in enumerate(final) if w == "RUN" and "eoexplorer demo" in a)
    assert demo < words.index("VOLUME") and json.loads(final[words.index("VOLUME")][1]) == ["/data"]


def runtime_apt_packages() -> list[str]:
    return apt_packages(stages()[-1])


def system_deps_script_packages() -> list[str]:
    text = (DEPLOY / "install-system-deps.sh").read_text()
    return re.search(r"^packages=\(([^)]*)\)", text, flags=re.MULTILINE).group(1).split()


def test_runtime_system_packages_are_what_the_runtime_needs():
    packages = runtime_apt_packages()
    entrypoint = next(a for w, a in stages()[-1] if w == "ENTRYPOINT")
    deps = {Requirement(r).name.lower() for r in PROJECT["dependencies"]}
    # why each package is there; a package without a reason here is an unexplained one
    reasons = {
        # pyseccomp (the sandbox's syscall filter) dlopens libseccomp at import
        "libseccomp2": "pyseccomp" in deps and 'find_library("seccomp")' in Path(
            metadata.distribution("pyseccomp").locate_file("pyseccomp.py")).read_text(),
        "tini": "/usr/bin/tini" in entrypoint,
        # the venv's interpreter is Debian's /usr/bin/python3
        "python3": any(c[:3] == ["python3", "-m", "venv"] for w, a in stages()[0]
                       if w == "RUN" for c in commands(a)),
        # GDAL's curl (in the rasterio wheel) verifies HTTPS COGs against this bundle
        "ca-certificates": any(w == "ENV" and "CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
                               in a for w, a in stages()[-1]),
    }
    assert set(packages) == set(reasons), f"unexplained or missing: {packages}"
    for name, needed in reasons.items():
        assert needed, f"{name} is installed but nothing in the image needs it any more"
    # the test-only packages (browser tests) stay out of the image
    assert not set(system_deps_script_packages()) & set(packages)
    assert {"chromium"} <= set(system_deps_script_packages())


def test_compose_commands_and_environment_are_valid_for_this_project(monkeypatch):
    scripts = {e.name: e for e in metadata.entry_points(group="console_scripts")}
    assert PYPROJECT["project"]["scripts"]["eoexplorer"] == scripts["eoexplorer"].value
    exposed = {int(p) for w, a in dockerfile() if w == "EXPOSE" for p in a.split()}
    for name, spec in compose().items():
        cmd = spec.get("command")
        if not cmd:
            continue
        assert cmd[0] in scripts, f"{name}: {cmd[0]} is not a console script of the venv"
        if cmd[0] == "eoexplorer":
            build_parser().parse_args(cmd[1:])  # SystemExit on an unknown option
        env = spec.get("environment") or {}
        for key in env:
            if key.startswith("EOX_"):
                assert key[4:].lower() in Settings.model_fields, f"{name}: unknown {key}"
        if env:
            with monkeypatch.context() as m:
                for k in [k for k in os.environ if k.startswith("EOX_")]:
                    m.delenv(k)
                for k, v in env.items():
                    m.setenv(k, str(v))
                settings = Settings()  # the values validate
                assert settings.address == "0.0.0.0"
        ports = [int(a.rsplit(":", 1)[-1]) for a in cmd if re.fullmatch(r":?\d{4}", a)]
        assert set(ports) <= exposed, f"{name}: ports {ports} not EXPOSEd"
        health = spec.get("healthcheck") or {}
        probe = " ".join(health.get("test", []))
        if cmd[0] == "eoexplorer":
            assert f"127.0.0.1:{ports[0]}/healthz" in probe, f"{name}: probes another port"
        elif cmd[:2] == ["dask", "scheduler"]:  # its dashboard's health endpoint
            dashboard = cmd[cmd.index("--dashboard-address") + 1].rsplit(":", 1)[-1]
            assert f"127.0.0.1:{dashboard}/health'" in probe, f"{name}: probes another port"
        else:  # no server: the image's probe (EO Explorer ports) would always fail
            assert health == {"disable": True}, f"{name}: needs its own healthcheck"


def test_compose_uses_the_image_build_local_builds():
    script = (DEPLOY / "build-local.sh").read_text()
    tag = re.search(r"^TAG=(\S+)$", script, flags=re.MULTILINE).group(1)
    base = re.search(r"^BASE=(\S+)$", script, flags=re.MULTILINE).group(1)
    args = {k: v for word, a in dockerfile() if word == "ARG" and "=" in a
            for k, v in [a.split("=", 1)]}
    assert base == args["BASE_IMAGE"]
    for name, spec in compose().items():
        if spec.get("build"):
            assert spec["image"] == tag, name
            assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
            assert (DEPLOY / spec["build"]["context"]).resolve() == ROOT
            assert set(spec["build"].get("args", {})) <= set(args), name


def test_build_local_refuses_unknown_options_naming_the_valid_ones():
    for args, valid in ((["--bogus"], "--tag NAME, --demo, --engine docker|podman"),
                        (["--engine", "lxc"], "valid: docker, podman")):
        r = subprocess.run(["bash", str(DEPLOY / "build-local.sh"), *args], capture_output=True,
                           text=True, timeout=60, check=False)
        assert r.returncode == 2 and valid in r.stderr, r.stderr


def test_the_healthcheck_passes_when_either_server_answers():
    """deploy/healthcheck.py (the image's HEALTHCHECK): healthy when /healthz answers on
    EOX_PORT or EOX_TILES_PORT, unhealthy (exit 1, ports named) when neither does."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    def probe(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py")],
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=60, check=False)

    with ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        up = str(server.server_address[1])
        with socket_bound() as down:
            assert probe({"EOX_PORT": up, "EOX_TILES_PORT": down}).returncode == 0
            assert probe({"EOX_PORT": down, "EOX_TILES_PORT": up}).returncode == 0
            server.shutdown()
        with socket_bound() as a, socket_bound() as b:
            r = probe({"EOX_PORT": a, "EOX_TILES_PORT": b})
    assert r.returncode == 1 and f"port(s) {a}, {b}" in r.stderr, r.stderr


@contextmanager
def socket_bound():
    """A loopback port that is bound but not listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield str(s.getsockname()[1])
