// The Converge web page (SPEC §5): jobs, tools, and one job followed live. Plain JavaScript served by the
// binary itself; it talks only to this server's /v1 API, sends a token (when the server asks for one) as a
// bearer header from session storage, never in a URL, and builds the page with DOM calls (never innerHTML),
// so nothing a job or an agent wrote can become markup.
"use strict";

const TOKEN_KEY = "converge.token";
const TERMINAL = new Set(["converged", "budget_exhausted", "conflict", "invariant_violated", "agent_failed", "cancelled"]);
const LABELS = {
  queued: "queued", running: "running", waiting: "waiting for you", converged: "converged",
  budget_exhausted: "budget exhausted", conflict: "conflict", invariant_violated: "invariant violated",
  agent_failed: "agent failed", cancelled: "cancelled",
};

// What the browser test reads: the sequence numbers of the events applied, in order, and reconnections.
const debug = (window.convergeDebug = { applied: [], ignored: 0, connections: 0 });

// ---- DOM ------------------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function badge(status, text) {
  return el("span", { class: `badge s-${status}`, "data-status": status }, text || LABELS[status] || status);
}

function main(...children) {
  const m = document.getElementById("main");
  m.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return m;
}

function fmtFuel(n) {
  return Number(n || 0).toLocaleString("en");
}

function fmtTime(us) {
  return us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${us} µs`;
}

function fmtAge(ms) {
  if (ms < 10_000) return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

// ---- API ------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? `${body.error.message} (${status})` : `HTTP ${status}`);
    this.status = status;
    this.kind = body && body.error ? body.error.kind : undefined;
  }
}

let tokenWaiter = null;

function askToken() {
  if (tokenWaiter) return tokenWaiter;
  tokenWaiter = new Promise((resolve) => {
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    input.value = "";
    form.addEventListener(
      "submit",
      (e) => {
        e.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        dialog.close();
        tokenWaiter = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
  return tokenWaiter;
}

async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const r = await fetch(path, { ...opts, headers });
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken();
    return api(path, opts);
  }
  return r;
}

async function getJson(path, opts) {
  const r = await api(path, opts);
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function postJson(path, value) {
  return getJson(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(value) });
}

// ---- Jobs list ------------------------------------------------------------------------------------------

async function homePage() {
  document.title = "Jobs · Converge";
  const params = new URLSearchParams(location.search);
  const status = params.get("status") || "";
  const select = el(
    "select",
    { id: "status-filter", "aria-label": "Filter by status", onchange: (e) => {
      const q = e.target.value ? `?status=${encodeURIComponent(e.target.value)}` : "";
      history.replaceState(null, "", `/ui/${q}`);
      homePage();
    } },
    el("option", { value: "" }, "every status"),
    Object.keys(LABELS).map((s) => el("option", { value: s, selected: s === status }, LABELS[s])),
  );
  const tbody = el("tbody");
  const tools = el("div");
  main(
    el("h1", {}, "Jobs"),
    el("div", { class: "toolbar" }, select),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "Status"), el("th", { class: "opt" }, "Goal"),
        el("th", {}, "Cycles"), el("th", {}, "Age"))),
      tbody),
    el("h2", {}, "Tools"),
    tools,
  );
  const fill = async () => {
    const page = await getJson(`/v1/jobs?limit=100${status ? `&status=${encodeURIComponent(status)}` : ""}`);
    const now = Date.now();
    tbody.replaceChildren(
      ...(page.jobs.length ? page.jobs.map((j) => el("tr", { "data-job": j.id },
        el("td", {}, el("a", { href: `/ui/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id)),
        el("td", {}, badge(j.status)),
        el("td", { class: "opt" }, j.goal.length > 90 ? `${j.goal.slice(0, 90)}…` : j.goal),
        el("td", {}, j.cycles),
        el("td", {}, fmtAge(now - j.created_ms)),
      )) : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No jobs yet."))]),
    );
  };
  try {
    await fill();
    const listed = await getJson("/v1/tools");
    tools.replaceChildren(toolsTable(listed.tools));
  } catch (e) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "error" }, e.message)));
  }
  clearInterval(homePage.timer);
  homePage.timer = setInterval(() => fill().catch(() => {}), 5000);
}

// ---- Tools ----------------------------------------------------------------------------------------------

