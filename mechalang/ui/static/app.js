// mecha ui: the page's script. Every check, recipe and run comes from the server (the pipeline);
// this file only collects the fields, shows what the server answers, and follows a run's events.
"use strict";

const $ = (id) => document.getElementById(id);
const NAME_RULE = /^(?!\.)(?!.*\.\.)[A-Za-z0-9.+-]+$/;  // as commands/merge.py NAME_RULE: no hidden names, no ..
const ui = {
  methods: {}, arch: null, blocks: [], presets: {}, weights: {}, preset: "", classes: [],
  formGen: 0, lastForm: null, job: null, lastOutput: null, editorGen: 0,
};

function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { ok: false, refused: await r.text().catch(() => r.statusText) }; }
  Object.defineProperty(data, "status", { value: r.status, enumerable: false });
  return data;
}

// -- tabs ---------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll("[role=tab]").forEach((t) => {
    const on = t.dataset.tab === name;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    $("panel-" + t.dataset.tab).hidden = !on;
  });
}
document.querySelectorAll("[role=tab]").forEach((t, i, all) => {
  t.addEventListener("click", () => showTab(t.dataset.tab));
  t.addEventListener("keydown", (e) => {  // arrow keys move between tabs, as in any tab list
    const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    const next = all[(i + step + all.length) % all.length];
    next.focus(); showTab(next.dataset.tab); e.preventDefault();
  });
});

// -- the quick-merge form -----------------------------------------------------------------------
function alphaDirection(a) {
  const pa = +((1 - a) * 100).toPrecision(4), pb = +(a * 100).toPrecision(4);
  return `${a} = ${pa} % A, ${pb} % B   (weighted_sum = (1 − α)·A + α·B)`;
}

function setAlpha(v, from) {
  if (from !== "range") $("alpha").value = v;
  if (from !== "number") $("alpha-number").value = v;
  $("alpha-dir").textContent = alphaDirection(+v);
  drawBlocks();
  formChanged();
}
$("alpha").addEventListener("input", (e) => setAlpha(e.target.value, "range"));
$("alpha-number").addEventListener("input", (e) => { if (e.target.value !== "") setAlpha(e.target.value, "number"); });

function modelKind(slot) {
  const opt = $("model-" + slot).selectedOptions[0];
  return opt && opt.value ? { arch: opt.dataset.arch, kind: opt.dataset.kind } : null;
}

function renderHypers() {
  const spec = ui.methods[$("method").value];
  const box = $("hypers");
  box.textContent = "";
  if (!spec) return;
  const alpha = spec.hypers.find((h) => h.name === "alpha");
  $("alpha-field").hidden = !alpha;
  $("alpha-bounds").textContent = alpha ? alpha.describe : "";
  for (const h of spec.hypers) {
    if (h.name === "alpha") continue;
    const div = document.createElement("div");
    div.className = "field";
    const id = "hyper-" + h.name;
    let input;
    if (h.type === "bool") {
      const label = document.createElement("label");
      input = document.createElement("input");
      input.type = "checkbox"; input.checked = !!h.default;
      label.append(input, " " + h.describe);
      div.append(label);
    } else {
      const label = document.createElement("label");
      label.htmlFor = id; label.textContent = h.name;
      if (h.choices.length) {
        input = document.createElement("select");
        for (const c of h.choices) input.add(new Option(c, c, false, c === h.default));
      } else {
        input = document.createElement("input");
        input.type = h.type === "str" ? "text" : "number";
        if (h.lo !== null) input.min = h.lo;
        if (h.hi !== null) input.max = h.hi;
        input.step = h.type === "int" ? "1" : "0.01";
        input.value = h.default === null ? "" : h.default;
      }
      const note = document.createElement("p");
      note.className = "muted"; note.textContent = h.describe;
      div.append(label, input, note);
    }
    input.id = id; input.dataset.hyper = h.name; input.dataset.type = h.type;
    input.addEventListener(input.tagName === "SELECT" || input.type === "checkbox" ? "change" : "input", formChanged);
    box.append(div);
  }
}

