"""Batch tab: "Run over this area" for the displayed chain on Dask, and large raster layers.

The run (``engine.batch.plan`` then ``write_cog``/``write_zarr``) happens in a background
thread on the configured scheduler (``Settings.dask_scheduler``) or on a LocalCluster started
once per process on first use (2 worker processes, bounded memory). Blocks report progress
as they arrive; when the output is written it can be downloaded and is shown on the map as
a large raster layer (:mod:`components.rasterlayer`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import panel as pn
import param

from components.icons import icon
from components.map import MapView
from components.rasterlayer import RasterLayer, RasterLayers
from components.session import run_locked
from components.state import AppState
from engine.batch import Plan, connect, plan, write_cog, write_zarr
from engine.chain import Chain
from engine.chain.executor import get_executor
from engine.chain.steps import Execute
from engine.errors import EOXError, InvalidInput

log = logging.getLogger(__name__)

#: Worker processes and memory cap of the LocalCluster started when no scheduler is set.
LOCAL_WORKERS = 2
LOCAL_MEMORY = "2GiB"
#: Largest output offered as a browser download (FileDownload sends it through the socket).
MAX_DOWNLOAD_BYTES = 512 * 2**20
VISIBLE = "Visible map"
SEARCH_BOX = "Search box"

_clients: dict[str, tuple[contextlib.ExitStack, Any]] = {}
_clients_lock = threading.Lock()


def shared_client(scheduler: str | None, *, workers: int = LOCAL_WORKERS,
                  memory_limit: str = LOCAL_MEMORY) -> Any:
    """The process's ``distributed.Client`` for ``scheduler`` (None: a LocalCluster),
    connected or started on first use and closed when the process exits."""
    key = scheduler or "local"
    with _clients_lock:
        entry = _clients.get(key)
        if entry is not None and entry[1].status == "running":
            return entry[1]
        stack = contextlib.ExitStack()
        client = stack.enter_context(connect(scheduler, workers=workers,
                                             memory_limit=memory_limit))
        atexit.register(stack.close)
        _clients[key] = (stack, client)
        log.info("batch runs use %s (dashboard %s)", client, client.dashboard_link)
        return client


class _Cancelled(Exception):
    """Raised from the progress callback to stop a run (nothing is written)."""


def bbox_of(geometry: dict) -> tuple[float, float, float, float]:
    """W, S, E, N of a GeoJSON geometry's coordinates."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(c: Any) -> None:
        if c and isinstance(c[0], int | float):
            xs.append(float(c[0]))
            ys.append(float(c[1]))
        else:
            for part in c:
                walk(part)

    walk(geometry.get("coordinates") or [])
    if not xs:
        raise InvalidInput("the drawn shape has no coordinates")
    return min(xs), min(ys), max(xs), max(ys)


