"""A seeded random walk of user actions over the served dashboard (issue 14, item 1).

``walk(page, base, seed, steps)`` clicks, types, draws, plays and navigates as a user would,
across every tab and demo collection, and returns what it did. An action that finds nothing
to act on (a button not shown on this collection, an empty table) counts as skipped: the
monkey only does what the page offers. ``final_view(page, base, walk)`` then says what the UI
claims is displayed and which tiles the map fetched for it.

Between actions the monkey waits until the page is idle (``idle.Activity``: no websocket
frame for a moment, no open request), except for a seeded quarter of the actions, which come
at once as from a hurried user (the races of issue 14 came from such overlaps). A tab's
content (sent by the server each time the tab is shown) is waited for; then a control that
is not there is a skip once the page is idle, not after a timeout.

Used by tests/ui/test_monkey.py (a few seeds) and bench/ui_monkey.py (20 seeds).
"""

from __future__ import annotations

import io
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
from idle import Activity
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from tiles import LOADED_JS, TILE, Tile, TileWatch

DEMO = ("sentinel-2-l1c", "sentinel-2-l3a", "landsat-sr")
PLACES = ("Germany", "Colorado", "Toulouse", "Berlin", "Munich", "Nowhere-on-earth", "")
EXPRESSIONS = ("(nir - red) / (nir + red)", "(nir-swir16)/(nir+swir16)", "nir +* red",
               "red", "B04 / B08", "swir1 - nir", "")
#: Short waits: an action must not block the walk when the page does not offer it.
QUICK = 1500
#: A tab's content comes from the server when the tab is first shown: wait that long for it.
CONTENT = 10_000
#: Share of the actions that come without waiting for the page to be idle.
HURRIED = 0.25

#: What each tab always shows once its content arrived: (role or "placeholder", name).
MARKERS: dict[str, tuple[str, str | re.Pattern]] = {
    "Search": ("button", "Search"),
    "Display": ("placeholder", "(nir - red) / (nir + red)"),
    "Functions": ("button", "Test"),
    "Stretch": ("button", "Auto stretch (visible pixels)"),
    "Zoom": ("placeholder", "e.g. Toulouse"),
    "Split": ("button", re.compile("(Show|Hide) split view")),
    "Draw": ("button", "Box"),
    "Time": ("button", "Dates in this view"),
    "Profile": ("button", "Use the displayed band math"),
}

#: JS: the scene layer's tile URL template and visibility as the browser has them, and the
#: view of its map (Web Mercator extent, size in pixels).
SCENES_JS = """() => {
  const doc = Bokeh.documents[0];
  const r = doc.get_model_by_name('eox-scenes');
  if (!r) return null;
  const fig = [...doc.all_models].find((m) => m.renderers && m.renderers.includes(r));
  const view = fig ? [fig.x_range.start, fig.y_range.start, fig.x_range.end, fig.y_range.end,
                      fig.inner_width, fig.inner_height] : null;
  return {url: r.tile_source.url, visible: r.visible, view: view};
}"""
#: Half the width of the Web Mercator world in metres.
HALF_WORLD = 20037508.342789244


@dataclass
class Walk:
    """What a walk did: the actions in order, those skipped, the page errors seen."""

    seed: int
    actions: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # duration of each action
    activity: Activity | None = field(default=None, repr=False)  # the page's network activity


