"""Build the container image with deploy/build-local.sh (podman, or Docker where an engine
answers) and check what the build's smoke test printed and what the image holds.

Slow (minutes; the first build downloads ~1 GB of wheels), so marked ``image``: `make test`
and a plain `pytest` leave it out (pyproject's addopts), `make test-image` runs it. Skipped
without root, podman or debootstrap. Running the image under an engine is not possible on
the development machine (crun: no cgroups), so only the build and the in-build smoke are
checked here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.image,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("debootstrap")),
                       reason="needs podman and debootstrap (apt-get install podman debootstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the podman build (vfs, chroot) runs as root"),
]

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/eoexplorer:test"
PODMAN = ["podman", f"--storage-driver={os.environ.get('EOX_PODMAN_STORAGE', 'vfs')}"]
SMOKE_LINES = [
    "smoke: tiny COG made and ingested with the CLI",
    "smoke: eoexplorer serve (under tini) healthy",
    "smoke: the image's HEALTHCHECK command passes",
    "smoke: dashboard page served",
    "smoke: true-colour tile (14, 8875, 5550): 256x256 PNG",
    "smoke: sandboxed function tile ok; sandbox enforces: ",
    "smoke: batch run on a local Dask cluster wrote",
    "smoke: ok",
]


ARTIFACTS = ROOT / "tests" / "artifacts"


def build(*args: str, log: str) -> tuple[int, str]:
    """Run build-local.sh; its output also goes to tests/artifacts/<log> (live, for CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / log
    with path.open("w") as out:
        code = subprocess.run(["bash", str(ROOT / "deploy" / "build-local.sh"), "--engine",
                               "podman", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              timeout=3000, check=False).returncode
    return code, path.read_text()


@pytest.fixture(scope="module")
def image():
    """The image, built from the tree (kept afterwards: its layers are the next run's cache;
    removing them takes minutes on vfs)."""
    code, output = build("--tag", TAG, log="image-build.log")
    assert code == 0, output[-5000:]
    return output


def test_the_build_runs_the_smoke_test_and_it_passes(image):
    for line in SMOKE_LINES:
        assert line in image, f"missing {line!r} in the build output"
    enforced = re.search(r"sandbox enforces: (.*)", image).group(1)
    assert "seccomp" in enforced.split(", ")


def test_the_image_config_matches_the_dockerfile(image):
    data = json.loads(subprocess.run([*PODMAN, "image", "inspect", TAG], capture_output=True,
                                     text=True, check=True).stdout)[0]
    config = data["Config"]
    assert config["User"] == "eox"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["eoexplorer", "serve"]
    assert "/data" in config["Volumes"]
    assert {"5006/tcp", "8000/tcp", "8786/tcp", "8787/tcp"} <= set(config["ExposedPorts"])
    health = data.get("Healthcheck") or config["Healthcheck"]  # podman has it at the top
    assert health["Test"] == ["CMD", "python", "/opt/eox/healthcheck.py"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["EOX_CATALOG"] == "/data/catalog.sqlite" and env["EOX_ADDRESS"] == "0.0.0.0"
    assert "PIP_CONFIG_FILE" not in env  # the build's CA hook stays out of the image


def test_the_final_stage_has_no_build_tools_and_a_non_root_user(image):
    root = Path(subprocess.run([*PODMAN, "image", "mount", TAG], capture_output=True, text=True,
                               check=True).stdout.strip())
    try:
        for tool in ("gcc", "cc", "g++", "make", "ld", "as"):
            assert not (root / "usr/bin" / tool).exists(), f"{tool} in the final stage"
        status = (root / "var/lib/dpkg/status").read_text()
        installed = re.findall(r"^Package: (\S+)\nStatus: install ok installed", status,
                               flags=re.MULTILINE)
        assert not [p for p in installed if p.endswith("-dev") or p == "python3-venv"]
        assert {"python3", "tini", "libseccomp2", "ca-certificates"} <= set(installed)
        passwd = (root / "etc/passwd").read_text()
        assert re.search(r"^eox:x:1000:1000:", passwd, flags=re.MULTILINE)
        assert (root / "opt/eox/bin/eoexplorer").exists()
        assert os.readlink(root / "opt/eox/bin/python3").endswith("/usr/bin/python3")
        assert not (root / "src").exists(), "the sources are left in the final stage"
        # the CA mount point (buildah leaves the empty folder), never its content
        assert not any((root / "run/eox-build").glob("*"))
    finally:
        subprocess.run([*PODMAN, "image", "unmount", TAG], capture_output=True, check=False)


def test_the_build_fails_without_a_runtime_dependency_of_the_final_stage(image, tmp_path):
    """tini (the ENTRYPOINT, and what the smoke starts the server under) dropped from the
    final stage's packages: the smoke test, hence the build, must fail."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    runtime = "python3 libseccomp2 tini ca-certificates"
    assert text.count(runtime) == 1
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(runtime, "python3 libseccomp2 ca-certificates"))
    tag = "localhost/eoexplorer:broken"  # never created: the build fails
    code, output = build("--tag", tag, "--dockerfile", str(broken), log="image-build-broken.log")
    assert code != 0, output[-3000:]
    assert "smoke: FAILED: cannot start /usr/bin/tini -s -- eoexplorer serve" in output
    assert "smoke: ok" not in output
