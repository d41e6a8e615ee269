// The coder page: code a note through /v1/code, show evidence, review codes, export the accepted ones.
// Note text is only ever put into the page as text nodes (never as HTML), and never stored.
"use strict";

const state = {
  noteId: "note",
  text: "",
  result: null, // the /v1/code response
  review: new Map(), // code key -> "accepted" | "rejected"
  selected: null, // code key whose evidence is highlighted
};

const $ = (id) => document.getElementById(id);

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = $("token").value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function setStatus(message, isError) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", Boolean(isError));
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
  } catch (e) {
    /* not JSON */
  }
  return response.statusText || "request failed";
}

async function loadModelInfo() {
  try {
    const r = await fetch("/v1/model?include_codes=false", { headers: headers(false) });
    if (r.status === 401) {
      $("model-info").textContent = "This server needs an access token: enter it under Settings.";
      $("settings").open = true;
      return;
    }
    if (!r.ok) throw new Error(await errorText(r));
    const info = await r.json();
    const f1 = info.dev_metrics && info.dev_metrics.f1_micro;
    $("model-info").textContent =
      `model ${info.name} · ${info.n_codes.toLocaleString()} codes` +
      (info.dataset ? ` · trained on ${info.dataset}` : "") +
      (typeof f1 === "number" ? ` · dev micro-F1 ${f1.toFixed(3)}` : "");
  } catch (e) {
    $("model-info").textContent = "model information unavailable: " + e.message;
  }
}

async function suggest() {
  const text = $("note").value;
  if (!text.trim()) {
    setStatus("Paste or drop a note first.", true);
    return;
  }
  const topK = Math.max(1, Math.min(200, parseInt($("top-k").value, 10) || 15));
  $("suggest").disabled = true;
  setStatus("Coding…");
  try {
    const r = await fetch("/v1/code", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify({ text: text, id: state.noteId, top_k: topK, evidence: true }),
    });
    if (!r.ok) {
      const reason = await errorText(r);
      setStatus(`The server refused the note (${r.status}): ${reason}`, true);
      if (r.status === 401) $("settings").open = true;
      return;
    }
    state.result = await r.json();
    state.text = text;
    state.review = new Map();
    state.selected = null;
    renderCodes();
    const first = state.result.codes.find((c) => c.evidence.length) || state.result.codes[0];
    selectCode(first ? first.key : null);
    showView(true);
    const n = state.result.codes.filter((c) => c.decision).length;
    if (state.result.status === "nothing_recognisable") {
      // no word the model knows: it has nothing to base a code on, so it suggests none
      setStatus("Nothing recognisable: the note has no word this model knows, so no code is suggested.", true);
      return;
    }
    setStatus(
      `${state.result.n_tokens.toLocaleString()} words read` +
        (state.result.truncated ? " (the note was cut to the model's limit)" : "") +
        (state.result.status === "near_empty"
          ? ` · only ${state.result.n_known_tokens} known word${state.result.n_known_tokens === 1 ? "" : "s"}: ` +
            "probabilities held at each code's training frequency"
          : "") +
        ` · ${n} code${n === 1 ? "" : "s"} above threshold.`
    );
  } catch (e) {
    setStatus("Could not reach the server: " + e.message, true);
  } finally {
    $("suggest").disabled = false;
  }
}

function showView(viewing) {
  $("drop-zone").hidden = viewing;
  $("note-view").hidden = !viewing;
  $("edit").hidden = !viewing;
}

