"""The data side of the Profile tab: its query, chart columns, file names and the words for
an empty profile (no Panel or Bokeh models here)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from components.state import AppState
from components.timeslider import utc_day
from engine.chain.bands import cloud_asset
from engine.chain.expression import parse_expression
from engine.collection import Collection
from engine.errors import EOXError
from engine.timeseries import clear_count


def profile_query(state: AppState) -> Collection:
    """The search form's collection, dates and cloud limit (the point replaces its area)."""
    coll = Collection(state.collection, catalog=state.backend.catalog)
    if state.start is not None or state.end is not None:
        coll = coll.filter_date(utc_day(state.start), utc_day(state.end))
    if state.max_cloud < 100:
        coll = coll.filter("eo:cloud_cover", "<=", float(state.max_cloud))
    return coll


def has_cloud_mask(coll: Collection) -> bool:
    """True when the collection's newest scene has a cloud-mask band (SCL, Fmask...)."""
    item = coll.sort("datetime", ascending=False).first()
    return item is not None and cloud_asset(item) is not None


def polygon_features(drawings: list[dict]) -> dict[str, str]:
    """Selector options of the drawn areas (polygons and boxes): name -> feature id."""
    return {f["properties"]["name"]: f["id"] for f in drawings
            if (f.get("properties") or {}).get("kind") in ("polygon", "box")}


def chart_sources(df: pd.DataFrame) -> tuple[dict, dict, dict]:
    """Chart data: clear values, cloudy dates (drawn on the bottom line), dates without data."""
    polygon = "count" in df.columns

    def cols(rows: pd.DataFrame, y: Any) -> dict:
        nan = np.full(len(rows), np.nan)
        return {"x": rows["date"].dt.tz_localize(None).to_numpy(),
                "value": rows["value"].to_numpy(),
                "y": np.full(len(rows), y, dtype=float) if np.isscalar(y) else y,
                "date": rows["date"].dt.strftime("%Y-%m-%d %H:%M").tolist(),
                "cloud": ["yes" if c else "no" for c in rows["cloud"]],
                "scene_cloud": rows["scene_cloud"].to_numpy(),
                "id": rows["id"].tolist(),
                "count": rows["count"].to_numpy(dtype=float) if polygon else nan,
                "cloud_fraction": rows["cloud_fraction"].to_numpy() if polygon else nan}

    clear = df[df["value"].notna() & ~df["cloud"]]
    cloudy = df[df["cloud"]]
    nodata = df[df["value"].isna() & ~df["cloud"]]
    low = float(clear["value"].min()) if len(clear) else 0.0
    span = float(clear["value"].max()) - low if len(clear) else 1.0
    floor = low - 0.08 * (span or 1.0)
    return cols(clear, clear["value"].to_numpy()), cols(cloudy, floor), cols(nodata, floor)


def csv_name(collection: str | None, lon: float, lat: float) -> str:
    """File name of a point profile's CSV."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", collection or "profile")
    return f"profile_{safe}_{lon:.5f}_{lat:.5f}.csv"


def why_empty(df: pd.DataFrame, where: str, cloudy: str, no_data: str, other: str) -> str:
    """Why a profile has no clear value (counts of cloudy and data-less scenes) and what to
    try; empty when it has one."""
    if clear_count(df) > 0:
        return ""
    n_cloud = int(df["cloud"].sum())
    n_fill = int((df["value"].isna() & ~df["cloud"]).sum())
    why = ", ".join(p for p in (f"{n_cloud} {cloudy}" if n_cloud else "",
                                f"{n_fill} {no_data}" if n_fill else "") if p)
    return (f"No clear value {where} {len(df)} scene(s): {why}. Widen the dates, raise the "
            f"cloud limit of the search or {other}.")


def expression_names(expression: str) -> set[str]:
    """Band names of ``expression`` in lower case (none when it does not parse: the profile
    itself then says what is wrong)."""
    try:
        return {n.lower() for n in parse_expression(expression).band_names}
    except EOXError:
        return set()


def known_names(bands: list[str]) -> set[str]:
    """Band names in lower case."""
    return {b.lower() for b in bands}


def polygon_csv_name(collection: str | None, name: str) -> str:
    """File name of a polygon profile's CSV."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{collection or 'profile'}_{name}")
    return f"profile_{safe}.csv"


def feature_name(feature: dict) -> str:
    """The name a drawn feature is listed by."""
    return str((feature.get("properties") or {}).get("name") or feature.get("id") or "polygon")


__all__ = ["chart_sources", "csv_name", "expression_names", "feature_name", "has_cloud_mask",
           "known_names", "polygon_csv_name", "polygon_features", "profile_query", "why_empty"]
