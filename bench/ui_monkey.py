"""The monkey of tests/ui/test_monkey.py over many seeds: prints, per seed, the callback
crashes in the server's log, the page errors and whether the map still showed what the page
said, then the totals.

Usage: python bench/ui_monkey.py [--seeds 20] [--steps 200] [--catalog .cache/demo/catalog.sqlite]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))
from monkey import final_view, walk
from test_monkey import crashes
from tiles import serve_app


def map_ok(view) -> bool:
    """The map shows tiles of the chain and collection the page's URL names."""
    if not view.url_chain:
        return not view.layer_visible
    shown = [t for t in view.tiles if t.chain == view.url_chain]
    return (view.layer_visible and f"/chains/{view.url_chain}/" in view.layer_url
            and view.chain_collection == view.url_collection
            and any(t.has_data for t in shown))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default=str(ROOT / ".cache" / "demo" / "catalog.sqlite"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    catalog = Path(args.catalog)
    total_crashes, total_errors, broken = 0, 0, 0
    kinds: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp, \
            serve_app(catalog, catalog.parent / "data", Path(tmp)) as base, \
            sync_playwright() as p:
        log = Path(tmp) / "serve.log"
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = log.stat().st_size
            ctx = browser.new_context(viewport={"width": 1500, "height": 950})
            page = ctx.new_page()
            t0 = time.monotonic()
            try:
                done = walk(page, base, seed, steps=args.steps)
                view = final_view(page, base, done)
                ok = map_ok(view)
                if view.requested:  # the browser's new tiles had no pixels (seed 19)
                    print(f"  seed {seed}: the map requested {len(view.requested)} tile(s) of "
                          f"the chain after the zoom, none with pixels: "
                          f"{[(t.z, t.x, t.y) for t in view.requested]}; the view's centre "
                          f"tiles: {sum(t.has_data for t in view.tiles)} with pixels; "
                          f"view {view.view}", flush=True)
                if not ok:  # say why: URL vs layer vs chain, and the tiles fetched for it
                    print(f"  seed {seed} map: url chain {view.url_chain!r} of "
                          f"{view.url_collection!r}, layer {view.layer_url!r} visible "
                          f"{view.layer_visible}, chain of {view.chain_collection!r}, "
                          f"tile(s) of it: "
                          f"{[(t.z, t.x, t.y, t.status, t.has_data) for t in view.tiles if t.chain == view.url_chain]}; "
                          f"chain {json.dumps(view.chain_json)}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a walk that dies is counted, not fatal
                print(f"seed {seed}: walk aborted: {exc!s:.200}")
                done, ok = None, False
            finally:
                ctx.close()
            found = crashes(log.read_text(errors="replace")[start:])
            for c in found:
                kinds[c.strip().splitlines()[-1][:110]] += 1
            errors = len(done.page_errors) if done else 0
            total_crashes += len(found)
            total_errors += errors
            broken += not ok
            skipped = len(done.skipped) if done else -1
            print(f"seed {seed}: {len(found)} crash(es), {errors} page error(s), map "
                  f"{'ok' if ok else 'WRONG'}, {skipped} skipped, "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
        browser.close()
    print(f"\n{args.seeds} seeds x {args.steps} actions: {total_crashes} server callback "
          f"crash(es), {total_errors} page error(s), {broken} walk(s) ending with a wrong map")
    for kind, n in kinds.most_common():
        print(f"  {n:3d} x {kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
