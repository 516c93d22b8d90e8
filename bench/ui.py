"""Browser timings of the served dashboard (real `eoexplorer serve`, Debian's chromium).

- first tiles: navigation start -> the first map tile WITH DATA received (goal 3 s)
- preset change: click on a preset -> first tile with data of the new chain (goal 0.5 s)

Usage: python bench/ui.py [--catalog .cache/demo/catalog.sqlite] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))
from tiles import TileWatch

PRESETS = ["False colour (infrared)", "NDVI (vegetation)", "SWIR", "Agriculture", "True colour"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default=str(ROOT / ".cache" / "demo" / "catalog.sqlite"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--port", type=int, default=5199)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    load_before = os.getloadavg()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "eoexplorer"), "serve", "--port",
                             str(args.port), "--catalog", args.catalog],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        first, change = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            for run in range(args.runs):
                ctx = browser.new_context(viewport={"width": 1500, "height": 950})
                page = ctx.new_page()
                watch = TileWatch().attach(page)
                t0 = time.monotonic()
                page.goto(base + "/", timeout=120_000)  # a cold first load under load: >30 s
                watch.wait(page, lambda w=watch: bool(w.with_data()), 60)
                first.append(watch.with_data()[0].at - t0)
                page.locator(".bk-tab", has_text="Display").first.click()
                page.wait_for_timeout(1000)
                for name in PRESETS:
                    known = set(watch.chains())
                    t1 = time.monotonic()
                    page.get_by_text(name, exact=True).click()
                    ok = watch.wait(page, lambda w=watch, k=known: any(
                        t.chain not in k for t in w.with_data()), 20)
                    if ok:
                        tile = next(t for t in watch.with_data() if t.chain not in known)
                        change.append(tile.at - t1)
                    page.wait_for_timeout(300)
                ctx.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    def show(name: str, values: list[float], goal: float) -> None:
        med = statistics.median(values)
        sys.stdout.write(f"{name}: median {med:.2f} s, min {min(values):.2f}, max "
                         f"{max(values):.2f} (n={len(values)}, goal {goal} s)\n")

    show("first map tiles after navigation (1st run = cold server)", first, 3.0)
    show("first map tiles, warm server", first[1:] or first, 3.0)
    show("preset change -> new tiles", change, 0.5)
    load = ", ".join(f"{a:.1f}" for a in load_before)
    sys.stdout.write(f"machine: {os.cpu_count()} CPUs, load average before (1/5/15 min) {load}, "
                     f"after {os.getloadavg()[0]:.1f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