function renderCodes() {
  const tbody = $("codes").querySelector("tbody");
  tbody.replaceChildren();
  const codes = state.result ? state.result.codes : [];
  codes.forEach((c, i) => {
    const tr = document.createElement("tr");
    tr.dataset.key = c.key;
    tr.className = "code-row" + (c.decision ? " decided" : "");
    tr.addEventListener("click", (ev) => {
      if (!ev.target.closest(".review")) selectCode(c.key);
    });

    const rank = document.createElement("td");
    rank.textContent = String(i + 1);

    const codeTd = document.createElement("td");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "code-btn";
    btn.textContent = c.code;
    btn.title = `${c.key}: show evidence`;
    codeTd.append(btn);
    if (c.decision) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "suggested";
      codeTd.append(badge);
    }
    // Every evidence phrase negated, uncertain or about a relative: say so, the model cannot. (Historical
    // phrases are marked in the evidence list only: a past history is often still coded.)
    const contexts = new Set(c.evidence.map((s) => (s.context === "historical" ? "" : s.context || "")));
    if (c.evidence.length && !contexts.has("")) {
      const warn = document.createElement("span");
      warn.className = "badge context";
      warn.textContent = [...contexts].join(", ");
      warn.title = "All of this code's evidence is in that context (e.g. 'No metastases'): check before accepting.";
      codeTd.append(warn);
    }

    const title = document.createElement("td");
    title.className = "title";
    title.textContent = c.title || "(no title)";
    const sys = document.createElement("span");
    sys.className = "system";
    sys.textContent = c.system;
    title.append(" ", sys);

    const prob = document.createElement("td");
    prob.className = "prob";
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.round(c.probability * 100)}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(c.probability * 100).toFixed(1)}%`;
    prob.append(bar, pct);

    const review = document.createElement("td");
    review.className = "review";
    for (const [verdict, label, symbol] of [
      ["accepted", "Accept", "✓"],
      ["rejected", "Reject", "✗"],
    ]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `verdict ${verdict}`;
      b.textContent = symbol;
      b.title = `${label} ${c.code}`;
      b.setAttribute("aria-label", `${label} ${c.code}`);
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", () => setVerdict(c.key, verdict));
      review.append(b);
    }
    tr.append(rank, codeTd, title, prob, review);
    tbody.append(tr);
  });
  $("codes").hidden = codes.length === 0;
  $("accept-suggested").disabled = codes.length === 0;
  updateReview();
}

function setVerdict(key, verdict) {
  if (state.review.get(key) === verdict) state.review.delete(key);
  else state.review.set(key, verdict);
  updateReview();
}

function updateReview() {
  for (const tr of $("codes").querySelectorAll("tbody tr")) {
    const v = state.review.get(tr.dataset.key);
    tr.classList.toggle("is-accepted", v === "accepted");
    tr.classList.toggle("is-rejected", v === "rejected");
    tr.querySelector(".verdict.accepted").setAttribute("aria-pressed", String(v === "accepted"));
    tr.querySelector(".verdict.rejected").setAttribute("aria-pressed", String(v === "rejected"));
  }
  const accepted = acceptedCodes();
  const rejected = [...state.review.values()].filter((v) => v === "rejected").length;
  const total = state.result ? state.result.codes.length : 0;
  $("summary").textContent = total
    ? `${accepted.length} accepted · ${rejected} rejected · ${total - accepted.length - rejected} to review`
    : "No note coded yet.";
  $("export-json").disabled = accepted.length === 0;
  $("export-csv").disabled = accepted.length === 0;
}

function acceptedCodes() {
  if (!state.result) return [];
  return state.result.codes.filter((c) => state.review.get(c.key) === "accepted");
}

function selectCode(key) {
  state.selected = key;
  for (const tr of $("codes").querySelectorAll("tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.key === key);
  }
  const code = state.result && state.result.codes.find((c) => c.key === key);
  renderNote(code ? code.evidence : []);
  renderEvidenceList(code);
}

// The API's offsets count Unicode code points (Python); JavaScript strings index UTF-16 units. They differ
// only after a character outside the BMP (an emoji, a rare CJK character): map offsets when there is one.
function codePointToUtf16(text) {
  if (!/[\uD800-\uDFFF]/.test(text)) return (i) => i;
  const units = [0];
  for (const ch of text) units.push(units[units.length - 1] + ch.length);
  return (i) => units[Math.min(i, units.length - 1)];
}

// The note as text nodes with <mark> around the evidence spans (merged when they overlap); the phrase
// holding the strongest evidence is marked "top".
function renderNote(spans) {
  const view = $("note-view");
  view.replaceChildren();
  const text = state.text;
  const at = codePointToUtf16(text);
  const sorted = spans
    .map((s, i) => [at(Math.max(0, s.start)), Math.min(text.length, at(s.end)), i === 0])
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  const merged = [];
  for (const [a, b, top] of sorted) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) {
      last[1] = Math.max(last[1], b);
      last[2] = last[2] || top;
    } else merged.push([a, b, top]);
  }
  let pos = 0;
  let topMark = null;
  for (const [a, b, top] of merged) {
    if (a > pos) view.append(document.createTextNode(text.slice(pos, a)));
    const mark = document.createElement("mark");
    mark.className = top ? "evidence top" : "evidence";
    mark.textContent = text.slice(a, b);
    view.append(mark);
    if (top) topMark = mark;
    pos = b;
  }
  if (pos < text.length) view.append(document.createTextNode(text.slice(pos)));
  // Scroll the note (not the page) so the strongest phrase sits in the middle.
  if (topMark) view.scrollTop = Math.max(0, topMark.offsetTop - view.clientHeight / 2);
}

function renderEvidenceList(code) {
  const box = $("evidence-list");
  box.replaceChildren();
  if (!code) return;
  const h = document.createElement("h3");
  h.textContent = `Evidence for ${code.code}`;
  box.append(h);
  if (!code.evidence.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "This model gave no evidence for this code.";
    box.append(p);
    return;
  }
  const ol = document.createElement("ol");
  for (const s of code.evidence) {
    const li = document.createElement("li");
    li.textContent = `“${s.text}”`;
    if (s.context) {
      const ctx = document.createElement("span");
      ctx.className = "badge context";
      ctx.textContent = s.context;
      li.append(" ", ctx);
    }
    const w = document.createElement("span");
    w.className = "muted";
    w.textContent = ` characters ${s.start}–${s.end}`;
    li.append(w);
    ol.append(li);
  }
  box.append(ol);
}

function csvCell(value) {
  const s = String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportData(kind) {
  const codes = acceptedCodes();
  const rows = codes.map((c) => ({
    note_id: state.result.id,
    key: c.key,
    system: c.system,
    code: c.code,
    title: c.title,
    probability: c.probability,
    suggested: c.decision,
  }));
  if (kind === "json") return JSON.stringify({ note_id: state.result.id, accepted: rows }, null, 2) + "\n";
  const cols = ["note_id", "key", "system", "code", "title", "probability", "suggested"];
  return [cols.join(","), ...rows.map((r) => cols.map((k) => csvCell(r[k])).join(","))].join("\r\n") + "\r\n";
}

function download(kind) {
  const content = exportData(kind);
  const type = kind === "json" ? "application/json" : "text/csv";
  const url = URL.createObjectURL(new Blob([content], { type: type + ";charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `accepted_codes.${kind}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  setStatus(`Exported ${acceptedCodes().length} accepted code(s) as ${kind.toUpperCase()}.`);
}

