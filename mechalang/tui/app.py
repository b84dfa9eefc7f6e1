"""The `mecha tui` application: the merge form (page 1), block weights (page 2), the recipe (page 3),
and a run panel fed by `pipeline.execute`'s progress callback from a worker thread.

Keys: Tab/Shift-Tab or Ctrl-N/Ctrl-P move between fields; F2/F3/F4 show the pages; Ctrl-S saves the
recipe as `<name>.mecha` next to the output; Ctrl-R (or the OK button) merges; Ctrl-C cancels a
running merge (nothing is written), or quits when none runs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, WorkerState

from ..commands.catalog import ModelEntry, models_folder, scan
from ..commands.quick_form import (
    DTYPES,
    NAME_RULE,
    NAME_RULE_TEXT,
    CheckResult,
    FormState,
    check_form,
    command_line,
    hyper_description,
    method_specs,
    recipe_text,
)
from ..units import format_bytes

EXIT_AFTER_MOUNT = "MECHA_TUI_EXIT_AFTER_MOUNT"  # startup benchmark: exit as soon as the form is mounted
PRESETS = ("GRAD_V", "GRAD_A", "FLAT_25", "FLAT_75", "WRAP08", "WRAP12", "WRAP14", "WRAP16", "MID12_50", "OUT07",
           "OUT12", "OUT12_5", "RING08_SOFT", "RING08_5", "RING10_5", "RING10_3", "SMOOTHSTEP", "REVERSE_SMOOTHSTEP",
           "SMOOTHSTEP_2", "R_SMOOTHSTEP_2", "SMOOTHSTEP_3", "R_SMOOTHSTEP_3", "SMOOTHSTEP_4", "R_SMOOTHSTEP_4",
           "SMOOTHSTEP_DIV_2", "R_SMOOTHSTEP_DIV_2", "SMOOTHSTEP_DIV_3", "R_SMOOTHSTEP_DIV_3", "SMOOTHSTEP_DIV_4",
           "R_SMOOTHSTEP_DIV_4", "COSINE", "REVERSE_COSINE", "TRUE_CUBIC_HERMITE", "TRUE_REVERSE_CUBIC_HERMITE",
           "FAKE_CUBIC_HERMITE", "FAKE_REVERSE_CUBIC_HERMITE", "CUBIC_HERMITE", "REVERSE_CUBIC_HERMITE", "ALL_A",
           "ALL_B")
STATUS_LINES = 8


def preset_names() -> tuple[str, ...]:
    """The `let`s of std/presets (read from the file, so a new preset appears here too)."""
    import re

    path = Path(__file__).parent.parent / "stdlib" / "presets.mecha"
    try:
        names = tuple(re.findall(r"^let\s+([A-Za-z_][A-Za-z0-9_]*)", path.read_text(encoding="utf-8"), re.M))
    except OSError:
        names = ()
    return names or PRESETS


def direction(alpha: float) -> str:
    """`0.25 = 75 % A, 25 % B` (weighted_sum(a, b, alpha) = (1 − α)·a + α·b)."""
    a = (1 - alpha) * 100
    return f"{alpha:g} = {a:.4g} % A, {alpha * 100:.4g} % B   (weighted_sum = (1 − α)·A + α·B)"


def _blank(v: Any) -> bool:
    return v is Select.BLANK or v is Select.NULL or v is None


class AlphaBar(Widget, can_focus=True):
    """A slider: ←/→ by 0.05, Shift-←/→ by 0.01, Home/End, or a click."""

    DEFAULT_CSS = """
    AlphaBar { height: 1; width: 1fr; min-width: 12; }
    AlphaBar:focus { text-style: bold; color: $accent; }
    """
    BINDINGS = [Binding("left", "nudge(-0.05)", show=False), Binding("right", "nudge(0.05)", show=False),
                Binding("shift+left", "nudge(-0.01)", show=False), Binding("shift+right", "nudge(0.01)", show=False),
                Binding("home", "put(0)", show=False), Binding("end", "put(1)", show=False)]
    value: reactive[float] = reactive(0.5)

    class Changed(Message):
        def __init__(self, bar: "AlphaBar", value: float) -> None:
            super().__init__()
            self.bar = bar
            self.value = value

    def render(self) -> str:
        width = max(self.size.width - 2, 1)
        filled = round(min(max(self.value, 0.0), 1.0) * width)
        return "A" + "█" * filled + "░" * (width - filled) + "B"

    def watch_value(self, value: float) -> None:
        self.post_message(self.Changed(self, value))

    def action_nudge(self, step: float) -> None:
        self.value = round(min(max(self.value + step, 0.0), 1.0), 4)

    def action_put(self, v: float) -> None:
        self.value = float(v)

    def on_click(self, event) -> None:
        width = max(self.size.width - 2, 1)
        self.value = round(min(max((event.x - 1) / width, 0.0), 1.0), 2)


class MergeApp(App):
    TITLE = "mecha tui"
    SUB_TITLE = "merge form"
    CSS = """
    #models-table { height: auto; max-height: 10; }
    .row { height: auto; margin-bottom: 0; }
    .row > Label { width: 14; padding: 1 1 0 0; }
    .row > Select { width: 1fr; }
    .row > Input { width: 1fr; }
    #alpha-row > AlphaBar { margin: 1 1 0 0; }
    #alpha-input { width: 12; }
    #alpha-dir { width: 1fr; padding: 1 0 0 1; color: $text-muted; }
    #alpha-bounds, #name-rule, .hint { color: $text-muted; padding-left: 14; }
    #name-rule.bad { color: $error; text-style: bold; }
    #hypers { height: auto; }
    #hypers .hyper-label { width: 40; padding: 1 1 0 0; }
    #block-grid { grid-size: 6; grid-gutter: 0 1; height: auto; }
    .block-cell { height: auto; }
    .block-cell > Label { padding: 0 0 0 1; }
    #bottom { dock: bottom; height: auto; max-height: 20; border-top: solid $primary; }
    #status { height: auto; max-height: 9; }
    #status.ok { color: $success; }
    #status.bad { color: $error; }
    #cmdline { color: $text-muted; height: auto; }
    #run-row { height: 3; }
    #run-row > Button { margin-right: 1; }
    #progress { width: 40; padding-top: 1; }
    #progress-info { width: 1fr; padding-top: 1; }
    #summary { height: auto; max-height: 6; }
    #recipe { padding: 1; }
    """
    BINDINGS = [
        Binding("ctrl+n", "app.focus_next", "next field", show=False),
        Binding("ctrl+p", "app.focus_previous", "previous field", show=False),
        Binding("f2", "page('merge')", "form"),
        Binding("f3", "page('blocks')", "block weights"),
        Binding("f4", "page('recipe')", "recipe"),
        Binding("ctrl+s", "save_recipe", "save .mecha", priority=True),
        Binding("ctrl+r", "merge", "merge", priority=True),
        Binding("ctrl+c", "cancel_or_quit", "cancel / quit", priority=True),
    ]

    def __init__(self, models_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.folder = models_folder(models_dir)
        # Read after the first frame (a worker thread): reading headers and telling architectures
        # apart takes longer than drawing the form.
        self.entries: list[ModelEntry] = []
        self.scanned = threading.Event()
        self.specs = method_specs()
        self.state = FormState(self.folder)
        self.last_check: CheckResult | None = None
        self.gen = 0            # form changes
        self.checked_gen = -1   # the change the shown check is of
        self.running = False
        self.last_result = None  # the pipeline.RunResult of the last merge
        self._cancel: threading.Event | None = None
        self._progress_lock = threading.Lock()
        self._done = [0, 0]     # tensors, bytes written
        self._total = [0, 0]
        self._t0 = 0.0
        self._ui_problems: dict[str, str] = {}
        self._block_arch: str | None = ""
        self._hyper_method: str | None = None
        self._mounted = False

    # --------------------------------------------------------------------------------------------
    # layout

    def compose(self) -> ComposeResult:
        yield Header()
        options = self._model_options()
        with TabbedContent(initial="merge", id="pages"):
            with TabPane("Merge (F2)", id="merge"):
                with VerticalScroll(id="form"):
                    yield Label(f"models folder: {self.folder}   (hash: sha256 of header + first 64 KiB)",
                                id="folder")
                    yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
                    for slot, prompt in (("a", "choose model A"), ("b", "choose model B"), ("c", "None")):
                        with Horizontal(classes="row"):
                            yield Label(f"Model {slot.upper()}")
                            yield Select(options, prompt=prompt, id=f"model-{slot}")
                    with Horizontal(classes="row"):
                        yield Label("Method")
                        yield Select([(n, n) for n in self.specs], value="weighted_sum", allow_blank=False,
                                     id="method")
                    with Horizontal(classes="row", id="alpha-row"):
                        yield Label("alpha")
                        yield AlphaBar(id="alpha-bar")
                        yield Input("0.5", id="alpha-input", type="text")
                        yield Label(direction(0.5), id="alpha-dir")
                    yield Label("", id="alpha-bounds")
                    yield Vertical(id="hypers")
                    with Horizontal(classes="row"):
                        yield Label("dtype")
                        yield Select([(d or "as first model", d or "same") for d in DTYPES], value="same",
                                     allow_blank=False, id="dtype")
                    with Horizontal(classes="row"):
                        yield Label("Output name")
                        yield Input("", placeholder=self.state.default_name(), id="name")
                    yield Label(NAME_RULE_TEXT, id="name-rule")
                    with Horizontal(classes="row"):
                        yield Checkbox("force (merge differing architectures over shared keys)", id="force")
                        yield Checkbox("overwrite", id="overwrite")
            with TabPane("Block weights (F3)", id="blocks"):
                with VerticalScroll():
                    yield Label("choose model A first", id="block-arch")
                    with Horizontal(classes="row"):
                        yield Label("Preset")
                        yield Select([(p, p) for p in preset_names()], prompt="no preset", id="preset")
                    with Horizontal(classes="row"):
                        yield Label("MBW string")
                        yield Input("", placeholder="comma-separated weights, one per block below", id="mbw")
                    yield Label("Per block (empty: alpha); an MBW string wins over a preset, a preset over the "
                                "blocks below. Weights are the share of B, like alpha.", classes="hint")
                    yield Grid(id="block-grid")
            with TabPane("Recipe (F4)", id="recipe-page"):
                with VerticalScroll():
                    yield Static("", id="recipe")
        with Vertical(id="bottom"):
            yield Static("", id="status")
            yield Static("", id="cmdline")
            with Horizontal(id="run-row"):
                yield Button("OK: merge", id="ok", variant="success", disabled=True)
                yield Button("Cancel", id="cancel", variant="error", disabled=True)
                yield ProgressBar(total=100, show_eta=False, id="progress")
                yield Label("", id="progress-info")
            yield Static("", id="summary")
        yield Footer()

    def _model_options(self) -> list[tuple[str, str]]:
        return [(e.label, e.name) for e in self.entries]

    def _fill_table(self) -> None:
        table = self.query_one("#models-table", DataTable)
        table.clear(columns=True)
        table.add_columns("model", "arch", "size", "hash")
        for e in self.entries:
            table.add_row(e.name, e.arch + ("" if e.confident else "?"), format_bytes(e.size), e.short_hash,
                          key=e.name)

    async def on_mount(self) -> None:
        self._fill_table()
        await self._render_hypers()
        self._mounted = True
        self.set_interval(0.1, self._tick)
        self.run_worker(self._scan_models, thread=True, name="scan")
        if os.environ.get(EXIT_AFTER_MOUNT):  # the startup benchmark: spawn → the form drawn once
            self.call_after_refresh(self.exit, 0)
            return
        self.call_after_refresh(self._changed)  # the first check after the first frame

    def action_page(self, page: str) -> None:
        self.query_one("#pages", TabbedContent).active = "recipe-page" if page == "recipe" else page

    # --------------------------------------------------------------------------------------------
    # the form → FormState → check

    def entry(self, name: str | None) -> ModelEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def _collect(self) -> FormState:
        models = []
        for slot in "abc":
            v = self.query_one(f"#model-{slot}", Select).value
            models.append(None if _blank(v) else str(v))
        entries = [self.entry(m) for m in models]
        method = str(self.query_one("#method", Select).value)
        dtype = self.query_one("#dtype", Select).value
        hypers: dict[str, Any] = {}
        spec = self.specs.get(method)
        if spec is not None and self._hyper_method == method:
            for h in spec.hypers:
                if h.name == "alpha":
                    continue
                v = self._hyper_value(h)
                if v is not None and v != h.default:
                    hypers[h.name] = v
        blocks = {}
        for inp in self.query(".block-input").results(Input):
            text = inp.value.strip()
            block = inp.id.removeprefix("block-")
            if not text:
                self._ui_problems.pop(f"block {block}", None)
                continue
            try:
                blocks[block] = float(text)
                self._ui_problems.pop(f"block {block}", None)
            except ValueError:
                self._ui_problems[f"block {block}"] = f"block {block}: {text!r} is not a number"
        preset = self.query_one("#preset", Select).value
        a = self.entry(models[0])
        return replace(self.state, models=models, method=method, hypers=hypers,
                       force=self.query_one("#force", Checkbox).value,
                       overwrite=self.query_one("#overwrite", Checkbox).value,
                       dtype=None if dtype == "same" else str(dtype),
                       name=self.query_one("#name", Input).value, arch=a.arch if a else None, blocks=blocks,
                       preset=None if _blank(preset) else str(preset), mbw=self.query_one("#mbw", Input).value,
                       adapters=[bool(e and e.adapter) for e in entries],
                       first_kind=entries[0].kind if entries[0] else None)

    def _hyper_value(self, h) -> Any:
        key = f"hyper {h.name}"
        try:
            w = self.query_one(f"#hyper-{h.name}")
        except Exception:
            return None
        if isinstance(w, Checkbox):
            return w.value
        if isinstance(w, Select):
            return None if _blank(w.value) else str(w.value)
        text = w.value.strip()
        self._ui_problems.pop(key, None)
        if not text:
            return None
        try:
            return int(text) if h.kind.type == "int" else float(text)
        except ValueError:
            what = "a whole number" if h.kind.type == "int" else "a number"
            self._ui_problems[key] = f"{h.name}: {text!r} is not {what}"
            return None

    def _changed(self) -> None:
        """Any field changed: rebuild the state, show the recipe and command, and re-check."""
        if not self._mounted:
            return
        self.state = self._collect()
        s = self.state
        self.query_one("#name", Input).placeholder = s.default_name()
        rule = self.query_one("#name-rule", Label)
        bad_name = bool(s.name.strip()) and not NAME_RULE.fullmatch(s.name.strip())
        rule.set_class(bad_name, "bad")
        rule.update(("✗ " if bad_name else "") + NAME_RULE_TEXT)
        self.call_after_refresh(self._sync_blocks)
        self.gen += 1
        self.query_one("#ok", Button).disabled = True
        if self._ui_problems:
            self._show_check(self.gen, CheckResult(False, list(self._ui_problems.values())))
            return
        gen, state = self.gen, s
        self.run_worker(lambda: (gen, check_form(state)), thread=True, group="check", name="check")

    def _show_check(self, gen: int, r: CheckResult) -> None:
        if gen != self.gen:
            return  # a later change is being checked
        self.checked_gen = gen
        self.last_check = r
        s = self.state
        status = self.query_one("#status", Static)
        status.set_class(r.ok, "ok")
        status.set_class(not r.ok, "bad")
        if r.ok:
            head = f"✓ check passed: {r.total_keys} keys → {s.out_name}"
            status.update("\n".join([head, *r.lines[:STATUS_LINES - 1]]))
        else:
            lines = r.lines[:STATUS_LINES]
            more = len(r.lines) - len(lines)
            status.update("\n".join(lines) + (f"\n… {more} more line{'s' if more > 1 else ''}" if more > 0 else ""))
        text = r.text or (recipe_text(s) if s.models[0] and s.models[1] and not self._ui_problems else "")
        self.query_one("#cmdline", Static).update(("$ " + command_line(s)) if s.models[0] and s.models[1] else "")
        self.query_one("#recipe", Static).update((f"# {s.recipe_path.name} (Ctrl-S saves it)\n" + text)
                                                 if text else "(choose two models)")
        self.query_one("#ok", Button).disabled = not r.ok or self.running

    # events ------------------------------------------------------------------------------------

    @on(Select.Changed)
    async def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "method":
            await self._render_hypers()
        self._changed()

    @on(Checkbox.Changed)
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._changed()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "alpha-input":
            try:
                value = float(event.value)
                if value != value:
                    raise ValueError
            except ValueError:
                self._ui_problems["alpha"] = f"alpha: {event.value!r} is not a number"
                self._changed()
                return
            self._ui_problems.pop("alpha", None)
            self.query_one("#alpha-bar", AlphaBar).value = value  # no message when it is the same
            self.state = replace(self.state, alpha=value)
            self.query_one("#alpha-dir", Label).update(direction(value))
        self._changed()

    @on(AlphaBar.Changed)
    def _bar_changed(self, event: AlphaBar.Changed) -> None:
        """The slider moved: write the number field, whose change sets alpha."""
        field = self.query_one("#alpha-input", Input)
        try:
            same = float(field.value) == event.value
        except ValueError:
            same = False
        if not same:
            field.value = f"{event.value:g}"

    def set_alpha(self, value: float) -> None:
        """Set alpha as typing it in the number field does (tests, scripts)."""
        self.query_one("#alpha-input", Input).value = f"{value:g}"

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        w = event.worker
        if w.name == "check" and event.state == WorkerState.SUCCESS:
            gen, result = w.result
            self._show_check(gen, result)
        elif w.name == "check" and event.state == WorkerState.ERROR:
            self._show_check(self.gen, CheckResult(False, [f"internal error while checking: {w.error}"]))
        elif w.name == "merge" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self._finish(w.result if event.state == WorkerState.SUCCESS else w.error)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a model: it fills the first empty slot of A, B, C."""
        name = event.row_key.value
        for slot in "abc":
            sel = self.query_one(f"#model-{slot}", Select)
            if _blank(sel.value):
                sel.value = name
                return

    # hyperparameters and blocks ----------------------------------------------------------------

    async def _render_hypers(self) -> None:
        method = str(self.query_one("#method", Select).value)
        if method == self._hyper_method:
            return
        self._hyper_method = method
        box = self.query_one("#hypers", Vertical)
        await box.remove_children()
        for k in [k for k in self._ui_problems if k.startswith("hyper ")]:
            del self._ui_problems[k]
        spec = self.specs.get(method)
        if spec is None:
            return
        alpha = spec.hyper("alpha")
        self.query_one("#alpha-bounds", Label).update(hyper_description(alpha) if alpha else
                                                      f"{method} has no alpha: the slider is not used")
        self.query_one("#alpha-row").disabled = alpha is None
        rows = []
        for h in spec.hypers:
            if h.name == "alpha":
                continue
            if h.kind.type == "bool":
                widget = Checkbox(hyper_description(h), value=bool(h.default), id=f"hyper-{h.name}")
                rows.append(Horizontal(Label(""), widget, classes="row"))
                continue
            if h.kind.type == "str" and h.kind.choices:
                widget = Select([(c, c) for c in h.kind.choices], value=h.default, allow_blank=False,
                                id=f"hyper-{h.name}")
            else:
                widget = Input("" if h.default is None else str(h.default), id=f"hyper-{h.name}")
            rows.append(Horizontal(Label(h.name), widget, Label(hyper_description(h), classes="hyper-label"),
                                   classes="row"))
        if rows:
            await box.mount(*rows)

    async def _sync_blocks(self) -> None:
        arch = self.state.arch
        if arch == self._block_arch:
            return
        self._block_arch = arch
        grid = self.query_one("#block-grid", Grid)
        await grid.remove_children()
        for k in [k for k in self._ui_problems if k.startswith("block ")]:
            del self._ui_problems[k]
        label = self.query_one("#block-arch", Label)
        blocks: tuple[str, ...] = ()
        if arch:
            from ..archs.registry import get_arch

            a = get_arch(arch)
            blocks = tuple(a.mbw_blocks or a.blocks) if a is not None else ()
        if not blocks:
            label.update(f"architecture {arch or '?'}: no blocks to weight" if arch else "choose model A first")
            return
        label.update(f"architecture {arch} (model A): {len(blocks)} blocks, {blocks[0]}..{blocks[-1]}")
        self.query_one("#mbw", Input).placeholder = f"{len(blocks)} comma-separated weights: " + ",".join(blocks[:3]) \
            + ",…," + blocks[-1]
        await grid.mount(*[Vertical(Label(b), Input("", placeholder="alpha", id=f"block-{b}", classes="block-input"),
                                    classes="block-cell") for b in blocks])

    # --------------------------------------------------------------------------------------------
    # saving and running

    def action_save_recipe(self) -> None:
        s = self.state
        if not (s.models[0] and s.models[1]) or self._ui_problems or (s.name.strip() and not NAME_RULE.fullmatch(
                s.name.strip())):
            self.notify("nothing to save yet: fix the form first", severity="warning")
            return
        path = s.recipe_path
        try:
            path.write_text(recipe_text(s), encoding="utf-8")
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"saved {path}")

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.action_merge()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel_or_quit()

    def action_merge(self) -> None:
        r = self.last_check
        if self.running or r is None or not r.ok or self.checked_gen != self.gen:
            return
        self.running = True
        self._cancel = threading.Event()
        self._done = [0, 0]
        self._total = [0, 0]
        self._t0 = time.perf_counter()
        self.query_one("#ok", Button).disabled = True
        self.query_one("#cancel", Button).disabled = False
        self.query_one("#summary", Static).update("planning…")
        state, program, cancel = self.state, r.program, self._cancel
        self.run_worker(lambda: self._merge_thread(state, program, cancel), thread=True, group="merge",
                        name="merge")

    def _merge_thread(self, state: FormState, program, cancel: threading.Event):
        """In a worker thread: plan, then execute (torch is imported here, by the pipeline)."""
        from .. import pipeline

        planned = pipeline.plan(program)
        if not planned.ok:
            return pipeline.RunResult(planned, planned.diagnostics)
        self._total = [planned.total_keys, planned.total_bytes]

        def progress(tensors: int, nbytes: int) -> None:
            with self._progress_lock:
                self._done[0] += tensors
                self._done[1] += nbytes

        return pipeline.execute(planned, overwrite=state.overwrite, progress=progress, cancel=cancel)

    def _tick(self) -> None:
        if not self.running:
            return
        keys, nbytes = self._done
        total_keys, total_bytes = self._total
        bar = self.query_one("#progress", ProgressBar)
        if total_bytes:
            bar.update(total=total_bytes, progress=nbytes)
        elapsed = max(time.perf_counter() - self._t0, 1e-6)
        rate = nbytes / elapsed
        left = (total_bytes - nbytes) / rate if rate > 0 else float("nan")
        cancelling = " — cancelling…" if self._cancel is not None and self._cancel.is_set() else ""
        self.query_one("#progress-info", Label).update(
            f"{keys}/{total_keys} keys, {rate / 1e6:.1f} MB/s, "
            + (f"{left:.0f} s left" if left == left else "…") + cancelling)

    def _finish(self, result) -> None:
        from ..diagnostics import render_text

        self._tick()  # the final counts
        self.running = False
        self.last_result = result
        self.query_one("#cancel", Button).disabled = True
        summary = self.query_one("#summary", Static)
        elapsed = time.perf_counter() - self._t0
        if isinstance(result, BaseException):
            summary.update(f"internal error: {type(result).__name__}: {result}")
        elif result.ok:
            bar = self.query_one("#progress", ProgressBar)
            bar.update(total=max(self._total[1], 1), progress=max(self._total[1], 1))
            lines = [f"✓ wrote {Path(o.path).name}: {len(o.tensors)} tensors, {format_bytes(o.data_bytes)}"
                     for o in result.planned.plan.outputs]
            rate = self._done[1] / elapsed / 1e6 if elapsed > 0 else 0
            peak = result.stats.peak_rss if result.stats else None
            lines.append(f"done in {elapsed:.1f} s ({rate:.1f} MB/s)" + (f", peak memory {format_bytes(peak)}"
                                                                         if peak else ""))
            summary.update("\n".join(lines))
        elif result.interrupted:
            summary.update("✗ cancelled: no output was written")
        else:
            errors = [d for d in result.diagnostics if d.is_error]
            summary.update(render_text(errors, result.planned.sources).rstrip())
        self.refresh_models()
        self._changed()

    def action_cancel_or_quit(self) -> None:
        if self.running and self._cancel is not None:
            self._cancel.set()
            self.query_one("#summary", Static).update("cancelling…")
        elif not self.running:
            self.exit(0)

    def _scan_models(self) -> None:
        entries = scan(self.folder)
        try:
            self.call_from_thread(self._show_entries, entries)
        finally:
            self.scanned.set()

    def refresh_models(self) -> None:
        """Re-read the models folder: a merged output appears in the list and the choices."""
        self._show_entries(scan(self.folder))

    def _show_entries(self, entries: list[ModelEntry]) -> None:
        self.entries = entries
        self._fill_table()
        options = self._model_options()
        for slot in "abc":
            sel = self.query_one(f"#model-{slot}", Select)
            keep = sel.value
            sel.set_options(options)
            if not _blank(keep) and any(n == keep for _, n in options):
                sel.value = keep