function toolsTable(tools) {
  if (!tools.length) return el("p", { class: "muted" }, "No tools.");
  return el("table", { id: "tools" },
    el("thead", {}, el("tr", {}, el("th", {}, "Tool"), el("th", {}, "Status"), el("th", {}, "Verdict"),
      el("th", { class: "opt" }, "Source"))),
    el("tbody", {}, tools.map((t) => el("tr", { "data-tool": t.id },
      el("td", {}, el("a", { href: `/ui/tools#${t.id}` }, t.name), el("div", { class: "muted" }, t.description)),
      el("td", {}, badge(t.status, t.callable ? `${t.status}, callable` : t.status)),
      el("td", {}, t.verdict ? badge(t.verdict) : el("span", { class: "muted" }, "trusted")),
      el("td", { class: "opt" }, t.source),
    ))),
  );
}

async function toolsPage() {
  document.title = "Tools · Converge";
  clearInterval(homePage.timer);
  const list = el("div");
  main(el("h1", {}, "Tools"), list);
  try {
    const listed = await getJson("/v1/tools");
    list.replaceChildren(...(listed.tools.length ? listed.tools.map(toolCard) : [el("p", { class: "muted" }, "No tools.")]));
    for (const r of listed.rejected_files || []) {
      list.append(el("div", { class: "card" }, el("b", {}, r.file), " did not load: ", el("span", { class: "error" }, r.reason)));
    }
    if (location.hash) document.getElementById(`tool-${location.hash.slice(1)}`)?.scrollIntoView();
  } catch (e) {
    list.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

function toolCard(t) {
  const history = el("div", { class: "muted" }, t.source === "submitted" ? "Loading the history…" : "");
  const card = el("section", { class: "card", id: `tool-${t.id}` },
    el("div", { class: "toolbar" }, el("b", {}, t.name), badge(t.status), t.verdict ? badge(t.verdict) : null,
      el("span", { class: "muted" }, t.source)),
    el("div", {}, t.description),
    el("div", { class: "mono muted" }, t.id),
    el("div", { class: "muted" }, `limits: fuel ${fmtFuel(t.limits.fuel)}, ${t.limits.memory_mb} MiB, ${t.limits.timeout_ms} ms`),
    t.reasons && t.reasons.length ? el("ul", {}, t.reasons.map((r) => el("li", {}, r))) : null,
    history,
  );
  if (t.source === "submitted") {
    getJson(`/v1/tools/${encodeURIComponent(t.id)}`).then((d) => {
      const attempts = d.history.filter((h) => h.entry.kind === "submitted");
      history.replaceChildren(
        el("div", {}, `${attempts.length} validation attempt${attempts.length === 1 ? "" : "s"}`),
        el("ol", { class: "trail" }, d.history.map((h) => el("li", {}, historyLine(h)))),
      );
    }).catch((e) => history.replaceChildren(el("span", { class: "error" }, e.message)));
    const decisions = t.status === "needs_review" ? ["approve", "reject"] : t.status === "accepted" ? ["revoke"] : [];
    if (decisions.length) card.append(reviewForm(t, decisions));
  }
  return card;
}

function historyLine(h) {
  const e = h.entry.data || {};
  const when = new Date(h.at_ms).toISOString().replace("T", " ").slice(0, 19);
  if (e.verdict) return `${when} — submitted: ${e.verdict}${e.reasons && e.reasons.length ? ` (${e.reasons.join("; ")})` : ""}, now ${e.status}`;
  if (e.decision) return `${when} — ${e.decision} by ${e.reviewer}${e.comment ? `: “${e.comment}”` : ""}, now ${e.status}`;
  return `${when} — ${JSON.stringify(e)}`;
}

function reviewForm(t, decisions) {
  const reviewer = el("input", { id: `reviewer-${t.id}`, placeholder: "Reviewer", required: true, maxlength: 128 });
  const comment = el("textarea", { id: `comment-${t.id}`, placeholder: "Comment", rows: 2, maxlength: 4096 });
  const message = el("div", { role: "status" });
  const send = async (decision) => {
    message.replaceChildren();
    if (!reviewer.value.trim()) {
      message.replaceChildren(el("span", { class: "error" }, "Say who decides."));
      return;
    }
    try {
      await postJson(`/v1/tools/${encodeURIComponent(t.id)}/review`, { decision, reviewer: reviewer.value, comment: comment.value });
      toolsPage();
    } catch (e) {
      message.replaceChildren(el("span", { class: "error" }, e.message));
    }
  };
  return el("div", { class: "review" },
    el("label", { for: `reviewer-${t.id}`, class: "muted" }, "Reviewer"), reviewer,
    comment,
    el("div", { class: "toolbar" }, decisions.map((d) => el("button", {
      type: "button", class: d === "approve" ? "" : "danger", onclick: () => send(d),
    }, d[0].toUpperCase() + d.slice(1)))),
    message,
  );
}

// ---- One job, live --------------------------------------------------------------------------------------

function jobPage(id) {
  document.title = `${id} · Converge`;
  clearInterval(homePage.timer);
  const job = {
    id, lastSeq: 0, status: "queued", cycles: new Map(), trail: [], result: null, createdAt: null, endedAt: null,
    conn: "connecting", retries: 0, error: null, facts: "", rendering: false,
  };
  debug.job = job;
  start(job);
}

async function start(job) {
  try {
    const trace = await getJson(`/v1/jobs/${encodeURIComponent(job.id)}/trace`);
    for (const e of trace.events) apply(job, e.seq, e.kind, e.data, e.at_ms);
    job.result = await getJson(`/v1/jobs/${encodeURIComponent(job.id)}`);
    job.status = job.result.status;
  } catch (e) {
    main(el("h1", {}, job.id), el("p", { class: "error" }, e.status === 404 ? "No such job." : e.message));
    return;
  }
  render(job);
  setInterval(() => renderHeader(job), 1000);
  follow(job);
}

// The event stream, read with fetch (an EventSource cannot send a bearer header), resumed after a drop from
// the last event applied by `Last-Event-ID`; an event already applied is ignored, so none is shown twice.
async function follow(job) {
  while (!TERMINAL.has(job.status)) {
    job.conn = job.retries ? "reconnecting" : "connecting";
    renderHeader(job);
    try {
      const headers = { Accept: "text/event-stream" };
      if (job.lastSeq) headers["Last-Event-ID"] = String(job.lastSeq);
      const r = await api(`/v1/jobs/${encodeURIComponent(job.id)}/events`, { headers, cache: "no-store" });
      if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
      debug.connections += 1;
      job.conn = "live";
      job.retries = 0;
      renderHeader(job);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          onBlock(job, block);
        }
      }
    } catch (e) {
      job.error = e instanceof ApiError ? e.message : null;
    }
    if (TERMINAL.has(job.status)) break;
    job.retries += 1;
    job.conn = "reconnecting";
    renderHeader(job);
    await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(job.retries, 5))));
  }
  job.conn = "ended";
  renderHeader(job);
}

