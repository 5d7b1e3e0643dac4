// rulebridge playground page. Plain JavaScript, no dependencies, served from the binary.
//
// State: `disk` holds each file as last loaded or saved, `edits` the files whose editor
// text differs from it. Every edit (debounced) sends all edits and the sample to
// /api/eval; the answer's findings are underlined in the editor and listed. Answers
// carry a sequence number so a slow, stale one never overwrites a newer one.
"use strict";

const $ = (id) => document.getElementById(id);
const editor = $("editor");
const overlay = $("overlay");
const gutter = $("gutter");

const state = {
  files: [],
  samples: [],
  disk: {},
  edits: {},
  current: null,
  findings: [],
  seq: 0,
  shown: 0,
  timer: null,
};

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { data = { error: text }; }
  return { status: resp.status, data };
}

function escapeHtml(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

// ------------------------------------------------------------------ files

async function loadFiles() {
  const { status, data } = await api("/api/files");
  if (status !== 200) { setStatus(data.error || "cannot list the pack", false); return; }
  state.files = data.files.map((f) => f.path);
  state.samples = data.samples;
  $("pack-label").textContent = `${data.label} · version ${data.version}`;
  renderFileList();
  renderSampleChoices();
  const first = state.files.find((p) => p.endsWith(".rhai")) || state.files[0];
  if (first) await openFile(first);
}

function text(path) {
  return path in state.edits ? state.edits[path] : state.disk[path];
}

async function openFile(path) {
  if (!(path in state.disk)) {
    const { status, data } = await api(`/api/file?path=${encodeURIComponent(path)}`);
    if (status !== 200) { setStatus(data.error || `cannot open ${path}`, false); return; }
    state.disk[path] = data.text;
  }
  state.current = path;
  editor.value = text(path);
  editor.scrollTop = 0;
  editor.scrollLeft = 0;
  $("current-file").textContent = path;
  $("save").disabled = false;
  $("save-status").textContent = "";
  renderFileList();
  renderEditor();
}

function renderFileList() {
  const counts = {};
  for (const f of state.findings) if (f.rel) counts[f.rel] = (counts[f.rel] || 0) + 1;
  const ul = $("files");
  ul.innerHTML = "";
  for (const path of state.files) {
    const li = document.createElement("li");
    li.textContent = path;
    li.dataset.path = path;
    li.title = path;
    if (path === state.current) li.classList.add("current");
    if (path in state.edits) li.classList.add("edited");
    if (counts[path]) {
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = `(${counts[path]})`;
      li.appendChild(c);
    }
    li.addEventListener("click", () => openFile(path));
    ul.appendChild(li);
  }
  $("dirty").hidden = !(state.current in state.edits);
}

// ------------------------------------------------------------------ editor

// Character offset (UTF-16, as the textarea counts) of a 1-based line and a 1-based
// column counted in characters (code points), as rulebridge reports them.
function offsetOf(src, line, col) {
  let pos = 0;
  for (let l = 1; l < line; l++) {
    const nl = src.indexOf("\n", pos);
    if (nl < 0) return src.length;
    pos = nl + 1;
  }
  const end = src.indexOf("\n", pos) < 0 ? src.length : src.indexOf("\n", pos);
  let c = 1;
  while (c < (col || 1) && pos < end) {
    pos += src.codePointAt(pos) > 0xffff ? 2 : 1;
    c++;
  }
  return pos;
}

function lineEnd(src, pos) {
  const nl = src.indexOf("\n", pos);
  return nl < 0 ? src.length : nl;
}

// The span a finding underlines: its end position when it has one; else the word at its
// start; else the rest of the line; else one character.
function spanOf(src, f) {
  if (!f.line) return null;
  if (!f.col) {
    const start = offsetOf(src, f.line, 1);
    return [start, Math.max(lineEnd(src, start), start + 1)];
  }
  const start = offsetOf(src, f.line, f.col);
  if (f.end_line) {
    const end = offsetOf(src, f.end_line, f.end_col || 1);
    if (end > start) return [start, end];
  }
  let end = start;
  while (end < src.length && /[\w$]/.test(src[end])) end++;
  if (end === start) end = Math.min(lineEnd(src, start), start + 1);
  if (end === start) end = start + 1;
  return [start, end];
}

function isWarning(f) {
  return typeof f.severity === "string" && f.severity.toLowerCase().startsWith("warn");
}

function renderEditor() {
  const src = editor.value;
  const lines = src.split("\n").length;
  const here = state.findings.filter((f) => f.rel === state.current && f.line);
  const badLines = {};
  for (const f of here) {
    const kind = isWarning(f) ? "warn" : "bad";
    if (badLines[f.line] !== "bad") badLines[f.line] = kind;
  }
  let g = "";
  for (let i = 1; i <= lines; i++) {
    g += badLines[i] ? `<span class="${badLines[i]}" data-line="${i}">${i}</span>\n` : `${i}\n`;
  }
  gutter.innerHTML = g;

  const spans = here
    .map((f) => ({ f, span: spanOf(src, f) }))
    .filter((s) => s.span)
    .sort((a, b) => a.span[0] - b.span[0]);
  let html = "";
  let pos = 0;
  for (const { f, span } of spans) {
    const [start, end] = span;
    if (start < pos) continue; // overlapping spans: the first one is drawn
    html += escapeHtml(src.slice(pos, start));
    // A mark past the end of a line (a missing token) underlines a space.
    const body = src.slice(start, end).replace(/\n/g, " ") || " ";
    const cls = isWarning(f) ? "mark warning" : "mark";
    html += `<span class="${cls}" data-line="${f.line}" data-col="${f.col || ""}">${escapeHtml(body)}</span>`;
    pos = Math.max(end, start);
  }
  html += escapeHtml(src.slice(pos)) + " \n";
  overlay.innerHTML = html;
  syncScroll();
}

function syncScroll() {
  overlay.scrollTop = editor.scrollTop;
  overlay.scrollLeft = editor.scrollLeft;
  gutter.scrollTop = editor.scrollTop;
}

function jumpTo(f) {
  const go = () => {
    if (!f.line) { editor.focus(); return; }
    const src = editor.value;
    const [start, end] = spanOf(src, f) || [0, 0];
    editor.focus();
    editor.setSelectionRange(start, end);
    const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 18;
    editor.scrollTop = Math.max(0, (f.line - 5) * lineHeight);
    syncScroll();
  };
  if (f.rel && f.rel !== state.current && state.files.includes(f.rel)) {
    openFile(f.rel).then(go);
  } else {
    go();
  }
}

editor.addEventListener("input", () => {
  const path = state.current;
  if (path === null) return;
  if (editor.value === state.disk[path]) delete state.edits[path];
  else state.edits[path] = editor.value;
  renderFileList();
  renderEditor();
  schedule();
});
editor.addEventListener("scroll", syncScroll);
editor.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
  if (e.key === "Tab" && !e.shiftKey) {
    e.preventDefault();
    document.execCommand("insertText", false, "    ");
  }
});