function hyperValues() {
  const out = {};
  document.querySelectorAll("[data-hyper]").forEach((el) => {
    out[el.dataset.hyper] = el.type === "checkbox" ? el.checked : el.value;
  });
  return out;
}

function collect() {
  const blocks = {};
  for (const b of ui.blocks) if (b in ui.weights) blocks[b] = ui.weights[b];
  return {
    models: ["a", "b", "c"].map((s) => $("model-" + s).value || null),
    method: $("method").value, alpha: +$("alpha").value, strength: +$("strength").value || 0,
    hypers: hyperValues(), force: $("force").checked, overwrite: $("overwrite").checked,
    dtype: $("dtype").value || null, name: $("name").value,
    preset: ui.preset || null, blocks: ui.preset ? {} : blocks,
    classes_off: ui.classes.filter((c) => !$("class-" + c).checked),
  };
}

const checkForm = debounce(async () => {
  const gen = ++ui.formGen;
  const changes = ui.changes;
  const form = collect();
  const r = await api("/api/form", form);
  if (gen !== ui.formGen) return;  // a later change is being checked
  ui.lastForm = r;
  const status = $("status");
  status.classList.toggle("ok", !!r.ok);
  status.classList.toggle("bad", !r.ok);
  if (r.refused) status.textContent = "✗ " + r.refused;
  else if (r.ok) status.textContent = `✓ check passed: ${r.total_keys} keys → ${r.out_name}` +
      (r.lines.length ? "\n" + r.lines.join("\n") : "");
  else status.textContent = r.lines.join("\n");
  $("recipe").textContent = r.recipe || "(choose two models)";
  $("cmdline").textContent = r.command ? "$ " + r.command : "";
  $("merge").disabled = !r.ok || (ui.job && !ui.job.finished);
  if (r.default_name) $("name").placeholder = r.default_name;
  $("strength-field").hidden = !r.baking;
  if (changes === ui.changes) document.body.dataset.formBusy = "0";  // nothing newer waits to be checked
}, 120);

function formChanged(again) {
  const now = JSON.stringify(collect());
  if (now === ui.lastSent && again !== true) return;  // the same form (a blur's change event, say): keep the shown check
  ui.lastSent = now;
  ui.changes = (ui.changes || 0) + 1;
  document.body.dataset.formBusy = "1";
  $("merge").disabled = true;
  const name = $("name").value.trim();
  const bad = name !== "" && !NAME_RULE.test(name);  // the rule as you type; the server checks it too
  $("name-rule").classList.toggle("bad", bad);
  $("name").setAttribute("aria-invalid", bad ? "true" : "false");
  checkForm();
}

for (const id of ["model-b", "model-c", "force", "overwrite", "dtype"]) $(id).addEventListener("change", formChanged);
for (const id of ["name", "strength"]) $(id).addEventListener("input", formChanged);
$("model-a").addEventListener("change", () => { loadArch(); formChanged(); });
$("method").addEventListener("change", () => { renderHypers(); formChanged(); });