function onBlock(job, block) {
  let kind = "message", id = null, data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "id") id = Number(value);
    else if (field === "data") data += (data ? "\n" : "") + value;
  }
  if (id === null || !data) return;
  let parsed;
  try {
    parsed = JSON.parse(data);
  } catch {
    return;
  }
  if (apply(job, id, kind, parsed, null)) scheduleRender(job);
}

// Fold one event into the page's state; false when it was applied already.
function apply(job, seq, kind, data, atMs) {
  if (seq <= job.lastSeq) {
    debug.ignored += 1;
    return false;
  }
  job.lastSeq = seq;
  debug.applied.push(seq);
  const at = atMs || Date.now();
  switch (kind) {
    case "created":
      job.createdAt = at;
      job.status = data.status || "queued";
      break;
    case "started":
      if (!TERMINAL.has(job.status)) job.status = "running";
      job.trail.push(`attempt ${data.attempt} started${data.owner ? ` on ${data.owner}` : ""}`);
      break;
    case "cycle":
      job.cycles.set(data.cycle, data);
      if (!TERMINAL.has(job.status)) job.status = data.status === "waiting" ? "waiting" : "running";
      break;
    case "answer":
      job.trail.push({ question: data.question });
      break;
    case "cancel_requested":
      job.trail.push("cancel requested");
      break;
    case "waiting":
      job.status = "waiting";
      refreshResult(job);
      break;
    case "end":
      job.status = data.status;
      job.endedAt = at;
      refreshResult(job);
      break;
    default:
      break;
  }
  return true;
}

async function refreshResult(job) {
  if (!job.result) return; // still loading: the first fetch gets it
  try {
    job.result = await getJson(`/v1/jobs/${encodeURIComponent(job.id)}`);
    if (TERMINAL.has(job.result.status) || job.result.status === "waiting") job.status = job.result.status;
    scheduleRender(job);
  } catch {
    // the next event or reconnection tries again
  }
}

function scheduleRender(job) {
  if (job.rendering) return;
  job.rendering = true;
  requestAnimationFrame(() => {
    job.rendering = false;
    render(job);
  });
}

function totalFuel(job) {
  let fuel = 0;
  for (const c of job.cycles.values()) for (const a of c.agents) fuel += a.fuel;
  return Math.max(fuel, job.result ? job.result.stats.fuel : 0);
}

