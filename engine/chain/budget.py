"""The cost budget of a chain, checked before it runs: a small request must not be able to
make the server allocate gigabytes or hold the render slots for seconds (issue #18).

What costs is known before reading a pixel: the number of steps, of expression parts
(each an output band) and terms (each a numpy operation per pixel), the bands read times
the dates stacked, and from those the bytes one tile or image may allocate. The static
part (:func:`check_chain_cost`) runs when a chain is parsed or extended, so the service,
the dashboard and batch runs all get it; :func:`check_read_cost` runs once the renderer
knows how many dates and pixels a request reads. Both raise :class:`ChainTooCostly`,
whose message names the limit, the value and the setting that raises it.

The budget is process-wide (like the sandbox executor): ``app`` sets it from Settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ChainError

if TYPE_CHECKING:
    from engine.chain.model import Chain

#: Bytes allocated per value (pixel x band x date) while a tile is read and the steps run:
#: float32 data and a mask byte, input and output of a step alive together, the mosaic and
#: the scene being read. Measured (issue #18): 2,000 expression parts on a 256 px tile
#: added 3.2 GB (24 B/value); 256 bands x 10 dates added 1.7 GB (10 B/value).
BYTES_PER_VALUE = 24


class ChainTooCostly(ChainError):
    """A chain (or one request of it) exceeds a limit of the cost budget."""

    def __init__(self, what: str, value: int, limit: int, setting: str, hint: str) -> None:
        super().__init__(f"{what}: {value:,} is over the limit of {limit:,} "
                         f"({setting}); {hint}")
        self.limit_name = setting
        self.value = value
        self.limit = limit


@dataclass(frozen=True)
class ChainBudget:
    """Limits on what one chain may cost; each names the setting (``EOX_...``) that sets it.

    Args:
        max_steps: steps in a chain.
        max_expression_parts: ``;``-separated parts of all expression steps (output bands).
        max_expression_terms: terms (syntax nodes) of all expressions together; each is one
            numpy operation over every pixel.
        max_bands_x_dates: bands read x dates stacked (1 without ``times=True``).
        max_tile_mb: estimated MiB one tile, image or statistics read may allocate.
    """

    max_steps: int = 32
    max_expression_parts: int = 32
    max_expression_terms: int = 2000
    max_bands_x_dates: int = 512
    max_tile_mb: int = 256


_budget = ChainBudget()


def set_budget(budget: ChainBudget) -> None:
    """Use ``budget`` for every chain of this process from now on."""
    global _budget
    _budget = budget


def get_budget() -> ChainBudget:
    """The budget chains of this process are checked against."""
    return _budget


def check_steps(count: int) -> None:
    """ChainTooCostly when a chain has more steps than the budget (before parsing them)."""
    limit = _budget.max_steps
    if count > limit:
        raise ChainTooCostly("chain steps", count, limit, "EOX_CHAIN_MAX_STEPS",
                             "combine steps or split the work into several chains")


def check_expression_parts(count: int) -> None:
    """ChainTooCostly when an expression has more ``;`` parts than the budget."""
    limit = _budget.max_expression_parts
    if count > limit:
        raise ChainTooCostly("expression parts (output bands)", count, limit,
                             "EOX_CHAIN_MAX_EXPRESSION_PARTS",
                             "compute fewer output bands per chain")


def _widest(chain: Chain) -> int:
    """Most bands the raster has at any point of the chain (read bands, cloud band)."""
    names: list[str] | None = list(chain.read_bands())
    widest = len(names) + (1 if chain.cloud_masks() else 0)
    for step in chain.steps:
        if names is None:
            break
        names = step.band_names_out(names)
        if names is not None:
            widest = max(widest, len(names))
    return widest


def check_chain_cost(chain: Chain) -> None:
    """The checks that need no data: steps, expression parts and terms, bands read."""
    from engine.chain.expression import parse_expression
    from engine.chain.steps import Expression

    check_steps(len(chain.steps))
    parts = terms = 0
    texts = [p for s in chain.steps if isinstance(s, Expression) for p in s.parts()]
    if chain.source.mosaic_expression:
        texts.append(chain.source.mosaic_expression)
    for text in texts:
        parts += 1
        terms += parse_expression(text).terms
    check_expression_parts(parts)
    if terms > _budget.max_expression_terms:
        raise ChainTooCostly("expression terms", terms, _budget.max_expression_terms,
                             "EOX_CHAIN_MAX_EXPRESSION_TERMS", "simplify the band math")
    if chain.source.bands is not None or chain.steps:
        try:
            read = len(chain.read_bands())
        except ChainError:
            return  # a chain that reads nothing is refused where it is rendered
        if read > _budget.max_bands_x_dates:
            raise ChainTooCostly("bands read", read, _budget.max_bands_x_dates,
                                 "EOX_CHAIN_MAX_BANDS_X_DATES", "read fewer bands")


def work_per_pixel(chain: Chain, *, dates: int = 1) -> int:
    """About how many array operations a chain does per pixel: each band read and each
    step once per date, and each expression term once per date (for scheduling: a tile
    whose work is far above a plain one's can be made to wait in its own lane)."""
    from engine.chain.expression import parse_expression
    from engine.chain.steps import Expression

    try:
        read = len(chain.read_bands())
    except ChainError:
        read = 1
    terms = sum(parse_expression(p).terms for s in chain.steps if isinstance(s, Expression)
                for p in s.parts())
    return max(1, dates) * (read + len(chain.steps) + terms)


def estimate_bytes(chain: Chain, *, dates: int, pixels: int) -> int:
    """Bytes one read of ``pixels`` pixels over ``dates`` dates may allocate."""
    return _widest(chain) * max(1, dates) * pixels * BYTES_PER_VALUE


def check_read_cost(chain: Chain, *, dates: int, pixels: int) -> None:
    """The checks once a request's dates and pixels are known (before reading them)."""
    bands = len(chain.read_bands()) + (1 if chain.cloud_masks() else 0)
    if bands * max(1, dates) > _budget.max_bands_x_dates:
        raise ChainTooCostly(f"bands x dates ({bands} x {dates})", bands * dates,
                             _budget.max_bands_x_dates, "EOX_CHAIN_MAX_BANDS_X_DATES",
                             "narrow the dates, add filters or read fewer bands")
    need = estimate_bytes(chain, dates=dates, pixels=pixels)
    limit = _budget.max_tile_mb * 2**20
    if need > limit:
        raise ChainTooCostly(f"estimated memory of one read ({pixels:,} pixels x {dates} "
                             f"date(s) x {_widest(chain)} bands), MiB", need // 2**20,
                             _budget.max_tile_mb, "EOX_TILE_MAX_MB",
                             "use smaller tiles or areas, fewer dates or fewer bands")


__all__ = ["BYTES_PER_VALUE", "ChainBudget", "ChainTooCostly", "check_chain_cost",
           "check_expression_parts", "check_read_cost", "check_steps", "estimate_bytes",
           "get_budget", "set_budget", "work_per_pixel"]