// -- block weights ------------------------------------------------------------------------------
async function loadArch() {
  const m = modelKind("a");
  const arch = m && m.kind === "model" ? m.arch : null;
  if (arch === ui.arch) return;
  ui.arch = arch; ui.weights = {}; ui.preset = "";
  const info = arch ? await api("/api/arch/" + encodeURIComponent(arch)) : { blocks: [], classes: [], presets: {} };
  ui.blocks = info.blocks; ui.presets = info.presets; ui.classes = info.classes;
  $("block-arch").textContent = !arch ? "choose model A first" : ui.blocks.length
    ? `architecture ${arch} (model A): ${ui.blocks.length} blocks, ${ui.blocks[0]}..${ui.blocks[ui.blocks.length - 1]}`
    : `architecture ${arch}: no blocks to weight`;
  const preset = $("preset");
  preset.length = 1;
  for (const name of Object.keys(ui.presets)) preset.add(new Option(name, name));
  const box = $("block-sliders");
  box.textContent = "";
  for (const b of ui.blocks) {
    const cell = document.createElement("div");
    cell.className = "block";
    cell.innerHTML = `<label for="block-${b}">${b}</label>` +
      `<input type="range" id="block-${b}" min="0" max="1" step="0.01" data-block="${b}">` +
      `<output id="block-${b}-value" for="block-${b}"></output>`;
    box.append(cell);
    cell.querySelector("input").addEventListener("input", (e) => {
      if (ui.preset) {  // moving a slider leaves the preset: its values stay, as explicit weights
        ui.blocks.forEach((name, i) => { ui.weights[name] = ui.presets[ui.preset][i]; });
        ui.preset = ""; $("preset").value = "";
      }
      ui.weights[b] = +e.target.value;
      drawBlocks(); formChanged();
    });
  }
  const classes = $("classes");
  classes.querySelectorAll("label").forEach((l) => l.remove());
  for (const c of ui.classes) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" id="class-${c}" checked> ${c}`;
    label.querySelector("input").addEventListener("change", formChanged);
    classes.append(label);
  }
  drawBlocks();
}

function blockWeights() {
  const alpha = +$("alpha").value;
  if (ui.preset) return ui.presets[ui.preset].slice();
  return ui.blocks.map((b) => (b in ui.weights ? ui.weights[b] : alpha));
}

function fmt(v) { return String(+(+v).toFixed(4)); }

function drawBlocks(fromMbw) {
  const w = blockWeights();
  ui.blocks.forEach((b, i) => {
    const el = $("block-" + b);
    if (!el) return;
    el.value = w[i];
    $("block-" + b + "-value").textContent = fmt(w[i]) + (b in ui.weights || ui.preset ? "" : " (α)");
  });
  if (!fromMbw) { $("mbw").value = ui.blocks.length ? w.map(fmt).join(",") : ""; $("mbw").removeAttribute("aria-invalid"); }
  const svg = $("chart");
  const n = w.length;
  if (!n) { svg.innerHTML = ""; return; }
  const pts = w.map((v, i) => `${10 + (240 * i) / Math.max(n - 1, 1)},${100 - 90 * Math.min(Math.max(v, 0), 1)}`);
  svg.innerHTML = `<line x1="10" y1="100" x2="250" y2="100" class="axis"/><line x1="10" y1="10" x2="250" y2="10" class="axis"/>` +
    `<text x="0" y="104">A</text><text x="0" y="14">B</text>` +
    `<polyline points="${pts.join(" ")}"/>` + pts.map((p) => `<circle cx="${p.split(",")[0]}" cy="${p.split(",")[1]}" r="2"/>`).join("");
}

$("mbw").addEventListener("input", (e) => {
  const parts = e.target.value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const nums = parts.map(Number);
  const ok = nums.length === ui.blocks.length && nums.every((v) => Number.isFinite(v));
  e.target.setAttribute("aria-invalid", ok ? "false" : "true");
  $("mbw-note").textContent = ok ? "one weight per block, BASE first; it and the sliders follow each other."
    : `needs ${ui.blocks.length} comma-separated numbers (${nums.length} given)`;
  if (!ok) return;
  ui.preset = ""; $("preset").value = "";
  ui.blocks.forEach((b, i) => { ui.weights[b] = nums[i]; });
  drawBlocks(true); formChanged();
});
$("preset").addEventListener("change", (e) => {
  ui.preset = e.target.value; ui.weights = {};
  drawBlocks(); formChanged();
});
$("blocks-reset").addEventListener("click", () => {
  ui.preset = ""; ui.weights = {}; $("preset").value = "";
  drawBlocks(); formChanged();
});

// -- save, editor -------------------------------------------------------------------------------
$("save").addEventListener("click", async () => {
  const r = await api("/api/save", collect());
  $("save-note").textContent = r.ok ? `saved ${r.saved} in the output folder` : "✗ " + (r.refused || "not saved");
});
$("to-editor").addEventListener("click", () => {
  if (ui.lastForm && ui.lastForm.recipe) { $("editor").value = ui.lastForm.recipe; editorChanged(); }
  showTab("editor"); $("editor").focus();
});