function renderHeader(job) {
  const header = document.getElementById("job-header");
  if (!header) return;
  const end = job.endedAt || (TERMINAL.has(job.status) ? job.createdAt : null);
  const elapsed = job.createdAt ? (job.endedAt || (TERMINAL.has(job.status) ? end : Date.now())) - job.createdAt : 0;
  const failure = job.result && job.result.error ? job.result.error.message : null;
  const conn = { live: "live", connecting: "connecting", reconnecting: "reconnecting", ended: "ended" }[job.conn];
  header.replaceChildren(
    el("div", {}, el("dt", {}, "Status"), el("dd", { id: "job-status" }, badge(job.status))),
    el("div", {}, el("dt", {}, "Cycle"), el("dd", { id: "job-cycle" }, job.cycles.size ? Math.max(...job.cycles.keys()) : 0)),
    el("div", {}, el("dt", {}, "Elapsed"), el("dd", {}, fmtAge(elapsed))),
    el("div", {}, el("dt", {}, "Fuel"), el("dd", {}, fmtFuel(totalFuel(job)))),
    el("div", {}, el("dt", {}, "Live connection"), el("dd", { id: "job-connection" }, badge(job.conn === "ended" ? "ended" : job.conn, conn))),
  );
  if (failure) header.append(el("div", { class: "error", style: "grid-column: 1 / -1" }, failure));
}

function render(job) {
  const r = job.result;
  const header = el("dl", { class: "summary", id: "job-header" });
  const sections = [
    el("h1", {}, "Job ", el("span", { class: "mono" }, job.id)),
    header,
    questionsSection(job),
    el("h2", {}, "Cycles"),
    cyclesSection(job),
    el("h2", {}, "Facts"),
    factsSection(job),
    proposalsSection(job),
    diagnosticsSection(job),
    trailSection(job),
  ];
  const focused = document.activeElement && document.activeElement.id;
  const typed = focused ? document.getElementById(focused)?.value : undefined;
  main(...sections);
  if (focused && document.getElementById(focused)) {
    const f = document.getElementById(focused);
    if (typed !== undefined) f.value = typed;
    f.focus();
  }
  renderHeader(job);
  if (r) document.getElementById("main").dataset.status = job.status;
}

function questionsSection(job) {
  const open = job.result && job.status === "waiting" ? job.result.open_questions : [];
  if (!open.length) return null;
  return el("section", { id: "questions" }, el("h2", {}, "Waiting for you"), open.map((q) => {
    const inputId = `answer-${q.id}`;
    const input = el("input", { id: inputId, name: "answer", required: true, autocomplete: "off" });
    const message = el("div", { role: "status" });
    const form = el("form", { class: "card question", onsubmit: async (e) => {
      e.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        await postJson(`/v1/jobs/${encodeURIComponent(job.id)}/answers`, { question: q.id, answer: input.value });
        message.replaceChildren(el("span", { class: "muted" }, "Answered; the job goes on."));
      } catch (err) {
        message.replaceChildren(el("span", { class: "error" }, err.message));
        button.disabled = false;
      }
    } },
    el("label", { for: inputId }, q.prompt),
    el("div", { class: "row" }, input, el("button", { type: "submit" }, "Answer")),
    el("div", { class: "muted" }, `asked by ${q.agent}`),
    message);
    return form;
  }));
}

function cyclesSection(job) {
  if (!job.cycles.size) return el("p", { class: "muted" }, "No cycle yet.");
  const max = Math.max(1, ...[...job.cycles.values()].map((c) => c.inserted));
  return el("div", { id: "cycles" }, [...job.cycles.keys()].sort((a, b) => a - b).map((n) => {
    const c = job.cycles.get(n);
    return el("div", { class: "card cycle", "data-cycle": n },
      el("div", {}, el("div", { class: "n" }, `Cycle ${n}`), c.status !== "running" ? badge(c.status) : null),
      el("div", { class: "calls" }, c.agents.map((a) => {
        const outcome = typeof a.outcome === "string" ? a.outcome : Object.keys(a.outcome)[0];
        const detail = typeof a.outcome === "string" ? "" : ` (${Object.values(a.outcome)[0]})`;
        const bad = outcome !== "applied";
        return el("span", { class: `call${bad ? " bad" : ""}`, title: `${a.agent}: ${outcome}${detail}` },
          el("b", {}, a.agent), " ", badge(outcome, `${outcome}${detail}`), " ",
          el("span", { class: "muted" }, `${fmtFuel(a.fuel)} fuel · ${fmtTime(a.time_us)}`));
      })),
      el("div", { class: "added" }, el("div", {}, `+${c.inserted} facts`),
        el("div", { class: `bar${c.inserted ? "" : " zero"}`, style: `width: ${Math.round((100 * c.inserted) / max)}%` })),
    );
  }));
}

