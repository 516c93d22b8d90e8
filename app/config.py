"""Campaign files and scripted-launch options: settings plus the view sessions open on.

A campaign TOML holds any :class:`~app.settings.Settings` field and the view keys
(``center``, ``zoom``, ``place``, ``title``, ``[[layers]]``)::

    catalog = ".cache/demo/catalog.sqlite"
    port = 5006
    center = [11.57, 48.14]
    zoom = 9

    [[layers]]
    name = "NDVI"
    chain = "ndvi.json"          # a chain JSON file (relative to this file) or an inline table

``eoexplorer serve --config campaign.toml`` and ``app.launch(...)`` validate the same way:
an unknown key or a bad value is an ``InvalidInput`` naming the key and the valid keys.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.settings import Settings
from engine.chain import Chain
from engine.errors import EOXError, InvalidInput

#: Keys describing what sessions show first (the rest of a campaign are Settings fields).
VIEW_KEYS: tuple[str, ...] = ("center", "zoom", "place", "title", "layers")


class Layer(BaseModel):
    """A named chain shown as its own map layer."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    name: str = Field(min_length=1, max_length=200)
    chain: Chain


class View(BaseModel):
    """What a new session shows: layers, then centre + zoom (or a place, or the layers)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    center: tuple[float, float] | None = Field(
        None, description="lon, lat the map opens on (with zoom).")
    zoom: float | None = Field(None, ge=0, le=22, description="Web Mercator zoom level.")
    place: str | None = Field(None, description="A gazetteer place the map opens on.")
    title: str | None = Field(None, description="Page title.")
    layers: tuple[Layer, ...] = Field((), description="Chains shown as named layers.")

    @field_validator("center")
    @classmethod
    def _lonlat(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (-180 <= v[0] <= 180 and -85 <= v[1] <= 85):
            raise ValueError(f"center must be lon, lat within -180..180, -85..85, got {v}")
        return v

    @property
    def is_empty(self) -> bool:
        """True when the view asks for nothing (sessions open the newest scene)."""
        return self.center is None and self.place is None and not self.layers


@dataclass(frozen=True)
class Campaign:
    """Validated settings and view, from a TOML file or ``launch()`` keywords."""

    settings: Settings
    view: View = field(default_factory=View)


def valid_keys() -> list[str]:
    """Every key a campaign file or ``launch()`` accepts."""
    return sorted([*Settings.model_fields, *VIEW_KEYS])


def _unknown(keys: Iterable[str], source: str) -> None:
    bad = [k for k in keys if k not in Settings.model_fields and k not in VIEW_KEYS]
    if bad:
        hints = []
        for key in bad:
            close = difflib.get_close_matches(key, valid_keys(), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InvalidInput(f"{source}: unknown key{'s' if len(bad) > 1 else ''} "
                           f"{', '.join(hints)}", choices=valid_keys())


def _invalid(exc: ValidationError, source: str, prefix: str = "") -> InvalidInput:
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err.get("loc", ()))
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
    return InvalidInput(f"{source}: invalid value for {loc!r}: {err['msg']}{shown}",
                        choices=valid_keys())


def settings_from(values: Mapping[str, Any], *, source: str = "settings") -> Settings:
    """Settings (environment first, then ``values``), or InvalidInput naming the bad key."""
    _unknown(values, source)
    try:
        return Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})
    except ValidationError as exc:
        raise _invalid(exc, source) from None


def _chain(value: Any, *, where: str, base_dir: Path | None) -> Chain:
    """A chain from a Chain, a dict (chain JSON), JSON text, or a .json file path."""
    if isinstance(value, Chain):
        return value
    try:
        if isinstance(value, Mapping):
            return Chain.from_json(dict(value))
        if isinstance(value, str | Path):
            text = str(value).strip()
            if text.startswith("{"):
                return Chain.from_json(text)
            path = Path(text).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            try:
                return Chain.from_json(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise InvalidInput(f"cannot read the chain file {path}: {exc.strerror}") \
                    from None
    except EOXError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    raise InvalidInput(f"{where}: a chain is a Chain, a chain JSON table/text or the path of "
                       f"a chain JSON file, not {type(value).__name__}")


def _layers(value: Any, *, source: str, base_dir: Path | None) -> list[Layer]:
    """Layers from ``[chain, (name, chain), {"name", "chain"}, ...]`` or ``{name: chain}``."""
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, Chain | str | bytes) or not isinstance(value, Iterable):
        raise InvalidInput(f"{source}: 'layers' must be a list of chains, (name, chain) pairs "
                           "or tables with name and chain", choices=valid_keys())
    out: list[Layer] = []
    for i, item in enumerate(value):
        where = f"{source}: layers[{i}]"
        if isinstance(item, Chain):
            name, chain = None, item
        elif isinstance(item, Mapping):
            extra = set(item) - {"name", "chain"}
            if extra or "chain" not in item:
                raise InvalidInput(f"{where}: a layer table has the keys name and chain"
                                   + (f"; unknown {sorted(extra)}" if extra else ""),
                                   choices=("name", "chain"))
            name, chain = item.get("name"), item["chain"]
        elif isinstance(item, tuple | list) and len(item) == 2:
            name, chain = item
        else:
            raise InvalidInput(f"{where}: expected a chain, a (name, chain) pair or a table "
                               "with name and chain")
        chain = _chain(chain, where=where, base_dir=base_dir)
        if name is not None and not isinstance(name, str):
            raise InvalidInput(f"{where}: the layer name must be a string, got {name!r}")
        out.append(Layer(name=name or f"layer {i + 1}: {chain.source.collection}",
                         chain=chain))
    return out


def campaign_from(values: Mapping[str, Any], *, source: str = "launch()",
                  base_dir: Path | None = None) -> Campaign:
    """Validate settings and view keys together (one message naming the first bad key).

    Args:
        values: Settings fields and view keys (center, zoom, place, title, layers).
        source: named in error messages (a file name, or "launch()").
        base_dir: where relative chain file paths are resolved.
    """
    _unknown(values, source)
    if base_dir is not None:  # paths in a file are relative to the file
        values = {**values, **{k: str(base_dir / v) for k, v in values.items()
                               if k in ("catalog", "data_dir") and isinstance(v, str)
                               and not v.startswith(("http://", "https://"))
                               and not Path(v).expanduser().is_absolute()}}
    settings = settings_from({k: v for k, v in values.items() if k not in VIEW_KEYS},
                             source=source)
    view_values = {k: v for k, v in values.items() if k in VIEW_KEYS and v is not None}
    if "layers" in view_values:
        view_values["layers"] = tuple(_layers(view_values["layers"], source=source,
                                              base_dir=base_dir))
    try:
        view = View(**view_values)
    except ValidationError as exc:
        raise _invalid(exc, source) from None
    if (view.center is None) != (view.zoom is None) and view.place is None:
        raise InvalidInput(f"{source}: give 'center' and 'zoom' together", choices=valid_keys())
    return Campaign(settings=settings, view=view)


def load_campaign(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> Campaign:
    """Read a campaign TOML file; ``overrides`` (e.g. command-line options) win over it."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InvalidInput(f"cannot read the campaign file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path.name}: not valid TOML: {exc}") from None
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return campaign_from(data, source=path.name, base_dir=path.parent)


__all__ = ["VIEW_KEYS", "Campaign", "Layer", "View", "campaign_from", "load_campaign",
           "settings_from", "valid_keys"]