function gutter(diags) {
  const n = $("editor").value.split("\n").length;
  const marks = {};
  for (const d of diags) if (d.line) marks[d.line] = marks[d.line] === "error" ? "error" : d.severity;
  const lines = [];
  for (let i = 1; i <= n; i++) {
    lines.push(marks[i] ? `<span class="mark-${marks[i]}" data-line="${i}">${i}</span>` : `<span>${i}</span>`);
  }
  $("gutter").innerHTML = lines.join("\n");
  $("gutter").scrollTop = $("editor").scrollTop;
}

const checkEditor = debounce(async () => {
  const gen = ++ui.editorGen;
  const text = $("editor").value;
  const r = await api("/api/check", { text });
  if (gen !== ui.editorGen) return;
  const list = $("diagnostics");
  list.textContent = "";
  const diags = r.diagnostics || [];
  for (const d of diags) {
    const li = document.createElement("li");
    li.className = "diag " + d.severity;
    li.dataset.line = d.line || "";
    const where = d.line ? `line ${d.line}, column ${d.col}: ` : "";
    const head = document.createElement("button");
    head.type = "button";
    head.textContent = `${where}${d.severity}[${d.code}]: ${d.message}`;
    head.addEventListener("click", () => goToLine(d.line, d.col));
    const pre = document.createElement("pre");
    pre.textContent = d.text;
    li.append(head, pre);
    list.append(li);
  }
  gutter(diags);
  const status = $("editor-status");
  status.classList.toggle("ok", !!r.ok);
  status.classList.toggle("bad", !r.ok);
  status.textContent = r.refused ? "✗ " + r.refused : r.ok ? `✓ check passed: ${r.total_keys} keys` +
    (diags.length ? ` (${diags.length} note${diags.length > 1 ? "s" : ""})` : "")
    : `✗ ${diags.filter((d) => d.severity === "error").length} error(s)`;
  document.body.dataset.editorGen = String(gen);
  if (r.ok) loadKeys(text);
}, 300);

function goToLine(line, col) {
  if (!line) return;
  const ed = $("editor");
  const lines = ed.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  ed.focus();
  ed.setSelectionRange(pos + Math.max((col || 1) - 1, 0), pos + Math.max((col || 1) - 1, 0));
}

function editorChanged() { gutter([]); checkEditor(); }
$("editor").addEventListener("input", editorChanged);
$("editor").addEventListener("scroll", () => { $("gutter").scrollTop = $("editor").scrollTop; });

let allKeys = [];
async function loadKeys(text) {
  const r = await api("/api/keys", { text });
  allKeys = r.ok ? r.keys : [];
  filterKeys();
}
function filterKeys() {
  const q = $("key-filter").value.trim().toLowerCase();
  const sel = $("keys");
  sel.length = 0;
  for (const k of allKeys.filter((k) => k.toLowerCase().includes(q)).slice(0, 500)) sel.add(new Option(k, k));
}
$("key-filter").addEventListener("input", filterKeys);
$("explain").addEventListener("click", async () => {
  const key = $("keys").value || $("key-filter").value.trim();
  if (!key) { $("explain-out").textContent = "pick a key first"; return; }
  const r = await api("/api/explain", { text: $("editor").value, key });
  $("explain-out").textContent = r.ok ? r.text : (r.refused || (r.lines || []).join("\n"));
});

