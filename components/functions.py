"""The Functions tab: a user function's code editor, run in the server's sandbox.

Pick a shipped example (``engine.algorithms``) or write a function, choose its input bands,
arguments and how its output is displayed, ``Test`` it on simulated input of the right shape
(in the sandbox, off the UI thread), then ``Apply``: the chain (selected scenes -> bands ->
the function -> display steps) is registered and drawn on the map as its own layer. The code
is parsed here, never executed in this process.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
from typing import Any

import matplotlib
import numpy as np
import panel as pn
import param

from components.functionspec import (
    DISPLAYS,
    EXAMPLES,
    LAYER,
    OWN,
    TEMPLATE,
    Example,
    TestResult,
    defined_functions,
    missing_bands,
    offered_examples,
    parse_kwargs,
)
from components.state import AppState
from components.tilemath import visible_tiles
from engine import algorithms
from engine.chain import Chain, process_multi
from engine.collection import Collection
from engine.errors import EOXError, InvalidInput, SandboxError

log = logging.getLogger(__name__)

class FunctionPanel(pn.viewable.Viewer):
    """Editor, example picker, inputs, display options, Test and Apply for one session."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")

    example = param.Selector(objects=[OWN, *algorithms.list()], default=OWN,
                             doc="A shipped algorithm loaded into the editor (only those "
                                 "whose bands the collection has are offered).")
    function = param.String("", doc="Name of the function called (defined in the code).")
    bands = param.List(default=[], item_type=str, doc="Input bands, in the order the "
                       "function expects them.")
    times = param.Boolean(False, doc="Give the function a time stack (dates, bands, y, x) "
                          "of the selected scenes instead of their mosaic.")
    arguments = param.String("", doc="Keyword arguments as a JSON object.")
    display = param.Selector(objects=list(DISPLAYS), default="Mask in one colour")
    vmin = param.Number(0.0, doc="Output value drawn darkest / transparent.")
    vmax = param.Number(1.0, doc="Output value drawn brightest / opaque.")
    colour = param.String("Lime", doc="CSS colour of a mask.")
    colormap = param.String("viridis", doc="Colormap of a one-band output.")

    result = param.ClassSelector(class_=TestResult, default=None, allow_None=True,
                                 doc="The last Test (or Apply) outcome.")
    chain_id = param.String("", doc="Id of the chain last applied.")
    layer_url = param.String("", doc="XYZ template of the applied function's layer.")
    busy = param.Boolean(False, doc="A test runs in the background.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        s = self.state
        enabled = s.backend.functions_enabled
        self._editor = pn.widgets.CodeEditor(value=s.function_code or TEMPLATE,
                                             language="python", height=220,
                                             sizing_mode="stretch_width", name="code")
        self._editor.param.watch(self._code_changed, "value")
        self._example = pn.widgets.Select.from_param(self.param.example, name="Example",
                                                     width=170)
        self._function = pn.widgets.TextInput.from_param(self.param.function, name="Function",
                                                         width=170)
        self._bands = pn.widgets.MultiChoice.from_param(
            self.param.bands, name="Input bands (in order)", options=list(s.bands),
            sizing_mode="stretch_width")
        self._times = pn.widgets.Checkbox.from_param(self.param.times,
                                                     name="Time stack of the selected scenes")
        self._arguments = pn.widgets.TextInput.from_param(
            self.param.arguments, name="Arguments (JSON)", placeholder='{"threshold": 1500}',
            sizing_mode="stretch_width")
        self._display = pn.widgets.Select.from_param(self.param.display, name="Display",
                                                     width=170)
        self._vmin = pn.widgets.FloatInput.from_param(self.param.vmin, name="Min", width=90)
        self._vmax = pn.widgets.FloatInput.from_param(self.param.vmax, name="Max", width=90)
        self._colour = pn.widgets.TextInput.from_param(self.param.colour, name="Colour",
                                                       width=120)
        self._colormap = pn.widgets.Select.from_param(
            self.param.colormap, name="Colormap", width=120,
            options=sorted(matplotlib.colormaps, key=str.lower))
        self._test = pn.widgets.Button(name="Test", button_type="primary", width=90,
                                       disabled=not enabled,
                                       description="Run the function in the sandbox on a "
                                       "simulated tile of the input's shape")
        self._apply = pn.widgets.Button(name="Apply", button_type="success", width=90,
                                        disabled=not enabled,
                                        description="Draw the function's output of the "
                                        "selected scenes on the map")
        self._test.on_click(self._on_test)
        self._apply.on_click(self._on_apply)
        self._status = pn.pane.Alert("", alert_type="info", visible=False,
                                     sizing_mode="stretch_width", name="function-status")
        self._not_offered = pn.pane.Markdown("", margin=(0, 10), name="examples-not-offered")
        note = ("Functions run in the server's sandbox (numpy, scipy.ndimage; no files, no "
                "network, time and memory limits)." if enabled else
                "Server-side functions are **not enabled** on this server: you can prepare "
                "code here, but it cannot be tested or applied.")
        self._note = pn.pane.Alert(note, alert_type="info" if enabled else "warning",
                                   sizing_mode="stretch_width")
        self._code_changed()
        self._display_changed()
        self._bands_changed()

    # -- inputs ----------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """The code in the editor."""
        return self._editor.value or ""

    @source.setter
    def source(self, text: str) -> None:
        self._editor.value = text

    def _code_changed(self, event: Any = None) -> None:
        self.state.function_code = self.source
        names = defined_functions(self.source)
        if names and self.function not in names:
            self.function = names[-1]

    @param.depends("example", watch=True)
    def _example_chosen(self) -> None:
        if self.example not in EXAMPLES and self.example not in algorithms.list():
            return
        source, name, defaults = algorithms.load(self.example)
        ex = EXAMPLES.get(self.example, Example(()))
        self.source = source
        self.param.update(
            function=name, bands=self._available(ex.bands), times=ex.times,
            arguments=json.dumps({**defaults, **ex.kwargs}),
            display=next(k for k, v in DISPLAYS.items() if v == ex.display),
            vmin=ex.vmin, vmax=ex.vmax, colour=ex.colour, colormap=ex.colormap)

    def _available(self, wanted: tuple[str, ...]) -> list[str]:
        """``wanted`` bands as the collection spells them."""
        spelled = {b.lower(): b for b in self.state.bands}
        return [spelled[b.lower()] for b in wanted if b.lower() in spelled]

    @param.depends("state.bands", watch=True)
    def _bands_changed(self) -> None:
        have = list(self.state.bands)
        self._bands.options = have
        self.bands = [b for b in self.bands if b in have]
        offered = offered_examples(have)
        self.param.example.objects = [*offered]
        if self.example not in offered:
            self.example = OWN
        lacking = {name: missing_bands(name, have) for name in algorithms.list()
                   if name not in offered}
        self._not_offered.object = "Not offered for this collection: " + "; ".join(
            f"{name} (needs {', '.join(bands)})" for name, bands in lacking.items()
        ) if lacking else ""

    @param.depends("display", watch=True)
    def _display_changed(self) -> None:
        kind = DISPLAYS[self.display]
        self._colour.visible = kind == "colour"
        self._colormap.visible = kind == "colormap"

    def _inputs(self) -> tuple[str, str, dict[str, Any]]:
        """(source, function, kwargs) checked enough to call; InvalidInput otherwise."""
        if not self.state.backend.functions_enabled:
            raise SandboxError("server-side functions are not enabled on this server")
        name = self.function.strip()
        names = defined_functions(self.source)
        if not names:
            try:
                ast.parse(self.source)
            except SyntaxError as exc:
                raise SandboxError(f"line {exc.lineno}: {exc.msg}", lineno=exc.lineno,
                                   reason=str(exc.msg)) from None
            raise InvalidInput("the code defines no function (def name(img): ...)")
        if name not in names:
            raise InvalidInput(f"function: the code defines no function {name!r}",
                               choices=names)
        if not self.bands:
            raise InvalidInput("pick the input bands, in the order the function expects")
        return self.source, name, parse_kwargs(self.arguments)

    def _shape(self) -> tuple[int, ...]:
        if self.times:
            return (max(2, len(self.state.selected)), len(self.bands), 256, 256)
        return (len(self.bands), 256, 256)

    # -- Test ------------------------------------------------------------------------------
    def run_test(self) -> TestResult:
        """Run the function in the sandbox on simulated input of the chosen shape (what
        ``engine.sandbox.test_execute``/``test_execute_times`` do for a Python function).
        Blocking and widget-free, so it can run in a worker thread."""
        from engine.sandbox import default_pool, simulated_input

        try:
            source, name, kwargs = self._inputs()
            shape = self._shape()
            out = default_pool().run(source, name, simulated_input(shape), kwargs=kwargs)
        except EOXError as exc:
            return TestResult(False, self._explain(str(exc)), getattr(exc, "lineno", None))
        expect = "(bands, y, x) or (y, x)"
        if self.times and out.ndim == 4:
            return TestResult(False, f"{name}() returned a time stack {out.shape}: reduce it "
                              f"over the dates to {expect}")
        bands = 1 if out.ndim == 2 else out.shape[0]
        if DISPLAYS[self.display] == "rgb" and bands != 3:
            return TestResult(False, f"{name}() returned {bands} band(s); the RGB display "
                              "needs 3 (or pick a one-band display)")
        finite = out[np.isfinite(out)] if out.dtype.kind == "f" else out
        span = (f", values {finite.min():g}..{finite.max():g}" if finite.size else "")
        return TestResult(True, f"Test OK: {name}() on a simulated {shape} tile returned "
                          f"{out.shape} {out.dtype}{span}.")

    def _explain(self, message: str) -> str:
        """A band index past the input's end is the usual mismatch: say so in plain words."""
        if "IndexError" in message or "out of bounds for axis" in message:
            return (f"the function reads more input bands than the {len(self.bands)} "
                    f"chosen ({', '.join(self.bands)}): pick the bands it expects, in "
                    f"order, in 'Input bands'. ({message})")
        return message

    def test(self) -> bool:
        """Test now (blocking) and show the outcome; True when it passed."""
        return self._show(self.run_test(), "Test")

    async def _on_test(self, event: Any = None) -> None:
        self._begin("Testing in the sandbox…")
        try:
            result = await asyncio.to_thread(self.run_test)
        finally:
            self._end()
        self._show(result, "Test")

    # -- Apply -----------------------------------------------------------------------------
    def build_chain(self) -> Chain:
        """Selected scenes -> input bands -> the function -> the display steps."""
        source, name, kwargs = self._inputs()
        s = self.state
        if not s.selected:
            raise InvalidInput("select at least one scene in the results")
        coll = Collection(s.collection, catalog=s.backend.catalog).ids(s.selected)
        chain = process_multi(coll, list(self.bands), times=self.times,
                              mosaic="first" if self.times else "latest")
        chain = chain.execute(name, source=source, **kwargs)
        kind = DISPLAYS[self.display]
        if kind == "rgb":
            return chain.scale(self.vmin, self.vmax)
        chain = chain.band(0).scale(self.vmin, self.vmax)
        if kind == "colour":
            return chain.color_custom([self.colour])
        return chain.colormap(self.colormap)

    def register(self) -> str:
        """Register the chain (not drawn yet); returns its tile URL template."""
        chain = self.build_chain()
        url = self.state.backend.register(chain)
        self.param.update(chain_id=chain.id, layer_url=url)
        return url

    def draw(self) -> None:
        """Show the applied chain on the map as the layer ``LAYER`` (the map follows
        ``state.function_layer``, which the share link carries too; this edits Bokeh
        models: call it with the document lock, i.e. not after an ``await``)."""
        if self.chain_id:
            self.state.function_layer = self.chain_id

    def check_tile(self) -> TestResult:
        """Render one visible tile of the applied chain (blocking): the function on real
        pixels, so an error shows here rather than as blank tiles."""
        s = self.state
        if not self.chain_id:
            return TestResult(False, "nothing applied yet")
        boxes = [s.bounds[i] for i in s.selected if i in s.bounds]
        view = s.viewport or (boxes[0] if boxes else None)
        tiles = visible_tiles(view, s.map_size, within=boxes or None) if view else []
        if not tiles:
            return TestResult(True, "Applied: zoom to the selected scenes to see it.")
        z, x, y = tiles[0]
        try:
            img = s.backend.renderer.tile(s.backend.chain_store.get(self.chain_id), z, x, y)
        except EOXError as exc:
            return TestResult(False, self._explain(str(exc)), getattr(exc, "lineno", None))
        got = "" if img is None else f" (tile {z}/{x}/{y}: {int((~img.array.mask).sum())} " \
                                     "pixels with data)"
        return TestResult(True, f"Applied {self.function}() as the layer '{LAYER}'{got}.")

    def apply(self) -> bool:
        """Test, register, draw and check one tile (blocking); True when all went well."""
        if not self.test():
            return False
        try:
            self.register()
        except EOXError as exc:
            return self._show(TestResult(False, str(exc), getattr(exc, "lineno", None)),
                              "Apply")
        result = self.check_tile()
        if result.ok:
            self.draw()
        return self._show(result, "Apply")

    async def _on_apply(self, event: Any = None) -> None:
        self._begin("Testing, then applying…")
        action = "Test"
        try:
            result = await asyncio.to_thread(self.run_test)
            if result.ok:
                action = "Apply"
                try:
                    self.register()
                except EOXError as exc:
                    result = TestResult(False, str(exc), getattr(exc, "lineno", None))
                else:
                    result = await asyncio.to_thread(self.check_tile)
        finally:
            self._end()
        if result.ok and action == "Apply":
            # Bokeh models may only change under the document lock: on the next tick.
            pn.state.execute(self.draw, schedule=True)
        self._show(result, action)

    # -- outcome ---------------------------------------------------------------------------
    def _begin(self, text: str) -> None:
        self.busy = True
        self._test.disabled = self._apply.disabled = True
        self._status.param.update(object=text, alert_type="info", visible=True)

    def _end(self) -> None:
        self.busy = False
        enabled = self.state.backend.functions_enabled
        self._test.disabled = self._apply.disabled = not enabled

    def _show(self, result: TestResult, action: str) -> bool:
        """Inline message, editor annotation at the user's line, and a notification."""
        self.result = result
        self._status.param.update(object=result.message, visible=True,
                                  alert_type="success" if result.ok else "danger")
        self._editor.annotations = [] if result.ok or result.lineno is None else [
            {"row": result.lineno - 1, "column": 0, "text": result.message, "type": "error"}]
        if result.ok:
            self.state.notify(result.message, "success")
        else:
            log.info("user function %s failed: %s", action, result.message)
            self.state.notify(f"Function {action.lower()}: {result.message}", "error")
        return result.ok

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            self._note,
            pn.Row(self._example, self._function),
            self._not_offered,
            self._editor,
            self._bands,
            self._times,
            self._arguments,
            pn.Row(self._display, self._colour, self._colormap),
            pn.Row(self._vmin, self._vmax),
            pn.Row(self._test, self._apply),
            self._status,
            sizing_mode="stretch_width",
        )