class Monkey:
    """One page, one seeded random source, one walk."""

    def __init__(self, page, base: str, seed: int) -> None:
        self.page, self.base, self.rng = page, base, random.Random(seed)
        self.activity = Activity(page)
        self.result = Walk(seed, activity=self.activity)
        page.on("pageerror", lambda e: self.result.page_errors.append(str(e)))
        self.actions: list[tuple[str, int, Callable[[], None]]] = [
            ("collection", 4, self.collection), ("search", 6, self.search),
            ("select", 8, self.select_row), ("preset", 8, self.preset),
            ("band-math", 4, self.band_math), ("stretch", 4, self.stretch),
            ("auto-stretch", 3, self.auto_stretch), ("place-zoom", 4, self.place_zoom),
            ("search-place", 3, self.search_place), ("zoom", 4, self.zoom_buttons),
            ("split", 3, self.split), ("draw-box", 3, self.draw_box),
            ("time-step", 6, self.time_step), ("play", 3, self.play),
            ("profile", 3, self.profile), ("function", 4, self.function),
            ("pan", 5, self.pan), ("wheel", 5, self.wheel), ("tab", 6, self.any_tab),
            ("back", 2, self.back), ("forward", 2, self.forward), ("reload", 1, self.reload),
        ]

    # -- plumbing -------------------------------------------------------------------------
    def loaded(self, timeout: float = 30_000) -> None:
        self.page.wait_for_function(LOADED_JS, timeout=timeout)

    def navigated(self) -> None:
        """After a (re)load: no request open, the page marked as ours."""
        self.activity.forget()
        self.loaded()
        self.page.evaluate("() => { window.eoxMonkeyPage = true; }")

    def goto_tab(self, name: str) -> None:
        active = self.page.locator(".bk-tab.bk-active", has_text=re.compile(f"^{name}$"))
        if not active.count():
            tab = self.page.locator(".bk-tab", has_text=re.compile(f"^{name}$")).first
            tab.click(timeout=QUICK)
            active.first.wait_for(timeout=QUICK)
        if name in MARKERS:  # the content of a tab comes from the server each time it shows
            kind, text = MARKERS[name]
            marker = (self.page.get_by_placeholder(text) if kind == "placeholder"
                      else self.page.get_by_role(kind, name=text, exact=True))
            marker.first.wait_for(timeout=CONTENT)

    def present(self, locator) -> None:
        """Return once ``locator`` finds something; when not even the idle page shows it,
        the action has nothing to act on (a skip)."""
        if locator.count() == 0:
            self.activity.wait(timeout=5)
            if locator.count() == 0:
                raise PlaywrightError("not offered")

    def click(self, locator) -> None:
        """Click what ``locator`` finds; a control not offered or disabled is a skip."""
        target = locator.first
        self.present(target)
        if not target.is_enabled():
            raise PlaywrightError("disabled")
        target.click(timeout=QUICK)

    def click_button(self, name: str) -> None:
        self.click(self.page.get_by_role("button", name=name, exact=True))

    def settle(self) -> None:
        """Wait for the page to be idle, except before a hurried action."""
        if self.rng.random() >= HURRIED:
            self.activity.wait(quiet=self.rng.choice((0.05, 0.15, 0.3)))

    def map_box(self) -> dict:
        """The largest canvas on the page (the main map). None on screen: the page is
        loading again (a history step onto an entry of the page before a reload loads it
        anew, a moment later - seed 17), so wait for that page first."""
        for attempt in range(2):
            boxes = [b for b in (c.bounding_box() for c in self.page.locator(
                ".bk-Canvas canvas, canvas").all()[:6]) if b]
            if boxes:
                return max(boxes, key=lambda b: b["width"] * b["height"])
            if attempt == 0:
                self.page.wait_for_load_state("load")
                self.navigated()
        raise PlaywrightError("no map on the page")

    def step(self) -> str:
        names = [a[0] for a in self.actions]
        weights = [a[1] for a in self.actions]
        name = self.rng.choices(names, weights)[0]
        fn = {a[0]: a[2] for a in self.actions}[name]
        t0 = time.monotonic()
        try:
            fn()
        except PlaywrightError as exc:  # nothing to act on (or not in time): a skip
            self.result.skipped.append(f"{name}: {str(exc).splitlines()[0][:120]}")
        self.result.actions.append(name)
        self.settle()
        self.result.seconds.append(time.monotonic() - t0)
        return name

    # -- actions ----------------------------------------------------------------------------
    def collection(self) -> None:
        self.goto_tab("Search")
        sel = self.page.locator("select", has=self.page.locator("option", has_text=DEMO[2]))
        self.present(sel)
        sel.first.select_option(self.rng.choice(DEMO), timeout=QUICK)

    def search(self) -> None:
        self.goto_tab("Search")
        self.click_button("Search")

    def select_row(self) -> None:
        self.goto_tab("Search")
        rows = self.page.locator(".tabulator-row")
        self.present(rows)
        n = rows.count()
        rows.nth(self.rng.randrange(min(n, 6))).locator(
            "input[type=checkbox]").first.click(timeout=QUICK)

    def preset(self) -> None:
        self.goto_tab("Display")
        # the presets: one group of buttons, of which one is pressed
        buttons = self.page.locator(".bk-btn-group:visible", has_text="Band math").locator(
            "button")
        self.present(buttons)
        buttons.nth(self.rng.randrange(buttons.count())).click(timeout=QUICK)

    def band_math(self) -> None:
        self.goto_tab("Display")
        self.click(self.page.get_by_text("Band math", exact=True))
        box = self.page.get_by_placeholder("(nir - red) / (nir + red)").first
        self.present(box)
        box.fill(self.rng.choice(EXPRESSIONS), timeout=QUICK)
        box.press("Enter")

    def stretch(self) -> None:
        self.goto_tab("Stretch")
        inputs = self.page.locator("input[type=text]:visible")  # min/max of each band
        self.present(inputs)
        n = inputs.count()
        box = inputs.nth(self.rng.randrange(n))
        box.fill(str(self.rng.choice((0, 500, 2000, 4000, -1, 0.5, 1e5))), timeout=QUICK)
        box.press("Enter")

    def auto_stretch(self) -> None:
        self.goto_tab("Stretch")
        self.click_button(self.rng.choice(("Auto stretch (visible pixels)",
                                           "Histogram of the view")))

    def place_zoom(self) -> None:
        self.goto_tab("Zoom")
        self.page.get_by_placeholder("e.g. Toulouse").first.fill(self.rng.choice(PLACES),
                                                                  timeout=QUICK)
        self.click_button("Zoom to place")

    def search_place(self) -> None:
        self.goto_tab("Search")
        box = self.page.get_by_placeholder("Type a city, region or country…").first
        box.fill(self.rng.choice(PLACES), timeout=QUICK)
        self.click_button(self.rng.choice(("Go to place", "Search", "Clear area")))

    def zoom_buttons(self) -> None:
        self.goto_tab("Zoom")
        self.click_button(self.rng.choice(("Zoom to the selected scene(s)",
                                           "Zoom to all results")))

    def split(self) -> None:
        self.goto_tab("Split")
        self.click(self.page.get_by_role("button", name=re.compile("(Show|Hide) split view")))

    def draw_box(self) -> None:
        self.goto_tab("Draw")
        self.click_button(self.rng.choice(("Box", "Pan / zoom")))
        b = self.map_box()
        x0 = b["x"] + b["width"] * self.rng.uniform(0.2, 0.5)
        y0 = b["y"] + b["height"] * self.rng.uniform(0.2, 0.5)
        self.page.keyboard.down("Shift")
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        self.page.mouse.move(x0 + 80, y0 + 60, steps=4)
        self.page.mouse.up()
        self.page.keyboard.up("Shift")

    def time_step(self) -> None:
        self.goto_tab("Time")
        cls = self.rng.choice(("previous", "next", "previous", "next", "slower", "faster"))
        self.click(self.page.locator(f"button.{cls}"))

    def play(self) -> None:
        self.goto_tab("Time")
        self.click(self.page.locator("button.play"))
        self.page.wait_for_timeout(self.rng.choice((300, 800, 1500)))
        self.click(self.page.locator("button.pause"))

    def profile(self) -> None:
        self.goto_tab("Profile")
        if self.rng.random() < 0.3:
            self.click_button("Use the displayed band math")
            return
        self.click(self.page.get_by_role("button", name="Click the map for a profile"))
        b = self.map_box()
        self.page.mouse.click(b["x"] + b["width"] * self.rng.uniform(0.3, 0.7),
                              b["y"] + b["height"] * self.rng.uniform(0.3, 0.7))

    def function(self) -> None:
        self.goto_tab("Functions")
        examples = self.page.locator("select", has=self.page.locator("option",
                                                                     has_text="stubble"))
        if examples.count() and self.rng.random() < 0.5:
            options = examples.first.locator("option").all_inner_texts()
            examples.first.select_option(label=self.rng.choice(options), timeout=QUICK)
        self.click_button(self.rng.choice(("Test", "Apply")))

    def pan(self) -> None:
        b = self.map_box()
        x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + self.rng.uniform(-150, 150), y + self.rng.uniform(-100, 100),
                             steps=3)
        self.page.mouse.up()

    def wheel(self) -> None:
        b = self.map_box()
        self.page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        self.page.mouse.wheel(0, self.rng.choice((-400, -200, 200, 400)))

    def any_tab(self) -> None:
        names = [t.strip() for t in self.page.locator(".bk-tab").all_inner_texts()]
        self.goto_tab(self.rng.choice([n for n in names if n]))

    def back(self) -> None:
        self.page.go_back(timeout=QUICK * 2)
        self.after_history()

    def forward(self) -> None:
        self.page.go_forward(timeout=QUICK * 2)
        self.after_history()

    def reload(self) -> None:
        self.page.reload()
        self.navigated()

    def after_history(self) -> None:
        """Back/forward: the state follows the URL, in the same page or in a new one; when
        the walk went back past its first page it starts over at the dashboard."""
        if not self.page.url.startswith(self.base):
            self.page.goto(self.base + "/")
            self.navigated()
        elif not self.page.evaluate("() => window.eoxMonkeyPage === true"):
            self.navigated()  # a page of its own was loaded