function factsSection(job) {
  // In the order they were added: by cycle, then key and id.
  const facts = (job.result ? job.result.facts : []).slice().sort((a, b) =>
    a.cycle - b.cycle || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const filter = el("input", { id: "fact-filter", placeholder: "Filter by key", "aria-label": "Filter facts by key", value: job.facts });
  const tbody = el("tbody");
  const fill = () => {
    job.facts = filter.value;
    const shown = facts.filter((f) => f.key.includes(filter.value.trim()));
    tbody.replaceChildren(...(shown.length ? shown.map((f) => el("tr", { "data-key": f.key },
      el("td", { class: "provenance" }, el("b", {}, `cycle ${f.cycle}`), el("div", { class: "muted" }, f.agent)),
      el("td", { class: "mono key" }, f.key, el("div", { class: "muted" }, f.id)),
      el("td", { class: "content" }, f.content.length > 300 ? `${f.content.slice(0, 300)}…` : f.content),
    )) : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, facts.length ? "No fact matches." : "No facts yet."))]));
  };
  filter.addEventListener("input", fill);
  fill();
  return el("div", { id: "facts", class: "facts" }, el("div", { class: "toolbar" }, filter,
    el("span", { class: "muted" }, `${facts.length} facts`)),
  el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Added in"), el("th", {}, "Key / id"), el("th", {}, "Content"))),
    tbody));
}

function proposalsSection(job) {
  const rows = [];
  for (const c of [...job.cycles.values()].sort((a, b) => a.cycle - b.cycle)) {
    for (const p of c.promoted || []) rows.push([c.cycle, p, "promoted"]);
    for (const p of c.rejected_proposals || []) rows.push([c.cycle, p, "rejected"]);
  }
  if (!rows.length) return null;
  return el("section", { id: "proposals" }, el("h2", {}, "Proposals"), el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Cycle"), el("th", {}, "Fact"), el("th", {}, "Agent"), el("th", {}, "Confidence"), el("th", {}, ""))),
    el("tbody", {}, rows.map(([n, p, what]) => el("tr", {},
      el("td", {}, n), el("td", { class: "mono" }, `${p.key} / ${p.id}`), el("td", {}, p.agent),
      el("td", {}, Number(p.confidence).toFixed(2)), el("td", {}, badge(what === "promoted" ? "applied" : "rejected", what)))))));
}

function diagnosticsSection(job) {
  const list = job.result ? job.result.diagnostics : [];
  if (!list.length) return null;
  return el("section", { id: "diagnostics" }, el("h2", {}, "Diagnostics"), list.map((d) => el("div", { class: "card" },
    el("div", { class: "toolbar" }, badge(d.kind === "conflict" ? "conflict" : "failed", d.kind), el("b", {}, d.agent),
      el("span", { class: "muted" }, `cycle ${d.cycle}`)),
    el("div", {}, d.message),
    d.conflict ? el("div", {},
      el("div", { class: "mono muted" }, `${d.conflict.key} / ${d.conflict.id}`),
      el("div", { class: "versions" },
        version("In the context", d.conflict.existing), version("Refused", d.conflict.incoming))) : null,
  )));
}

function version(title, v) {
  return el("div", {}, el("div", { class: "muted" }, `${title}: ${v.agent} @ cycle ${v.cycle}`), el("div", { class: "mono" }, v.content));
}

function trailSection(job) {
  if (!job.trail.length) return null;
  return el("section", { id: "trail" }, el("h2", {}, "Trail"), el("ul", { class: "trail" }, job.trail.map((t) =>
    el("li", {}, typeof t === "string" ? t : answerLine(job, t.question)))));
}

// An answer is the fact `answers/<question>` once the job has taken it in.
function answerLine(job, question) {
  const fact = job.result && job.result.facts.find((f) => f.key === "answers" && f.id === question);
  return ["answered ", el("span", { class: "mono" }, question), fact ? [": “", fact.content, "”"] : " (being taken in)"];
}

// ---- Route ----------------------------------------------------------------------------------------------

function route() {
  const m = location.pathname.match(/^\/ui\/jobs\/([^/]+)\/?$/);
  if (m) return jobPage(decodeURIComponent(m[1]));
  if (/^\/ui\/tools\/?$/.test(location.pathname)) return toolsPage();
  return homePage();
}

route();