function readDroppedFile(file) {
  if (file.size > 2 * 1024 * 1024) {
    setStatus("That file is larger than 2 MB; is it really a note?", true);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const bytes = new Uint8Array(reader.result);
    if (bytes.includes(0)) {
      setStatus(`${file.name} looks binary (it contains NUL bytes); drop a plain-text note.`, true);
      return;
    }
    let text;
    try {
      // fatal: a wrong encoding is an error, not a note silently full of replacement characters
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch (e) {
      setStatus(`${file.name} is not valid UTF-8 text; save it as UTF-8 and drop it again.`, true);
      return;
    }
    if (!text.trim()) {
      setStatus(`${file.name} is empty.`, true);
      return;
    }
    $("note").value = text.replace(/^\uFEFF/, "");
    state.noteId = file.name.replace(/\.[^.]*$/, "") || "note";
    showView(false);
    setStatus(`Loaded ${file.name}. Press “Suggest codes”.`);
  };
  reader.onerror = () => setStatus("Could not read that file.", true);
  reader.readAsArrayBuffer(file);
}

function init() {
  $("suggest").addEventListener("click", suggest);
  $("edit").addEventListener("click", () => showView(false));
  $("clear").addEventListener("click", () => {
    $("note").value = "";
    state.result = null;
    state.text = "";
    state.noteId = "note";
    state.review = new Map();
    renderCodes();
    renderEvidenceList(null);
    showView(false);
    setStatus("");
  });
  $("note").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) suggest();
  });
  $("accept-suggested").addEventListener("click", () => {
    if (!state.result) return;
    for (const c of state.result.codes) if (c.decision) state.review.set(c.key, "accepted");
    updateReview();
  });
  $("export-json").addEventListener("click", () => download("json"));
  $("export-csv").addEventListener("click", () => download("csv"));
  const zone = document.body;
  zone.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    $("drop-zone").classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => $("drop-zone").classList.remove("dragging"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("drop-zone").classList.remove("dragging");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) readDroppedFile(file);
  });
  $("token").addEventListener("change", loadModelInfo);
  loadModelInfo();
}

// For tests and power users: what the export buttons would write.
window.icdcoderExport = exportData;
document.addEventListener("DOMContentLoaded", init);
