// The dashboard's one page: plain HTML, CSS and JavaScript with no outside
// resources (it works on a coordinator without internet access). It reads
// /api/jobs and /api/sites, and follows the selected job over
// /api/jobs/{id}/stream (Server-Sent Events), re-rendering without a reload.
// For tests and curious readers, <body> carries data-updates (status
// messages applied since the page loaded), data-first-rounds-done and
// data-rounds-done.
#pragma once

namespace fedtune::coordinator {

inline const char* DashboardPage() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fedtune dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d232b; }
  h1 { font-size: 1.4em; margin: 0 0 .6em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; } td, th { border: 1px solid #c9d0d8; padding: .25em .5em; text-align: left; }
  th { background: #eef2f6; } tr.selected { background: #fff6d6; } a { color: #1f5fa8; }
  .state { font-weight: 600; } .accepted, .aggregated, .succeeded { color: #1d7a34; }
  .refused, .failed, .timed_out, .cancelled { color: #b3261e; } .running, .dispatched { color: #8a5a00; }
  .muted { color: #6b7580; } svg { border: 1px solid #c9d0d8; background: #fbfcfd; }
  #events { max-height: 18em; overflow: auto; font-family: ui-monospace, monospace; font-size: 12px; }
</style>
</head>
<body data-updates="0">
<h1>fedtune: federation dashboard</h1>
<section>
  <h2>Jobs</h2>
  <table><thead><tr><th>job</th><th>name</th><th>state</th><th>rounds</th><th>submitted</th></tr></thead>
  <tbody id="jobs"><tr><td colspan="5" class="muted">loading...</td></tr></tbody></table>
</section>
<section id="job" hidden>
  <h2>Job <span id="job-id"></span>: <span id="job-name"></span>
    (<span id="job-state" class="state"></span>, round <span id="job-rounds"></span>)
    <span id="live" class="muted"></span></h2>
  <p id="job-reason" class="muted"></p>
  <p><a id="report-link" hidden>cross-institution report</a></p>
  <h2>Rounds x sites</h2>
  <table id="grid"></table>
  <h2>Validation AUROC per round (mean over sites)</h2>
  <svg id="chart" width="640" height="220" viewBox="0 0 640 220" role="img" aria-label="validation AUROC per round"></svg>
  <h2>Privacy budget</h2>
  <p id="privacy"></p>
  <h2>Events</h2>
  <ol id="events" reversed></ol>
</section>
<section>
  <h2>Sites</h2>
  <table><thead><tr><th>site</th><th>connected</th><th>last seen</th><th>device</th><th>backbone</th>
    <th>images train / val / test</th></tr></thead><tbody id="sites"></tbody></table>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const stateName = (s) => String(s || "").replace(/^JOB_STATE_/, "").toLowerCase();
const fmt = (x, d) => (x === undefined || x === null || Number.isNaN(Number(x))) ? "" : Number(x).toFixed(d);
const ago = (ms) => { const s = Math.round((Date.now() - Number(ms)) / 1000); return Number(ms) ? (s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago") : "never"; };
let selected = null, source = null, progress = {}, events = [];

async function loadJobs() {
  const jobs = await (await fetch("/api/jobs")).json();
  const body = $("jobs"); body.textContent = "";
  if (!jobs.length) { body.append(Object.assign(el("tr"), { innerHTML: "<td colspan=5 class=muted>no jobs yet</td>" })); return; }
  jobs.sort((a, b) => Number(b.created_unix_ms) - Number(a.created_unix_ms));
  for (const j of jobs) {
    const tr = el("tr"); tr.dataset.job = j.job_id; if (j.job_id === selected) tr.className = "selected";
    const a = el("a", j.job_id); a.href = "#job=" + j.job_id; const td = el("td"); td.append(a); tr.append(td);
    tr.append(el("td", j.name), el("td", stateName(j.state), "state " + stateName(j.state)),
              el("td", j.rounds_done + " / " + j.rounds_total), el("td", new Date(Number(j.created_unix_ms)).toLocaleString()));
    body.append(tr);
  }
  if (!selected) select(location.hash.startsWith("#job=") ? location.hash.slice(5) : jobs[0].job_id);
}

async function loadSites() {
  const sites = await (await fetch("/api/sites")).json();
  const body = $("sites"); body.textContent = "";
  for (const s of sites) {
    const splits = {}; for (const c of (s.dataset && s.dataset.splits) || []) splits[c.split] = c.images;
    const tr = el("tr"); tr.dataset.site = s.site_id;
    tr.append(el("td", s.site_id), el("td", s.connected ? "yes" : "no", s.connected ? "accepted" : "failed"),
              el("td", ago(s.last_seen_unix_ms)), el("td", s.device_name || ""),
              el("td", (s.backbone_sha256 || "").slice(0, 12)),
              el("td", ["train", "val", "test"].map((k) => splits[k] === undefined ? "-" : Number(splits[k]) < 0 ? "<k" : splits[k]).join(" / ")));
    body.append(tr);
  }
}

function select(id) {
  selected = id; progress = {}; events = []; $("events").textContent = "";
  if (source) source.close();
  document.body.dataset.updates = "0"; delete document.body.dataset.firstRoundsDone;
  $("job").hidden = false; $("job-id").textContent = id;
  for (const tr of $("jobs").children) tr.className = tr.dataset.job === id ? "selected" : "";
  source = new EventSource("/api/jobs/" + encodeURIComponent(id) + "/stream");
  $("live").textContent = "(live)";
  source.addEventListener("status", (m) => { render(JSON.parse(m.data)); document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1); });
  source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
  source.addEventListener("end", () => { source.close(); $("live").textContent = "(finished)"; loadJobs(); });
}

function addEvent(e) {
  if (e.kind === "progress") progress[e.round + "/" + e.site_id] = e;
  const li = el("li", new Date(Number(e.unix_ms)).toLocaleTimeString() + "  round " + e.round +
                (e.site_id ? "  " + e.site_id : "") + "  " + e.kind + (e.message ? ": " + e.message : ""));
  li.dataset.kind = e.kind;
  $("events").prepend(li);
  while ($("events").children.length > 200) $("events").lastChild.remove();
}

function render(job) {
  const state = stateName(job.state);
  $("job-name").textContent = job.name; $("job-state").textContent = state; $("job-state").className = "state " + state;
  $("job-rounds").textContent = job.rounds_done + " of " + job.rounds_total;
  for (const tr of $("jobs").children) {
    if (tr.dataset.job === job.job_id && tr.children.length >= 4) {
      tr.children[2].textContent = state; tr.children[2].className = "state " + state;
      tr.children[3].textContent = job.rounds_done + " / " + job.rounds_total;
    }
  }
  $("job-reason").textContent = job.reason || "";
  if (document.body.dataset.firstRoundsDone === undefined) document.body.dataset.firstRoundsDone = String(job.rounds_done);
  document.body.dataset.roundsDone = String(job.rounds_done);
  const link = $("report-link");
  link.hidden = state !== "succeeded"; link.href = "/jobs/" + encodeURIComponent(job.job_id) + "/report.html";
  const dp = job.privacy;
  if (dp && dp.mechanism) {
    const fmt = (x) => Number(x).toPrecision(3);
    $("privacy").textContent = dp.mechanism + ": epsilon " + fmt(dp.epsilon_spent) + " spent after " +
        dp.rounds_accounted + " round" + (dp.rounds_accounted === 1 ? "" : "s") + ", " + fmt(dp.epsilon_planned) +
        " when all rounds are done (delta " + dp.delta + "; noise multiplier " + dp.noise_multiplier +
        ", clip norm " + dp.clip_norm + (dp.adaptive_clipping ? ", adaptive" : "") + ")" +
        (dp.max_epsilon > 0 ? "; the job's limit is " + dp.max_epsilon : "") + ".";
  } else {
    $("privacy").textContent = "This job has no differential-privacy budget: sites share updates and aggregate " +
        "metrics, with counts below each site's k withheld.";
  }
  // The grid: one row per round, one column per site that took part.
  const sites = [...new Set(job.rounds.flatMap((r) => r.sites.map((s) => s.site_id)))].sort();
  const grid = $("grid"); grid.textContent = "";
  const head = el("tr"); head.append(el("th", "round"), el("th", "state"));
  for (const s of sites) head.append(el("th", s));
  grid.append(head);
  const points = [];
  for (const r of job.rounds) {
    const tr = el("tr"); tr.dataset.round = r.round;
    tr.append(el("td", r.round + (r.kind === "evaluate" ? " (evaluation)" : "") + (r.attempt > 1 ? " try " + r.attempt : "")),
              el("td", r.state, "state " + r.state));
    const aurocs = [];
    for (const s of sites) {
      const res = r.sites.find((x) => x.site_id === s);
      const td = el("td"); td.dataset.site = s;
      if (res) {
        const p = progress[r.round + "/" + s];
        // Undefined AUROCs (a finding without both classes, or withheld below k) arrive as "NaN" or absent.
        const finite = (v) => v !== undefined && v !== null && Number.isFinite(Number(v));
        const val = res.val_after && finite(res.val_after.macro_auroc) ? res.val_after.macro_auroc : (p && finite(p.val_auroc) ? p.val_auroc : undefined);
        const loss = res.train_loss || (p ? p.loss : undefined);
        td.append(el("span", res.state, "state " + res.state));
        if (p && res.state === "dispatched") td.append(el("span", "  epoch " + p.epoch));
        if (loss) td.append(el("span", "  loss " + fmt(loss, 3)));
        if (val !== undefined && r.kind === "train") { td.append(el("span", "  AUROC " + fmt(val, 3))); if (res.state === "accepted") aurocs.push(Number(val)); }
        if (res.reason) td.title = res.reason;
      }
      tr.append(td);
    }
    grid.append(tr);
    if (r.kind === "train" && aurocs.length) {
      const mean = aurocs.reduce((a, b) => a + b, 0) / aurocs.length;
      tr.dataset.meanAuroc = mean.toFixed(4);
      points.push([r.round, mean]);
    }
  }
  chart(points, job.rounds_total);
}

function chart(points, total) {
  const svg = $("chart"); svg.textContent = "";
  const ns = "http://www.w3.org/2000/svg", W = 640, H = 220, L = 40, B = 24, T = 10, R = 10;
  const x = (r) => L + (W - L - R) * (total > 1 ? (r - 1) / (total - 1) : 0.5);
  const lo = 0.5, y = (v) => T + (H - T - B) * (1 - (Math.max(lo, v) - lo) / (1 - lo));
  const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.append(e); return e; };
  for (const v of [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]) { add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e8ee" }); add("text", { x: 4, y: y(v) + 4, "font-size": 11 }, v.toFixed(1)); }
  add("text", { x: W / 2, y: H - 4, "font-size": 11, "text-anchor": "middle" }, "round");
  if (!points.length) { add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7580" }, "no validation AUROC yet"); return; }
  add("polyline", { points: points.map(([r, v]) => x(r) + "," + y(v)).join(" "), fill: "none", stroke: "#1f5fa8", "stroke-width": 2 });
  for (const [r, v] of points) { const c = add("circle", { cx: x(r), cy: y(v), r: 3.5, fill: "#1f5fa8" }); c.dataset.round = r; c.dataset.auroc = v.toFixed(4); c.append(Object.assign(document.createElementNS(ns, "title"), { textContent: "round " + r + ": " + v.toFixed(3) })); }
}

window.addEventListener("hashchange", () => { if (location.hash.startsWith("#job=")) select(location.hash.slice(5)); });
loadJobs(); loadSites();
setInterval(loadSites, 10000); setInterval(loadJobs, 15000);
</script>
</body>
</html>
)HTML";
}

}  // namespace fedtune::coordinator
