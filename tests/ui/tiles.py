"""Watch the map's tile responses in a Playwright page and decode them."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

TILE = re.compile(r"/api/chains/([0-9a-f]+)/tiles/(\d+)/(\d+)/(\d+)\.png")


@dataclass
class Tile:
    chain: str
    z: int
    x: int
    y: int
    status: int
    at: float
    pixels: np.ndarray | None  # RGBA, None for 204 (no data)

    @property
    def has_data(self) -> bool:
        """True if the tile has non-transparent pixels."""
        return self.pixels is not None and int((self.pixels[..., 3] > 0).sum()) > 0


@dataclass
class TileWatch:
    """Every tile response the page received, in order."""

    tiles: list[Tile] = field(default_factory=list)

    def attach(self, page) -> TileWatch:
        page.on("response", self._on_response)
        return self

    def _on_response(self, response) -> None:
        m = TILE.search(response.url)
        if not m:
            return
        pixels = None
        if response.status == 200:
            try:
                body = response.body()
            except PlaywrightError:  # the page closed while the tile arrived
                return
            img = Image.open(io.BytesIO(body)).convert("RGBA")
            pixels = np.asarray(img)
        self.tiles.append(Tile(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                               response.status, time.monotonic(), pixels))

    def with_data(self, chain: str | None = None) -> list[Tile]:
        return [t for t in self.tiles if t.has_data and (chain is None or t.chain == chain)]

    def chains(self) -> list[str]:
        return list(dict.fromkeys(t.chain for t in self.tiles))

    def wait(self, page, predicate, timeout: float = 20.0) -> bool:
        """Poll (letting the page run) until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            page.wait_for_timeout(100)
        return predicate()


#: Seconds a served app may take to answer /healthz: under a load average of 30 on two
#: cores its start (imports, catalog, warm-up thread) took over a minute.
START_TIMEOUT = 180

#: The dashboard has loaded: its Bokeh document exists and every root has drawn once
#: (``is_idle``). BokehJS (3.9) marks a map tile "finished" only when it draws it, so a tile
#: of the map's tile range that loaded but is never drawn (seen: a column of edge tiles
#: outside the frame, in 4 of 17 fresh loads at 1280x720; bench/RESULTS.md, session 7)
#: leaves ``is_idle`` false for good. So a map whose tiles have ALL loaded gets them
#: marked finished and is asked to report again; everything else is BokehJS's own judgement.
LOADED_JS = """() => {
  if (!(window.Bokeh && Bokeh.documents.length)) return false;
  const doc = Bokeh.documents[0];
  if (doc.is_idle) return true;
  const visit = (v) => {
    if (v._tiles != null && v._tiles.length && v._tiles.every((t) => t.finished || t.loaded)) {
      for (const t of v._tiles) t.finished = true;
      v.notify_finished();
    }
    for (const c of v.children()) visit(c);
  };
  for (const v of Bokeh.index.roots) visit(v);
  return doc.is_idle;
}"""


def click_tab(page, name: str, *, timeout: int = 30_000) -> None:
    """Click a sidebar tab once the page has finished loading (so a test's later steps run
    on a settled page; clicks before that work too: tests/ui/test_early_click.py)."""
    page.wait_for_function(LOADED_JS, timeout=timeout)
    page.locator(".bk-tab", has_text=name).first.click()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(catalog: Path, data_dir: Path, folder: Path, *extra: str,
              cwd: Path | None = None, command: str = "serve",
              env: dict[str, str] | None = None):
    """Run a real `eoexplorer serve` (or ``command`` "tiles": the tile service alone) over
    ``catalog``; yield its base URL (no prefix). ``env``: EOX_ settings for it (the
    caller's own EOX_ variables are never passed)."""
    port = free_port()
    log = folder / "serve.log"
    exe = Path(sys.executable).parent / "eoexplorer"
    cmd = [str(exe), command, "--port", str(port), "--catalog", str(catalog),
           "--data-dir", str(data_dir), *extra]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EOX_")}, **(env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"eoexplorer serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"eoexplorer serve did not answer /healthz within {START_TIMEOUT} s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