def walk(page, base: str, seed: int, steps: int = 200) -> Walk:
    """Open the dashboard and perform ``steps`` seeded random actions."""
    monkey = Monkey(page, base, seed)
    page.goto(base + "/", timeout=120_000)  # a first load took over 30 s under load 15
    monkey.navigated()
    for _ in range(steps):
        monkey.step()
    monkey.loaded()
    return monkey.result


@dataclass
class View:
    """What the UI says is displayed, and what the map fetched for it."""

    url_chain: str  # chain id in the page's URL ('' when none is displayed)
    url_collection: str
    layer_url: str  # the scene layer's tile template in the browser
    layer_visible: bool
    chain_collection: str  # collection of the chain the service has under url_chain
    tiles: list  # tiles.Tile fetched after "Zoom to the selected scene(s)"
    chain_json: dict = field(default_factory=dict)  # the service's chain under url_chain
    requested: list = field(default_factory=list)  # the chain's tiles the browser requested
    view: list | None = None  # the map's x0, y0, x1, y1 (Web Mercator), width, height


def _agreed(page, timeout: float) -> tuple[str, str, dict]:
    """The URL's chain and collection and the scene layer, read together, once they agree
    (or when ``timeout`` has passed): a server callback still working (a loaded machine, a
    history navigation being applied) looks idle while it sends nothing."""
    deadline = time.monotonic() + timeout
    while True:
        query = parse_qs(urlparse(page.url).query)
        chain = (query.get("chain") or [""])[0]
        coll = (query.get("collection") or [""])[0]
        layer = page.evaluate(SCENES_JS) or {"url": "", "visible": False, "view": None}
        if not chain or f"/chains/{chain}/" in layer["url"] or time.monotonic() > deadline:
            return chain, coll, layer
        page.wait_for_timeout(200)


