"""A date the user types ("2010", "2010-06", "2010-06-15", an ISO datetime) or picks.

The typed text is read by the engine's own date rules (``engine.timeutil.date_bound``): a
year or month typed as the start of a search means its first day, as its end the last day
("2010" to "2010" is all of 2010). The calendar next to it is limited to the collection's
dates, so it opens on them rather than on today.
"""

from __future__ import annotations

from datetime import UTC, date
from typing import Any

import panel as pn
import param

from engine.errors import InvalidQuery
from engine.timeutil import date_bound

PLACEHOLDER = "2010, 2010-06 or 2010-06-15"


def parse_day(text: str, *, end: bool) -> date | None:
    """The day a typed date means as a start (its first day) or an end (its last day);
    None for an empty text. Raises InvalidQuery naming the accepted forms."""
    text = (text or "").strip()
    if not text:
        return None
    bound = date_bound(text, end=end)
    return bound.astimezone(UTC).date() if bound is not None else None


class DateField(pn.viewable.Viewer):
    """One bound of a date range, bound to a ``param.Date`` of ``owner``.

    Params:
        owner: the object holding the date (an ``AppState``).
        field: name of its ``param.Date`` parameter ("start" or "end").
        end: True when the field is the end of the range (a year means its last day).
        span: first and last day the calendar offers (the collection's), or None.
    """

    owner = param.ClassSelector(class_=param.Parameterized,
                                doc="Object holding the date parameter.")
    field = param.String(doc="Name of the owner's date parameter.")
    end = param.Boolean(False, doc="The field is the end of a range.")
    label = param.String("From", doc="Label shown above the text box.")
    span = param.Tuple(default=None, length=2, allow_None=True,
                       doc="First and last day the calendar offers.")
    error = param.String("", doc="Why the typed text is not a date (empty when it is).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        value = getattr(self.owner, self.field)
        self._text = pn.widgets.TextInput(name="or type", placeholder=PLACEHOLDER,
                                          value=value.isoformat() if value else "",
                                          sizing_mode="stretch_width", min_width=110)
        self._pick = pn.widgets.DatePicker(name=self.label, value=value, width=125,
                                           description="Pick a day on a calendar")
        self._text.param.watch(self._typed, "value")
        self._pick.param.watch(self._picked, "value")
        self.owner.param.watch(self._owner_changed, self.field)
        self._span_changed()

    # The widgets show the owner's date; their watchers set it, and the same date set again
    # changes nothing, so the widgets' updates from the owner do not echo back.
    def _typed(self, event: param.parameterized.Event) -> None:
        try:
            day = parse_day(event.new, end=self.end)
        except InvalidQuery as exc:
            self.error = f"{self.label}: {exc}"
            return
        self.error = ""
        setattr(self.owner, self.field, day)

    def _picked(self, event: param.parameterized.Event) -> None:
        if event.new is None and not self._within(event.old):
            return  # the calendar let go of a day outside its new span: the date stays
        self.error = ""
        setattr(self.owner, self.field, event.new)

    def _owner_changed(self, event: param.parameterized.Event) -> None:
        day = event.new
        typed = self._text.value.strip()
        try:
            same = parse_day(typed, end=self.end) == day
        except InvalidQuery:
            same = False
        if not same:  # keep "2010" as typed while it still means this day
            self._text.value = day.isoformat() if day else ""
        if self._within(day):
            self._pick.value = day

    @param.depends("span", watch=True)
    def _span_changed(self) -> None:
        lo, hi = self.span or (None, None)
        day = self._pick.value
        if day is not None and not self._within(day):
            self._pick.value = None
        self._pick.param.update(start=lo, end=hi)

    def _within(self, day: date | None) -> bool:
        if day is None or self.span is None:
            return True
        return self.span[0] <= day <= self.span[1]

    def __panel__(self) -> pn.viewable.Viewable:
        # the picker on the left: its calendar opens rightwards within the sidebar
        return pn.Row(self._pick, self._text, sizing_mode="stretch_width", margin=0)