// ------------------------------------------------------------------ sample

function renderSampleChoices() {
  const sel = $("sample-source");
  sel.innerHTML = "";
  const add = (value, label) => {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    sel.appendChild(o);
  };
  for (const s of state.samples) add(`pack:${s}`, s);
  add("generated", "the emulator's generator");
  add("pasted", "pasted JSON");
  showSampleInputs();
}

function showSampleInputs() {
  const v = $("sample-source").value;
  $("seed-row").hidden = v !== "generated";
  $("pasted").hidden = v !== "pasted";
}

function sample() {
  const v = $("sample-source").value;
  if (v === "generated") return { generated: Number($("seed").value) || 0 };
  if (v === "pasted") return { pasted: $("pasted").value };
  return { pack: v.replace(/^pack:/, "") };
}

for (const id of ["sample-source", "seed", "pasted", "linked"]) {
  $(id).addEventListener("input", () => { showSampleInputs(); schedule(); });
  $(id).addEventListener("change", () => { showSampleInputs(); schedule(); });
}

// ------------------------------------------------------------------ evaluation

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(evaluate, 250);
}

async function evaluate() {
  const seq = ++state.seq;
  document.body.dataset.pending = String(seq);
  const { status, data } = await api("/api/eval", {
    edits: state.edits,
    sample: sample(),
    linked: $("linked").checked,
  });
  if (seq < state.shown) return;
  state.shown = seq;
  if (status !== 200) {
    state.findings = [];
    setStatus(data.error || `evaluation failed (HTTP ${status})`, false);
    showOutput(data.error || "", true);
  } else {
    showReport(data);
  }
  document.body.dataset.evaluated = String(seq);
}

function showReport(r) {
  state.findings = r.findings || [];
  const n = state.findings.length;
  if (!r.built) setStatus(`the pack does not build: ${n} problem${n === 1 ? "" : "s"}`, false);
  else if (r.error) setStatus("the pack builds; the sample fails", false);
  else setStatus(`the pack builds · version ${r.version}`, true);
  renderFindings();
  renderFileList();
  renderEditor();
  $("source").textContent = r.source ? `(the sample read as a ${r.source} incident)` : "";
  if (r.sample_error) showOutput(r.sample_error, true);
  else if (!r.built) showOutput("(the pack does not build; see the findings)", true);
  else if (r.error) showOutput(describeError(r.error), true);
  else if (r.outcome && r.outcome.verdict === "filtered") showOutput(`filtered out by rule '${r.outcome.rule}' (not synced)`, false);
  else if (r.outcome) showOutput(JSON.stringify(r.outcome.body, null, 2), false);
  renderSteps(r.outcome ? r.outcome.steps : []);
}

