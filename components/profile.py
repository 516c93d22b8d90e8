"""Profile tab: click the map, or pick a polygon drawn in the Draw tab, and get the time
series of an index (NDVI by default) over every scene of the query, clouds masked per pixel
and cloudy dates marked.

Values come from ``Collection.profile`` (one pixel read per scene at a point; the mean of the
clear pixels inside a polygon, with their count and the cloudy fraction; no tiles), drawn as
a Bokeh chart (hover: date, value, cloud) and a table, downloadable as CSV. Every empty
answer says why: no scene at the place, only cloudy scenes, a band the collection lacks.

One rule for messages: an error is a ``state.notice`` only (the shell shows it once, as its
message bar and a toast); the tab's own alert explains a profile that ran but has no clear
value (a warning that is not a notice), so nothing is said twice.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.events import Tap
from bokeh.models import ColumnDataSource, HoverTool
from bokeh.plotting import figure

from components.map import MapView
from components.presets import default_band, presets_for
from components.profiledata import (
    chart_sources,
    csv_name,
    expression_names,
    feature_name,
    has_cloud_mask,
    known_names,
    polygon_csv_name,
    polygon_features,
    profile_query,
    why_empty,
)
from components.session import locked
from components.state import AppState
from engine.collection import Collection
from engine.errors import EOXError
from engine.timeseries import DEFAULT_EXPRESSION
from engine.timeseries.limits import check_polygon_size

#: Edits of the chart's and the map marker's models run with the document lock.
_MODELS = locked(lambda self: self._marker if self._marker.document else self._chart)

log = logging.getLogger(__name__)

#: Columns of the table and of the CSV file.
TABLE_COLUMNS = ["date", "value", "cloud", "scene_cloud", "id"]
#: A polygon profile's columns: plus the clear pixels averaged and the cloudy fraction.
POLYGON_COLUMNS = [*TABLE_COLUMNS, "count", "cloud_fraction"]
#: Time span of the chart when the profile has one date (ms: Bokeh's datetime unit).
DATE_SPAN_MS = 10 * 86_400_000
#: Shortest time span the chart zooms to (so its ticks are dates, never microseconds).
MIN_DATE_SPAN_MS = 2 * 86_400_000
#: What the polygon selector shows when no polygon or box is drawn.
NO_POLYGON = "Draw a polygon in the Draw tab first"

_EMPTY = {"x": [], "value": [], "date": [], "cloud": [], "scene_cloud": [], "id": [],
          "count": [], "cloud_fraction": []}
_POINT_TIPS = [("date", "@date"), ("value", "@value{0.0000}"), ("cloudy pixel", "@cloud"),
               ("scene cloud %", "@scene_cloud{0.0}"), ("scene", "@id")]
_POLYGON_TIPS = [("date", "@date"), ("mean value", "@value{0.0000}"),
                 ("clear pixels", "@count"), ("cloudy pixels", "@cloud_fraction{0.0%}"),
                 ("all cloudy", "@cloud"), ("scene cloud %", "@scene_cloud{0.0}"),
                 ("scene", "@id")]


class ProfilePanel(pn.viewable.Viewer):
    """Index profile at a clicked point or over a drawn polygon: chart, table, CSV download
    and a message."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                             doc="The MapView clicked on (optional).")
    active = param.Boolean(False, doc="True while the tab is shown.")
    picking = param.Boolean(False, doc="A click on the map makes a profile.")
    expression = param.String(DEFAULT_EXPRESSION, doc="Band math giving one value per date.")
    mask_clouds = param.Boolean(True, doc="Cloudy pixels give no value (they stay marked).")
    point = param.Tuple(default=None, length=2, allow_None=True, doc="Profiled lon, lat.")
    shape = param.Selector(default=None, objects=[], allow_None=True,
                           doc="Id of the drawn polygon/box picked (state.drawings).")
    area = param.Dict(default=None, allow_None=True,
                      doc="The profiled polygon: the drawn GeoJSON Feature (WGS84).")
    table = param.DataFrame(default=pd.DataFrame(columns=TABLE_COLUMNS),
                            doc="The profile, one row per scene.")
    message = param.String("", doc="Why the chart is empty, or what it shows.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._pick = pn.widgets.Toggle.from_param(
            self.param.picking, name="Click the map for a profile", button_type="primary")
        self._expr = pn.widgets.TextInput.from_param(
            self.param.expression, name="Index (band math)", placeholder=DEFAULT_EXPRESSION,
            sizing_mode="stretch_width")
        self._use_display = pn.widgets.Button(name="Use the displayed band math", width=210)
        self._use_display.on_click(lambda e: self._from_display())
        self._mask = pn.widgets.Checkbox.from_param(self.param.mask_clouds,
                                                    name="Mask cloudy pixels")
        self._shape = pn.widgets.Select(name="Drawn polygon", options={NO_POLYGON: None},
                                        disabled=True, sizing_mode="stretch_width",
                                        css_classes=["eox-profile-shape"])
        self._shape.param.watch(lambda e: setattr(self, "shape", e.new), "value")
        self._run_shape = pn.widgets.Button(name="Profile of a drawn polygon",
                                            button_type="primary", disabled=True, width=210)
        self._run_shape.on_click(lambda e: self.run_polygon())
        self._alert = pn.pane.Alert("", alert_type="info", visible=False,
                                    sizing_mode="stretch_width", name="profile-message")
        self._summary = pn.pane.Markdown("", margin=(0, 10), name="profile-summary")
        self._clear_src = ColumnDataSource(dict(_EMPTY, y=[]), name="eox-profile-clear-data")
        self._cloud_src = ColumnDataSource(dict(_EMPTY, y=[]), name="eox-profile-cloudy-data")
        self._nodata_src = ColumnDataSource(dict(_EMPTY, y=[]), name="eox-profile-nodata-data")
        self._chart = self._build_chart()
        self._chart_pane = pn.pane.Bokeh(self._chart, sizing_mode="stretch_width", height=300)
        # the chart is in the page only with a value to show (never an unexplained empty plot)
        self._chart_slot = pn.Column(sizing_mode="stretch_width")
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(columns=TABLE_COLUMNS), disabled=True, show_index=False,
            pagination="local", page_size=10, sizing_mode="stretch_width", visible=False,
            name="profile-table")
        self._csv = pn.widgets.FileDownload(callback=self._csv_file, filename="profile.csv",
                                            label="Download CSV", button_type="success",
                                            visible=False, sizing_mode="stretch_width")
        self._marker = ColumnDataSource({"x": [], "y": []}, name="eox-profile-point-data")
        if self.map is not None:
            fig = self.map.figure
            fig.scatter("x", "y", source=self._marker, marker="diamond", size=14,
                        color="#76ff03", line_color="#000000", name="eox-profile-point")
            fig.on_event(Tap, self._on_map_tap)
        self._collection_changed()
        self._drawings_changed()

    def _build_chart(self) -> Any:
        fig = figure(x_axis_type="datetime", height=300, sizing_mode="stretch_width",
                     tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above",
                     name="eox-profile-chart")
        fig.toolbar.logo = None
        # one date (or dates minutes apart) would span Bokeh's default 2 ms: ticks in
        # microseconds; show such a profile over days instead
        fig.x_range.default_span = DATE_SPAN_MS
        fig.x_range.min_interval = MIN_DATE_SPAN_MS
        line = fig.line("x", "y", source=self._clear_src, color="#1b7837", line_width=1.5)
        clear = fig.scatter("x", "y", source=self._clear_src, size=7, color="#1b7837",
                            legend_label="clear", name="eox-profile-clear")
        cloudy = fig.scatter("x", "y", source=self._cloud_src, size=9, marker="x",
                             color="#d6604d", line_width=2, legend_label="cloudy (masked)",
                             name="eox-profile-cloudy")
        nodata = fig.scatter("x", "y", source=self._nodata_src, size=7, marker="square",
                             color="#999999", legend_label="no data",
                             name="eox-profile-nodata")
        self._hover = HoverTool(renderers=[clear, cloudy, nodata], tooltips=_POINT_TIPS)
        fig.add_tools(self._hover)
        line.level = "underlay"
        fig.legend.location = "top_left"
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "9pt"
        fig.yaxis.axis_label = "value"
        return fig

    # -- inputs ----------------------------------------------------------------------------
    def _from_display(self) -> None:
        expr = self.state.expression.strip()
        if not (self.state.single_band and expr):
            self.state.notify("Profile: the display shows no band math (pick an index "
                              "preset or Band math in the Display tab)", "warning")
            return
        self.expression = expr

    @param.depends("state.collection", watch=True)
    def _collection_changed(self) -> None:
        if self.state.collection is None:
            return
        self._fit_expression()
        try:
            masked = has_cloud_mask(Collection(self.state.collection,
                                               catalog=self.state.backend.catalog))
        except EOXError as exc:
            self.state.fail(exc, "Profile")
            return
        self._mask.disabled = not masked
        self._mask.name = ("Mask cloudy pixels" if masked else
                           "Mask cloudy pixels (this collection has no cloud-mask band)")
        self.mask_clouds = masked

    def _fit_expression(self) -> None:
        """Without red and nir (no NDVI), the default index becomes what the collection can
        compute: the display's band math, else its first data band (not a mask)."""
        bands = list(self.state.bands)
        if not bands or "ndvi" in {p.key for p in presets_for(bands)}:
            if self.expression.strip() in ("", DEFAULT_EXPRESSION) or not bands:
                return
            if not expression_names(self.expression) <= known_names(bands):
                self.expression = DEFAULT_EXPRESSION
            return
        if self.expression.strip() and (expression_names(self.expression) or {""}) <= known_names(bands):
            return  # the user's expression fits this collection
        shown = self.state.expression.strip() if self.state.single_band else ""
        self.expression = shown or default_band(bands) or bands[0]

    @param.depends("picking", watch=True)
    def _picking_changed(self) -> None:
        if self.picking and self.state.pick != "off":
            self.state.pick = "off"  # one thing per click: the search point mode stops

    @param.depends("state.pick", watch=True)
    def _pick_changed(self) -> None:
        if self.state.pick != "off" and self.picking:
            self.picking = False

    @param.depends("state.drawings", watch=True)
    def _drawings_changed(self) -> None:
        options = polygon_features(self.state.drawings)
        current = self.shape
        self.param.shape.objects = list(options.values())
        if options:
            self._shape.param.update(options=options, disabled=False)
            self._shape.value = current if current in options.values() else list(
                options.values())[-1]
        else:
            self._shape.param.update(options={NO_POLYGON: None}, value=None, disabled=True)
        self.shape = self._shape.value
        self._run_shape.disabled = not options

    @param.depends("expression", "mask_clouds", watch=True)
    def _inputs_changed(self) -> None:
        if self.area is not None:
            self.run_polygon(self.area)
        elif self.point is not None:
            self.run(*self.point)

    def _on_map_tap(self, event: Any) -> None:
        if not self.picking or event.x is None or event.y is None:
            return
        from components.tilemath import to_lonlat

        lon, lat = to_lonlat(event.x, event.y)
        self.run(round(float(lon), 6), round(float(lat), 6))

    # -- the profile -----------------------------------------------------------------------
    def run(self, lon: float, lat: float) -> pd.DataFrame | None:
        """Profile the point; fill chart, table and message. None (with a message) on failure."""
        self.area = None
        self.point = (lon, lat)
        self._mark(lon, lat)
        where = f"{lon:.5f}, {lat:.5f}"
        try:
            df = profile_query(self.state).profile(lon, lat, self.expression.strip() or
                                                   DEFAULT_EXPRESSION,
                                                   mask_clouds=self.mask_clouds)
        except EOXError as exc:  # shown once: the shell's message bar and toast
            self._show(None, "", "info")
            self.state.fail(exc, f"No profile at {where}")
            return None
        self._show(df, why_empty(df, f"at {where} of", "cloudy", "without data here",
                                  "pick another point"))
        return df

    def run_polygon(self, feature: dict | str | None = None) -> pd.DataFrame | None:
        """Profile a drawn polygon (a feature of ``state.drawings``, its id, or the picked
        ``shape``): per scene the mean over its clear pixels. None (with a message) on
        failure."""
        if feature is None or isinstance(feature, str):
            fid = self.shape if feature is None else feature
            feature = next((f for f in self.state.drawings if f["id"] == fid), None)
            if feature is None:
                self.state.notify(f"Profile: {NO_POLYGON.lower()}, then pick it here",
                                  "warning")
                return None
        self.point = None
        self.area = feature
        self._mark(None, None)
        name = feature_name(feature)
        expression = self.expression.strip() or DEFAULT_EXPRESSION
        try:
            query = profile_query(self.state)
            # the service's limits: a huge polygon is refused before anything is read
            check_polygon_size(query, feature["geometry"], expression)
            df = query.profile(expression=expression, geometry=feature["geometry"],
                               mask_clouds=self.mask_clouds)
        except EOXError as exc:  # shown once: the shell's message bar and toast
            self._show(None, "", "info")
            self.state.fail(exc, f"No profile over {name}")
            return None
        self._show(df, why_empty(df, f"over {name} in", "all cloudy",
                                  "without clear data there", "draw another polygon"))
        return df

    @_MODELS
    def _show(self, df: pd.DataFrame | None, text: str, level: str = "warning") -> None:
        self._alert.param.update(object=text, alert_type=level, visible=bool(text))
        if df is None or df.empty:
            for src in (self._clear_src, self._cloud_src, self._nodata_src):
                src.data = dict(_EMPTY, y=[])
            self.table = pd.DataFrame(columns=self._columns())
            self._summary.object = ""
            self._chart_slot.objects = []
            for part in (self._table, self._csv):
                part.visible = False
            return
        clear, cloudy, nodata = chart_sources(df)
        self._clear_src.data, self._cloud_src.data, self._nodata_src.data = clear, cloudy, nodata
        columns = self._columns()
        self.table = df[columns].copy()
        self._table.value = self._table_view(df, columns)
        n_clear = len(clear["x"])
        expression = df.attrs.get("expression", self.expression)
        if self.area is not None:
            name = feature_name(self.area)
            self._hover.tooltips = _POLYGON_TIPS
            self._chart.title.text = f"{expression}, mean over {name}"
            self._chart.yaxis.axis_label = "mean value (clear pixels)"
            used = df.loc[df["value"].notna() & ~df["cloud"], "count"]
            self._summary.object = (
                f"Over {name}: **{n_clear} clear value(s)** of {len(df)} scene(s) (mean of "
                f"{int(used.min()) if len(used) else 0}-{int(used.max()) if len(used) else 0}"
                f" clear pixels); {len(cloudy['x'])} all cloudy, {len(nodata['x'])} without "
                "data" + ("" if df.attrs.get("mask_clouds") else " (clouds not masked)"))
            self._csv.filename = polygon_csv_name(self.state.collection, name)
        else:
            lon, lat = self.point  # type: ignore[misc]
            self._hover.tooltips = _POINT_TIPS
            self._chart.title.text = f"{expression} at {lon:.5f}, {lat:.5f}"
            self._chart.yaxis.axis_label = "value"
            self._summary.object = (f"At {lon:.5f}, {lat:.5f}: "
                                    f"**{n_clear} clear value(s)** of {len(df)} scene(s); "
                                    f"{len(cloudy['x'])} cloudy, {len(nodata['x'])} without "
                                    "data" + ("" if df.attrs.get("mask_clouds") else
                                              " (clouds not masked)"))
            self._csv.filename = csv_name(self.state.collection, lon, lat)
        self._chart_slot.objects = [self._chart_pane] if n_clear > 0 else []
        for part in (self._table, self._csv):
            part.visible = True

    def _columns(self) -> list[str]:
        return POLYGON_COLUMNS if self.area is not None else TABLE_COLUMNS

    @staticmethod
    def _table_view(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        out = df[columns].copy()
        out["date"] = out["date"].dt.strftime("%Y-%m-%d %H:%M")
        out["value"] = out["value"].round(4)
        if "cloud_fraction" in out:
            out["cloud_fraction"] = out["cloud_fraction"].round(4)
        return out

    @_MODELS
    def _mark(self, lon: float | None, lat: float | None) -> None:
        from components.tilemath import to_mercator

        if lon is None or lat is None:
            self._marker.data = {"x": [], "y": []}
            return
        x, y = to_mercator(np.array([lon]), np.array([lat]))
        self._marker.data = {"x": x, "y": y}

    def csv_text(self) -> str:
        """The profile as CSV (date ISO 8601 UTC, empty value where there is none)."""
        df = self.table.copy()
        if not df.empty:
            df["date"] = df["date"].map(lambda d: d.isoformat())
        return df.to_csv(index=False, lineterminator="\n", na_rep="")

    def _csv_file(self) -> io.StringIO:
        return io.StringIO(self.csv_text())

    @property
    def chart_shown(self) -> bool:
        """True when the chart is on the page."""
        return bool(self._chart_slot.objects)

    @property
    def chart_points(self) -> int:
        """Clear values drawn on the chart."""
        return len(self._clear_src.data["x"])

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Index profile** — the value at a point, or the mean over a "
                             "drawn polygon, over every scene of the search's collection and "
                             "dates", margin=(0, 10)),
            self._pick,
            pn.Row(self._shape, self._run_shape, sizing_mode="stretch_width"),
            pn.Row(self._expr, sizing_mode="stretch_width"),
            pn.Row(self._use_display, self._mask),
            self._alert,
            self._summary,
            self._chart_slot,
            self._csv,
            self._table,
            sizing_mode="stretch_width",
        )


__all__ = ["NO_POLYGON", "POLYGON_COLUMNS", "TABLE_COLUMNS", "ProfilePanel"]
