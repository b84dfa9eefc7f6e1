"""The page's HTML, rendered on the server: the models table, the choices and the four panels (quick
merge, block weights, recipe editor, run). `static/app.js` fills in the rest from the JSON API."""

from __future__ import annotations

from html import escape

from ..commands.catalog import ModelEntry
from ..commands.quick_form import DTYPES, NAME_RULE_TEXT, method_specs
from ..units import format_bytes
from .guard import Guard

TABS = (("merge", "Quick merge"), ("blocks", "Block weights"), ("editor", "Recipe editor"), ("run", "Run"))


def _options(entries: list[ModelEntry], none: str) -> str:
    out = [f'<option value="">{escape(none)}</option>']
    for e in entries:
        if e.problem:
            continue
        kind = "LoRA" if e.adapter else e.arch
        out.append(f'<option value="{escape(e.name)}" data-arch="{escape(e.arch)}" '
                   f'data-kind="{"adapter" if e.adapter else "model"}">{escape(e.name)} [{escape(kind)}]</option>')
    return "".join(out)


def _rows(entries: list[ModelEntry]) -> str:
    rows = []
    for e in entries:
        arch = e.arch + ("" if e.confident else "?")
        kind = "LoRA (adapter)" if e.adapter else "model"
        note = f' <span class="bad">{escape(e.problem)}</span>' if e.problem else ""
        rows.append(f"<tr><td>{escape(e.name)}{note}</td><td>{escape(arch)}</td><td>{kind}</td>"
                    f"<td>{format_bytes(e.size)}</td><td><code>{escape(e.short_hash)}</code></td></tr>")
    return "".join(rows) or '<tr><td colspan="5">no <code>.safetensors</code> files in the models folder</td></tr>'


def page_html(guard: Guard, entries: list[ModelEntry]) -> str:
    methods = "".join(f'<option value="{escape(n)}">{escape(n)}</option>' for n in method_specs())
    dtypes = "".join(f'<option value="{escape(d or "")}">{escape(d or "as model A")}</option>'
                     for d in sorted(DTYPES, key=lambda d: d is not None))  # the default first
    tabs = "".join(f'<button type="button" role="tab" id="tab-{k}" aria-controls="panel-{k}" '
                   f'aria-selected="{"true" if i == 0 else "false"}" data-tab="{k}">{escape(label)}</button>'
                   for i, (k, label) in enumerate(TABS))
    selects = "".join(
        f'<div class="field"><label for="model-{s}">Model {s.upper()}</label>'
        f'<select id="model-{s}" name="model-{s}">{_options(entries, none)}</select></div>'
        for s, none in (("a", "choose model A"), ("b", "choose model B"), ("c", "none")))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mecha ui</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header>
  <h1>mecha ui</h1>
  <p class="muted">models: <code id="models-folder">{escape(str(guard.models))}</code> ·
     output: <code id="output-folder">{escape(str(guard.output))}</code></p>
  <nav role="tablist" aria-label="pages">{tabs}</nav>
</header>
<main>
<section id="panel-merge" role="tabpanel" aria-labelledby="tab-merge" class="panel">
  <div class="cols">
  <div>
    <h2>Models</h2>
    <div class="scroll"><table id="models-table"><caption class="muted">hash: sha256 of the header and the
      first 64 KiB</caption><thead><tr><th scope="col">file</th><th scope="col">arch</th><th scope="col">kind</th>
      <th scope="col">size</th><th scope="col">hash</th></tr></thead><tbody>{_rows(entries)}</tbody></table></div>
    {selects}
    <div class="field"><label for="method">Method</label><select id="method">{methods}</select></div>
    <div class="field" id="alpha-field">
      <label for="alpha">alpha</label>
      <div class="slider"><span aria-hidden="true">A</span>
        <input type="range" id="alpha" min="0" max="1" step="0.01" value="0.5" aria-describedby="alpha-dir">
        <span aria-hidden="true">B</span>
        <input type="number" id="alpha-number" min="0" max="1" step="0.01" value="0.5" aria-label="alpha value"></div>
      <p id="alpha-dir" class="muted"></p>
      <p id="alpha-bounds" class="muted"></p>
    </div>
    <div class="field" id="strength-field" hidden>
      <label for="strength">LoRA strength</label>
      <input type="number" id="strength" step="0.05" value="1">
      <p class="muted">model A + strength · LoRA (what <code>mecha merge MODEL LORA --lora S</code> bakes)</p>
    </div>
    <div id="hypers"></div>
    <div class="field"><label for="dtype">dtype</label><select id="dtype">{dtypes}</select></div>
    <div class="field"><label for="name">Output name</label>
      <input type="text" id="name" autocomplete="off" spellcheck="false" aria-describedby="name-rule">
      <p id="name-rule" class="muted">{escape(NAME_RULE_TEXT)}</p></div>
    <div class="field checks">
      <label><input type="checkbox" id="force"> force (merge differing architectures over shared keys)</label>
      <label><input type="checkbox" id="overwrite"> overwrite an existing output</label></div>
  </div>
  <div>
    <h2>Check</h2>
    <div id="status" role="status" aria-live="polite" class="status">choose two models</div>
    <p><code id="cmdline"></code></p>
    <div class="buttons">
      <button type="button" id="merge" disabled>Merge</button>
      <button type="button" id="save">Save recipe (.mecha)</button>
      <button type="button" id="to-editor">Open in the editor</button></div>
    <p id="save-note" class="muted" role="status"></p>
    <h2>Recipe</h2>
    <pre id="recipe" tabindex="0" aria-label="the recipe the form builds">(choose two models)</pre>
  </div>
  </div>