function describeError(e) {
  let where = e.file ? `${e.file}${e.line ? `:${e.line}` : ""}${e.col ? `:${e.col}` : ""}: ` : "";
  return `${where}${e.rule ? `rule '${e.rule}' (${e.stage}): ` : ""}${e.pointer ? `${e.pointer}: ` : ""}${e.message}`;
}

function showOutput(textValue, isError) {
  const out = $("output");
  out.textContent = textValue;
  out.classList.toggle("error", !!isError);
}

function renderSteps(steps) {
  const ol = $("steps");
  ol.innerHTML = "";
  for (const s of steps || []) {
    const li = document.createElement("li");
    const head = document.createElement("div");
    head.innerHTML = `<span class="rule">${escapeHtml(s.rule)}</span> (${escapeHtml(String(s.stage))}) `
      + (s.result !== undefined ? `→ ${escapeHtml(String(s.result))} ` : "")
      + (s.changed && s.changed.length ? `changed: ${escapeHtml(s.changed.join(", "))}` : "");
    li.appendChild(head);
    if (s.document !== undefined) {
      const d = document.createElement("details");
      d.innerHTML = `<summary>document after this rule</summary><pre>${escapeHtml(JSON.stringify(s.document, null, 2))}</pre>`;
      li.appendChild(d);
    }
    ol.appendChild(li);
  }
}

// Every field a finding serializes is shown; unknown extra fields too, so what the
// server adds later is never hidden.
const SHOWN = new Set(["file", "line", "col", "end_line", "end_col", "pointer", "message", "code", "severity", "hint", "rel", "origin"]);

function renderFindings() {
  const ul = $("findings");
  ul.innerHTML = "";
  $("finding-count").textContent = state.findings.length ? `(${state.findings.length})` : "";
  if (!state.findings.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "no problems";
    ul.appendChild(li);
    return;
  }
  for (const f of state.findings) {
    const li = document.createElement("li");
    if (isWarning(f)) li.classList.add("warning");
    li.dataset.rel = f.rel || "";
    li.dataset.line = f.line || "";
    let where = f.file;
    if (f.line) where += `:${f.line}`;
    if (f.line && f.col) where += `:${f.col}`;
    if (f.end_line) where += `–${f.end_line}:${f.end_col || ""}`;
    let html = `<div class="where">${escapeHtml(where)} <em>(${escapeHtml(f.origin || "")})</em></div><div>`;
    if (f.severity) html += `<span class="severity">${escapeHtml(String(f.severity))}</span>`;
    if (f.code) html += `<span class="code">${escapeHtml(String(f.code))}</span>`;
    if (f.pointer) html += `<span class="pointer">${escapeHtml(f.pointer)}</span>: `;
    html += `<span class="message">${escapeHtml(f.message)}</span></div>`;
    if (f.hint) html += `<div class="hint">hint: ${escapeHtml(String(f.hint))}</div>`;
    for (const [k, v] of Object.entries(f)) {
      if (!SHOWN.has(k) && v !== null && v !== undefined) {
        html += `<div class="extra">${escapeHtml(k)}: ${escapeHtml(typeof v === "string" ? v : JSON.stringify(v))}</div>`;
      }
    }
    li.innerHTML = html;
    li.addEventListener("click", () => jumpTo(f));
    ul.appendChild(li);
  }
}

function setStatus(msg, ok) {
  const s = $("status");
  s.textContent = msg;
  s.className = `status ${ok ? "ok" : "bad"}`;
}

// ------------------------------------------------------------------ save

async function save() {
  const path = state.current;
  if (path === null) return;
  const body = editor.value;
  const st = $("save-status");
  st.className = "";
  st.textContent = "checking the pack and running its tests…";
  const { status, data } = await api("/api/save", { path, text: body });
  if (status === 200 && data.saved) {
    state.disk[path] = body;
    if (editor.value === body) delete state.edits[path];
    st.className = "ok";
    st.textContent = `saved ${path} (pack version ${data.version})`;
    renderFileList();
  } else if (status === 422) {
    st.className = "bad";
    const why = (data.findings || []).map((f) => `${f.file}${f.line ? `:${f.line}` : ""}: ${f.message.split("\n")[0]}`);
    st.textContent = `not saved: the pack would not be accepted\n${why.join("\n")}`;
  } else {
    st.className = "bad";
    st.textContent = `not saved: ${data.error || `HTTP ${status}`}`;
  }
  document.body.dataset.saved = String((Number(document.body.dataset.saved) || 0) + 1);
}

$("save").addEventListener("click", save);

loadFiles().then(evaluate);
