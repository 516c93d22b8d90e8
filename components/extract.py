"""Extract tab: download what the displayed chain computes inside a drawn box or polygon, at
native resolution, as a GeoTIFF (COG) or PNG, or the original band values as a GeoTIFF.

The size is checked first (a clear message over the limit); the file is computed block by
block in a worker thread with a progress bar, into a private temporary folder, and offered
by a download button once complete.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import panel as pn
import param

from components.state import AppState
from engine import extract as ex
from engine.errors import EOXError, InvalidInput

log = logging.getLogger(__name__)

FORMATS = {"GeoTIFF (COG)": "cog", "PNG": "png"}
CONTENTS = {"What the map shows": "rendered", "Original band values": "bands"}


def too_large_text(exc: ex.ExtractTooLarge) -> str:
    """What the Extract tab says of an area over the limit: its size, the limit, what to do."""
    return (f"the area is too large to extract: {exc.size}, more than the limit of "
            f"{exc.limit:,} pixels. Zoom in and draw a smaller box or polygon, or set a "
            "larger pixel size.")


def world_zip(png: Path) -> Path:
    """A zip beside ``png`` holding it with its world file (.pgw) and CRS (.prj)."""
    bundle = png.with_name(f"{png.stem}-georeferenced.zip")
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        for part in (png, png.with_suffix(".pgw"), png.with_suffix(".prj")):
            if part.exists():
                z.write(part, part.name)
    return bundle


class ExtractPanel(pn.viewable.Viewer):
    """The Extract tab of a session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    shape = param.Selector(objects=[], doc="Id of the drawn box/polygon extracted.")
    fmt = param.Selector(objects=list(FORMATS), default="GeoTIFF (COG)", label="Format")
    what = param.Selector(objects=list(CONTENTS), default="What the map shows",
                          label="Content")
    crs = param.String("", doc="Output CRS (empty: the scene's own).", label="CRS (optional)")
    resolution = param.Number(None, allow_None=True, bounds=(0, None), inclusive_bounds=(
        False, True), doc="Pixel size in CRS units (empty: native).",
        label="Pixel size (optional)")
    max_pixels = param.Integer(ex.MAX_PIXELS, bounds=(1, None), doc=(
        "Largest extract, output pixels; larger areas are refused before anything is read. "
        "Default: the backend's ``extract_max_pixels`` (the setting of that name)."))

    def __init__(self, **params: Any) -> None:
        # the deployment's limit (Settings.extract_max_pixels) travels on the backend
        if "max_pixels" not in params:
            params["max_pixels"] = int(params["state"].backend.extract_max_pixels)
        super().__init__(**params)
        self._folder: Path | None = None
        self._shape = pn.widgets.Select(name="Area (drawn box or polygon)",
                                        sizing_mode="stretch_width")
        self._shape.param.watch(lambda e: setattr(self, "shape", e.new), "value")
        self._fmt = pn.widgets.RadioButtonGroup.from_param(self.param.fmt, button_type="primary",
                                                           button_style="outline")
        self._what = pn.widgets.RadioButtonGroup.from_param(self.param.what,
                                                            button_type="primary",
                                                            button_style="outline")
        self._crs = pn.widgets.TextInput.from_param(self.param.crs, placeholder="EPSG:32633",
                                                    width=180)
        self._res = pn.widgets.FloatInput.from_param(self.param.resolution, width=150,
                                                     placeholder="native")
        self._check = pn.widgets.Button(name="Check size", width=120)
        self._check.on_click(lambda e: self.check())
        self._go = pn.widgets.Button(name="Extract", button_type="primary", width=120)
        self._go.on_click(self._on_extract)
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False,
                                                sizing_mode="stretch_width", name="progress")
        self._info = pn.pane.Markdown("", margin=(0, 10), name="extract-info")
        self._download = pn.widgets.FileDownload(visible=False, button_type="success",
                                                 sizing_mode="stretch_width", embed=False,
                                                 name="extract-download")
        # a PNG holds no georeference: its world file (.pgw) and .prj with it in a zip
        self._world = pn.widgets.FileDownload(visible=False, button_type="success",
                                              button_style="outline", embed=False,
                                              sizing_mode="stretch_width", name="extract-world")
        self._shapes_changed()
        if pn.state.curdoc is not None:
            pn.state.on_session_destroyed(lambda ctx: self._cleanup())

    # -- choices ------------------------------------------------------------------------------
    @param.depends("state.drawings", watch=True)
    def _shapes_changed(self) -> None:
        options = {f["properties"]["name"]: f["id"] for f in self.state.drawings
                   if f["properties"].get("kind") in ("polygon", "box")}
        current = self.shape
        self.param.shape.objects = list(options.values())
        self._shape.options = options
        if options:
            self._shape.value = current if current in options.values() else list(
                options.values())[-1]
            self.shape = self._shape.value
        else:
            self.shape = None
        self._info.object = ("" if options else
                             "Draw a box or a polygon in the **Draw** tab: it is the area "
                             "extracted, at the scenes' native resolution.")

    def _geometry(self) -> dict:
        for f in self.state.drawings:
            if f["id"] == self.shape:
                return f["geometry"]
        raise InvalidInput("draw a box or a polygon first (Draw tab), then pick it here")

    # -- work ---------------------------------------------------------------------------------
    def prepare(self) -> ex.ExtractJob:
        """The extract the form describes, checked (size, polygon, format); raises EOXError."""
        if self.state.chain is None:
            raise InvalidInput("nothing is displayed: select a scene first")
        return ex.prepare(self.state.chain, self._geometry(), fmt=FORMATS[self.fmt],
                          what=CONTENTS[self.what], crs=self.crs.strip() or None,
                          resolution=self.resolution, catalog=self.state.backend.catalog,
                          max_pixels=self.max_pixels)

    def check(self) -> ex.ExtractJob | None:
        """Show the extract's size (or why it cannot be made: too large is said before any
        pixel is read, with the size, the limit and what to do)."""
        try:
            job = self.prepare()
        except ex.ExtractTooLarge as exc:
            text = too_large_text(exc)
            self._info.object = f"**Cannot extract:** {text}"
            self.state.notify(f"Extract: {text}", "error")
            return None
        except EOXError as exc:
            self._info.object = f"**Cannot extract:** {exc}"
            self.state.fail(exc, "Extract")
            return None
        self._info.object = (f"{job.describe()}, about {ex.human_bytes(job.nbytes)} "
                             f"uncompressed (limit {self.max_pixels:,} pixels)"
                             + (f". Note: {job.note}" if job.note else ""))
        return job

    def _target(self, job: ex.ExtractJob) -> Path:
        self._cleanup()
        self._folder = Path(tempfile.mkdtemp(prefix="eox-extract-ui-"))
        name = next((f["properties"]["name"] for f in self.state.drawings
                     if f["id"] == self.shape), "area")
        name = re.sub(r"[^\w.-]+", "-", name).strip("-").lower() or "area"  # "fields: north"
        coll = self.state.chain.source.collection if self.state.chain is not None else "chain"
        return self._folder / f"{coll}-{job.what}-{name}{ex.SUFFIXES[job.fmt]}"

    def _finished(self, result: ex.ExtractResult) -> None:
        self._progress.value = 100
        self._download.param.update(file=str(result.path), filename=result.path.name,
                                    label=f"Download {result.path.name}", visible=True)
        self._world.visible = False
        if result.fmt == "png":
            bundle = world_zip(result.path)
            self._world.param.update(file=str(bundle), filename=bundle.name, visible=True,
                                     label=f"Download {bundle.name} (PNG + world file .pgw)")
        text = (f"Ready: {result.width} x {result.height} px, {len(result.band_names)} "
                f"band(s) ({', '.join(result.band_names)}), {result.crs}")
        if result.note:
            text += f". Note: {result.note}"
        self._info.object = text
        self.state.notify(f"Extract ready: {result.path.name}", "success")

    def extract(self) -> ex.ExtractResult | None:
        """Compute the extract here (blocking) and offer it for download; None on error."""
        self._download.visible = self._world.visible = False
        job = self.check()
        if job is None:
            return None
        self._progress.param.update(value=0, visible=True)
        try:
            result = ex.run(job, self._target(job), progress=self._set_progress)
        except EOXError as exc:
            self._failed(exc)
            return None
        self._finished(result)
        return result

    def _failed(self, exc: EOXError) -> None:
        """An extract that failed while computing: say why, keep no folder behind (the
        engine already removed its partial file)."""
        self._progress.visible = False
        self._cleanup()
        self.state.fail(exc, "Extract")

    def _set_progress(self, done: int, total: int) -> None:
        self._progress.value = int(100 * done / max(total, 1))

    async def _on_extract(self, event: Any) -> None:
        """The button: the blocks run in a worker thread while the progress bar moves."""
        self._download.visible = self._world.visible = False
        job = self.check()
        if job is None:
            return
        self._go.disabled = True
        self._progress.param.update(value=0, visible=True)
        counts = [0, job.blocks]

        def progress(done: int, total: int) -> None:  # worker thread: only record
            counts[0], counts[1] = done, total

        target = self._target(job)
        task = asyncio.ensure_future(asyncio.to_thread(ex.run, job, target, progress=progress))
        try:
            while not task.done():
                self._progress.value = int(100 * counts[0] / max(counts[1], 1))
                await asyncio.sleep(0.2)
            result = task.result()
        except EOXError as exc:
            self._failed(exc)
            return
        finally:
            self._go.disabled = False
        self._finished(result)

    def _cleanup(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._shape, pn.pane.Markdown("**Format**", margin=(0, 10)), self._fmt,
            pn.pane.Markdown("**Content**", margin=(0, 10)), self._what,
            pn.Row(self._crs, self._res), pn.Row(self._check, self._go), self._progress,
            self._info, self._download, self._world, sizing_mode="stretch_width",
        )