</section>
<section id="panel-blocks" role="tabpanel" aria-labelledby="tab-blocks" class="panel" hidden>
  <h2>Block weights</h2>
  <p id="block-arch" class="muted">choose model A first</p>
  <div class="cols">
  <div>
    <div class="field"><label for="preset">Preset (std/presets)</label>
      <select id="preset"><option value="">no preset</option></select></div>
    <div class="field"><label for="mbw">MBW string</label>
      <input type="text" id="mbw" autocomplete="off" spellcheck="false" aria-describedby="mbw-note">
      <p id="mbw-note" class="muted">one weight per block, BASE first; it and the sliders follow each other.
        A weight is the share of model B, like alpha.</p></div>
    <div class="buttons"><button type="button" id="blocks-reset">Reset blocks to alpha</button></div>
    <fieldset id="classes"><legend>Classes merged (unticked: kept from model A)</legend></fieldset>
  </div>
  <div>
    <svg id="chart" viewBox="0 0 260 110" role="img" aria-label="the block weights as a curve"></svg>
  </div>
  </div>
  <div id="block-sliders" class="blocks"></div>
</section>
<section id="panel-editor" role="tabpanel" aria-labelledby="tab-editor" class="panel" hidden>
  <h2>Recipe editor</h2>
  <p class="muted">Checked as you type, as <code>mecha check</code> checks it. Relative paths start at the output
    folder; models are found in the models folder.</p>
  <div class="editor">
    <pre id="gutter" aria-hidden="true">1</pre>
    <textarea id="editor" spellcheck="false" aria-label="recipe text" aria-describedby="editor-status"
      rows="14"></textarea>
  </div>
  <div id="editor-status" role="status" aria-live="polite" class="status"></div>
  <ul id="diagnostics"></ul>
  <div class="buttons"><button type="button" id="editor-run">Run this recipe</button>
    <label><input type="checkbox" id="editor-overwrite"> overwrite</label></div>
  <h3>Explain a key</h3>
  <div class="field"><label for="key-filter">Search the output keys</label>
    <input type="search" id="key-filter" autocomplete="off" placeholder="e.g. attn2"></div>
  <div class="field"><label for="keys">Keys</label><select id="keys" size="6"></select></div>
  <div class="buttons"><button type="button" id="explain">Explain</button></div>
  <pre id="explain-out" tabindex="0" aria-label="explanation"></pre>
</section>
<section id="panel-run" role="tabpanel" aria-labelledby="tab-run" class="panel" hidden>
  <h2>Run</h2>
  <div class="progress-row">
    <progress id="progress" max="100" value="0" aria-label="merge progress"></progress>
    <span id="percent">0 %</span></div>
  <p id="progress-text" role="status" aria-live="polite" class="muted">no merge yet</p>
  <div class="buttons"><button type="button" id="cancel" disabled>Cancel</button>
    <button type="button" id="provenance" disabled>Show provenance</button></div>
  <pre id="summary" tabindex="0" aria-label="summary"></pre>
  <pre id="provenance-out" tabindex="0" aria-label="provenance" hidden></pre>
</section>
</main>
<script src="/static/app.js"></script>
</body>
</html>
"""