def final_view(page, base: str, done: Walk, timeout: float = 30.0) -> View:
    """Zoom to the displayed scenes and collect the scene tiles the map then requests (when
    the browser requests nothing, or only tiles without pixels - tiles in its cache are not
    requested again - also the tiles at the centre of its view, fetched with the layer's
    own URL). URL and layer are read together after the zoom: a
    navigation of the walk's last steps (back/forward) may still change the display while the
    zoom is clicked, and then both follow it."""
    activity = done.activity or Activity(page)
    page.wait_for_function(LOADED_JS, timeout=30_000)
    activity.wait(quiet=0.5)  # the URL follows the state on the next patch
    chain, coll, layer = _agreed(page, timeout)
    watch = TileWatch()
    requested: list = []
    if chain:
        watch.attach(page)
        page.locator(".bk-tab", has_text=re.compile("^Zoom$")).first.click()
        page.get_by_role("button", name="Zoom to the selected scene(s)").first.click()
        # until a tile of the chain has pixels, or the page is idle again
        watch.wait(page, lambda: watch.with_data(chain) or not activity.busy(0.5), timeout)
        activity.wait(quiet=0.5)
        chain, coll, layer = _agreed(page, timeout)
        if chain and not watch.with_data(chain):
            # nothing requested anew, or only tiles without pixels: after many actions most
            # of a scene's tiles are in the map's tile cache and the new requests can all be
            # edge tiles outside the footprint (seed 19). Judge the view's own tiles then.
            requested = [t for t in watch.tiles if t.chain == chain]
            watch.tiles += view_tiles(base, layer["url"], layer["view"])
    chain_json: dict = {}
    if chain:
        r = httpx.get(f"{base}/api/chains/{chain}", timeout=10)
        if r.status_code == 200:
            chain_json = r.json()
    chain_coll = (chain_json.get("source") or {}).get("collection", "")
    return View(chain, coll, layer["url"], bool(layer["visible"]), chain_coll, watch.tiles,
                chain_json, requested, layer["view"])


def view_tiles(base: str, url: str, view: list | None, most: int = 9) -> list[Tile]:
    """The tiles (at most ``most``, from the centre out) that a map showing ``view``
    (x0, y0, x1, y1 in Web Mercator, width, height in pixels) draws from template ``url``."""
    full = url if url.startswith("http") else f"{base}/{url.lstrip('/')}"  # 'api/chains/..'
    m = TILE.search(full.replace("{Z}", "0").replace("{X}", "0").replace("{Y}", "0"))
    if not m or not view or not view[4]:
        return []
    x0, y0, x1, y1, width, _ = view
    z = max(0, min(22, round(math.log2(2 * HALF_WORLD / 256 / ((x1 - x0) / width)))))
    size = 2 * HALF_WORLD / 2 ** z

    def cols(lo: float, hi: float) -> range:
        return range(max(0, int(lo // size)), min(2 ** z - 1, int(hi // size)) + 1)

    xs = cols(x0 + HALF_WORLD, x1 + HALF_WORLD)
    ys = cols(HALF_WORLD - y1, HALF_WORLD - y0)
    cx, cy = (xs.start + xs.stop - 1) / 2, (ys.start + ys.stop - 1) / 2
    near = sorted(((x, y) for x in xs for y in ys), key=lambda t: (t[0] - cx) ** 2 + (t[1] - cy) ** 2)
    out = []
    for x, y in near[:most]:
        r = httpx.get(full.replace("{Z}", str(z)).replace("{X}", str(x)).replace("{Y}", str(y)),
                      timeout=30)
        pixels = (np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
                  if r.status_code == 200 else None)
        out.append(Tile(m.group(1), z, x, y, r.status_code, time.monotonic(), pixels))
    return out