class BatchPanel(pn.viewable.Viewer):
    """The Batch tab of a session: run the displayed chain over an area into a COG or Zarr
    store, follow its progress, download it, see it on the map; add rasters by path."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                              doc="The map results are drawn on (None: no drawing, tests).")
    area = param.Selector(objects=[VISIBLE], default=VISIBLE,
                          doc="Area run over: the visible map, the search box or a drawn "
                              "shape (its bounding box).")
    resolution = param.Number(None, allow_None=True, bounds=(0, None),
                              inclusive_bounds=(False, True),
                              doc="Output pixel size in the scenes' CRS units (metres for "
                                  "UTM); empty = the scenes' native resolution.")
    output = param.Selector(objects=["COG", "Zarr"], default="COG", doc="Output format.")
    analytic = param.Boolean(True, doc="Write the chain's values (before stretch and colormap) "
                                     "instead of its display colours.")
    client_factory = param.Callable(None, doc="Returns the distributed.Client runs use "
                                              "(default: the process's shared client).")
    running = param.Boolean(False, doc="A run is in progress.")
    done = param.Integer(0, doc="Blocks written in the current run.")
    total = param.Integer(0, doc="Blocks of the current run.")
    result = param.Parameter(None, doc="Path of the last output written.")
    message = param.String("", doc="One line about the run.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.rasters = RasterLayers(state=self.state, map=self.map)
        self.layer: RasterLayer | None = None
        self._doc: Any = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._area = pn.widgets.Select.from_param(self.param.area, name="Area",
                                                  sizing_mode="stretch_width")
        self._resolution = pn.widgets.FloatInput.from_param(
            self.param.resolution, name="Resolution (empty = native)", placeholder="native",
            width=190)
        self._output = pn.widgets.RadioButtonGroup.from_param(self.param.output, width=150)
        self._values = pn.widgets.Checkbox.from_param(
            self.param.analytic, name="Values (before stretch/colormap)")
        self._run = pn.widgets.Button(name="Run over this area", button_type="primary",
                                      icon=icon("player-play"), sizing_mode="stretch_width")
        self._run.on_click(lambda e: self.start())
        self._stop = pn.widgets.Button(name="Cancel", button_type="light", width=90,
                                       disabled=True)
        self._stop.on_click(lambda e: self.cancel())
        self._progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width",
                                                bar_color="primary", visible=False)
        self._status = pn.pane.Markdown("", margin=(0, 10), name="batch-status")
        self._dashboard = pn.pane.Markdown("", margin=(0, 10), name="batch-dashboard")
        self._error = pn.pane.Alert("", alert_type="danger", visible=False,
                                    sizing_mode="stretch_width", name="batch-error")
        self._download = pn.widgets.FileDownload(
            callback=self._download_file, filename="result.tif", embed=False,
            button_type="success", label="Download the result", icon=icon("download"),
            sizing_mode="stretch_width", visible=False)
        self._areas_changed()

    # -- area -------------------------------------------------------------------------------
    @param.depends("state.drawings", "state.bbox", watch=True)
    def _areas_changed(self) -> None:
        options = [VISIBLE] + ([SEARCH_BOX] if self.state.bbox is not None else [])
        for feature in self.state.drawings:
            props = feature.get("properties") or {}
            if props.get("kind") in ("box", "polygon"):
                options.append(f"Drawn: {props.get('name') or props.get('id')}")
        self.param.area.objects = options
        if self.area not in options:
            self.area = VISIBLE

    def area_bbox(self) -> tuple[float, float, float, float]:
        """W, S, E, N (lon/lat) of the chosen area."""
        s = self.state
        if self.area == VISIBLE:
            if s.viewport is None:
                raise InvalidInput("the map has not reported its view yet")
            return tuple(s.viewport)
        if self.area == SEARCH_BOX:
            if s.bbox is None:
                raise InvalidInput("draw a search box first")
            return tuple(s.bbox)
        name = self.area.removeprefix("Drawn: ")
        for feature in s.drawings:
            props = feature.get("properties") or {}
            if name in (props.get("name"), props.get("id")):
                return bbox_of(feature.get("geometry") or {})
        raise InvalidInput(f"the drawn shape {name!r} is gone")

    # -- running ----------------------------------------------------------------------------
    def output_path(self, chain: Chain, bbox: tuple[float, ...]) -> Path:
        """Where a run of ``chain`` over ``bbox`` with the current options is written."""
        folder = self.state.backend.batch_dir
        if folder is None:
            raise InvalidInput("batch runs are off in this deployment (no output folder)")
        key = json.dumps([chain.id, [round(v, 7) for v in bbox], self.resolution,
                          self.analytic], sort_keys=True)
        token = hashlib.sha256(key.encode()).hexdigest()[:10]
        suffix = ".tif" if self.output == "COG" else ".zarr"
        return Path(folder) / f"{chain.id}-{token}{suffix}"

    def start(self) -> threading.Thread | None:
        """Start a run of the displayed chain over the area in a background thread (returned,
        so callers can wait); None, with a message, when it cannot start."""
        if self.running:
            self.state.notify("Batch: a run is already in progress", "warning")
            return None
        try:
            chain = self.state.chain
            if chain is None:
                raise InvalidInput("nothing is displayed: select a scene first")
            bbox = self.area_bbox()
            out = self.output_path(chain, bbox)
            out.parent.mkdir(parents=True, exist_ok=True)
        except EOXError as exc:
            self._failed(exc)
            return None
        self._doc = pn.state.curdoc or (self.map.figure.document if self.map else None)
        self._cancel.clear()
        self._error.visible = False
        self._download.visible = False
        self.param.update(running=True, done=0, total=0, result=None,
                          message="Planning the run…")
        self._show()
        self._thread = threading.Thread(target=self._work, args=(chain, bbox, out),
                                        name="eox-batch-run", daemon=True)
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        """Stop the current run after the blocks in flight (nothing is written)."""
        if self.running:
            self._cancel.set()
            self._ui(lambda: self.param.update(message="Cancelling…"))

    def _client(self) -> Any:
        if self.client_factory is not None:
            return self.client_factory()
        return shared_client(self.state.backend.dask_scheduler)

    def _work(self, chain: Chain, bbox: tuple[float, ...], out: Path) -> None:
        """The background run: plan (limits checked first), then compute and write."""
        backend = self.state.backend
        try:
            # execute steps probe on the cluster unless this process has a sandbox
            remote = get_executor() is None and any(isinstance(s, Execute) for s in chain.steps)
            client = self._client() if remote else None
            p = plan(chain, bbox=bbox, resolution=self.resolution, analytic=self.analytic,
                     catalog=backend.catalog, max_pixels=backend.batch_max_pixels,
                     client=client)
            a = p.area
            self._ui(lambda: self.param.update(message=(
                f"Starting the cluster for {a.width} x {a.height} px "
                f"({p.nblocks[0] * p.nblocks[1]} blocks)…")))
            client = client or self._client()
            link = getattr(client, "dashboard_link", "") or ""
            self._ui(lambda: self._set_dashboard(link))
            self._ui(lambda: self.param.update(message=(
                f"Computing {a.width} x {a.height} px at {a.resolution:g} "
                f"({a.crs.to_string()}) in {p.nblocks[0] * p.nblocks[1]} blocks")))
            write = write_cog if out.suffix == ".tif" else write_zarr
            write(p, out, client=client, progress=self._on_progress, overwrite=True)
        except _Cancelled:
            self._ui(lambda: self._ended("Cancelled: nothing was written."))
        except EOXError as exc:
            self._ui(partial(self._failed, exc))
        except Exception as exc:  # the thread's top: report, never die silently
            log.exception("batch run of %s failed", chain.id)
            self._ui(partial(self._failed, exc))
        else:
            self._ui(partial(self._finished, out, p))

    def _on_progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        self._ui(lambda: self.param.update(done=done, total=total, message=(
            f"{done} / {total} blocks" + (" — writing the COG with overviews…"
                                          if done == total and total else ""))))

    def _ui(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the session's event loop (directly without a served session)."""
        run_locked(self._doc, fn)

    def _ended(self, text: str) -> None:
        self.param.update(running=False, message=text)

    def _failed(self, exc: Exception) -> None:
        self._ended(f"Failed: {exc}")
        self._error.object = f"Batch run: {exc}"
        self._error.visible = True
        if isinstance(exc, EOXError):
            self.state.fail(exc, "Batch run")
        else:
            self.state.notify(f"Batch run: {exc}", "error")

    def _finished(self, out: Path, p: Plan) -> None:
        a = p.area
        self._ended(f"Done: {a.width} x {a.height} px written to `{out.name}`")
        self.result = out
        self._download.filename = out.name if out.suffix == ".tif" else out.name + ".zip"
        self._download.visible = True
        s = self.state
        style: dict[str, Any] = {}
        if self.analytic and s.single_band and s.vmin:
            style = {"colormap": s.colormap, "vmin": float(s.vmin[0]),
                     "vmax": float(s.vmax[0])}
        elif self.analytic and len(p.output.band_names) >= 3 and s.vmin:
            style = {"rgb": True, "vmin": float(min(s.vmin)), "vmax": float(max(s.vmax))}
        old = f"batch {p.chain.id[:8]}"
        if old in self.rasters.layers:
            self.rasters.remove(old)
        self.layer = self.rasters.add(out, name=old, zoom=False, trusted=True, **style)
        s.notify(f"Batch run done: {out.name}", "success")

    def _download_file(self) -> str | None:
        out = self.result
        if out is None:
            return None
        if out.is_dir():  # a Zarr store: one zip next to it
            zipped = out.with_name(out.name + ".zip")
            if not zipped.exists():
                shutil.make_archive(str(zipped.with_suffix("")), "zip", root_dir=out.parent,
                                    base_dir=out.name)
            out = zipped
        if out.stat().st_size > MAX_DOWNLOAD_BYTES:
            self.state.notify(f"Batch: {out.name} is too large to download through the "
                              f"browser; it is on the server at {out}", "warning")
            return None
        return str(out)

    # -- view -------------------------------------------------------------------------------
    def _set_dashboard(self, link: str) -> None:
        self._dashboard.object = (
            f"[Dask dashboard]({link}) (tasks, workers, memory)" if link else "")

    @param.depends("running", "done", "total", "message", watch=True)
    def _show(self) -> None:
        self._run.disabled = self.running
        self._stop.disabled = not self.running
        self._progress.visible = self.running or bool(self.total)
        self._progress.max = max(1, self.total)
        self._progress.value = min(self.done, max(1, self.total))
        self._status.object = self.message

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Run the displayed chain over an area**", margin=(0, 10)),
            self._area, pn.Row(self._resolution, self._output), self._values,
            pn.Row(self._run, self._stop, sizing_mode="stretch_width"),
            self._progress, self._status, self._dashboard, self._error, self._download,
            self.rasters, sizing_mode="stretch_width")


__all__ = ["BatchPanel", "bbox_of", "shared_client"]