// -- running ------------------------------------------------------------------------------------
const ENDED = ["done", "cancelled", "failed"];
function showProgress(s) {
  // A snapshot taken earlier (the cancel request's answer can arrive after the stream's last event)
  // never replaces the end of the same merge.
  const shown = ui.shown;
  if (shown && shown.id === s.id && ENDED.includes(shown.state) && !ENDED.includes(s.state)) return;
  ui.shown = s;
  $("progress").value = s.percent;
  $("percent").textContent = `${s.percent} %`;
  const left = s.seconds_left === null ? "" : ` · ${s.seconds_left} s left`;
  const what = s.state === "planning" ? "planning…" : `${s.keys}/${s.total_keys} keys · ${s.mb_per_s} MB/s${left}`;
  $("progress-text").textContent = what + (s.cancelling ? " — cancelling…" : "") +
    (s.state === "done" ? " · done" : s.state === "cancelled" ? " · cancelled" : s.state === "failed" ? " · failed" : "");
  $("summary").textContent = s.lines.join("\n");
  document.body.dataset.runState = s.state;
}

async function startRun(body) {
  const r = await api("/api/run", body);
  showTab("run");
  $("provenance-out").hidden = true;
  if (!r.ok) {
    $("progress-text").textContent = "✗ " + (r.refused || "the recipe does not check");
    $("summary").textContent = (r.lines || []).join("\n");
    return;
  }
  follow(r.job);
}

function follow(job) {
  ui.job = job;
  $("cancel").disabled = false; $("merge").disabled = true; $("provenance").disabled = true;
  showProgress(job);
  const es = new EventSource(`/api/run/${job.id}/events`);
  const onEvent = (e) => { ui.job = JSON.parse(e.data); showProgress(ui.job); };
  es.addEventListener("progress", onEvent);
  es.addEventListener("done", (e) => {
    onEvent(e); es.close();
    ui.job.finished = true;
    $("cancel").disabled = true;
    ui.lastOutput = ui.job.outputs[0] || null;
    $("provenance").disabled = !ui.lastOutput;
    refreshModels();
    formChanged(true);  // the output may exist now
  });
  es.onerror = () => { if (ui.job && !ui.job.finished) $("progress-text").textContent += " (connection lost)"; };
}

$("merge").addEventListener("click", () => startRun({ form: collect() }));
$("editor-run").addEventListener("click", () => startRun({ text: $("editor").value, overwrite: $("editor-overwrite").checked }));
$("cancel").addEventListener("click", async () => {
  if (!ui.job) return;
  const r = await api(`/api/run/${ui.job.id}/cancel`, {});
  if (r.job) showProgress(r.job);
});
$("provenance").addEventListener("click", async () => {
  if (!ui.lastOutput) return;
  const r = await api("/api/provenance?name=" + encodeURIComponent(ui.lastOutput));
  const out = $("provenance-out");
  out.hidden = false;
  out.textContent = r.refused ? "✗ " + r.refused
    : `${r.name} (mechalang ${r.version})\ninputs:\n` + r.inputs.map((i) => `  ${i.name}: ${i.file} [${i.arch}]`).join("\n") +
      `\nrecipe:\n${r.recipe}`;
  out.focus();
});

async function refreshModels() {
  const r = await api("/api/models");
  if (!r.models) return;
  const tbody = $("models-table").tBodies[0];
  tbody.textContent = "";
  for (const m of r.models) {
    const tr = tbody.insertRow();
    for (const v of [m.name, m.arch + (m.confident ? "" : "?"), m.kind === "adapter" ? "LoRA (adapter)" : "model", m.size_text, m.hash]) {
      tr.insertCell().textContent = v;
    }
  }
  for (const slot of ["a", "b", "c"]) {
    const sel = $("model-" + slot);
    const keep = sel.value;
    sel.length = 1;
    for (const m of r.models) {
      if (m.problem) continue;
      const o = new Option(`${m.name} [${m.kind === "adapter" ? "LoRA" : m.arch}]`, m.name);
      o.dataset.arch = m.arch; o.dataset.kind = m.kind;
      sel.add(o);
    }
    sel.value = keep;
  }
}

// -- start --------------------------------------------------------------------------------------
(async () => {
  ui.methods = await api("/api/methods");
  renderHypers();
  setAlpha($("alpha").value);
  showTab("merge");
  gutter([]);
  const cur = await api("/api/run/current");  // a merge started from another tab, still running
  if (cur.id && !ENDED.includes(cur.state)) follow(cur);
  document.body.dataset.ready = "1";
})();
