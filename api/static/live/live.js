// The live page: plain JavaScript, no build step. Data from the API with the login token
// (sessionStorage); the live feed read with fetch streaming, since EventSource cannot send
// an Authorization header. Data is only ever put in the page as text (never as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN = "gridread.token";
const state = {
  config: null, areas: [], feeders: [], area: null, meter: null, ranking: [],
  stream: null, lastId: null, curve: null, voltage: null, updates: 0,
};

// -- API ----------------------------------------------------------------------------------

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` } });
  if (r.status === 401) { signOut("session expired: sign in again"); throw new Error("401"); }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

const q = encodeURIComponent;
// a failed call is shown on the page (one line), not thrown into the console
const report = (e) => { if (String(e.message) !== "401") $("#status").textContent = `error: ${e.message}`; };
const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
const time = (iso) => new Date(iso).toLocaleString();

function cell(tr, text, cls) {
  const td = tr.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows, render) {
  tbody.replaceChildren();
  for (const row of rows) render(tbody.insertRow(), row);
  if (!rows.length) cell(tbody.insertRow(), "none").colSpan = 9;
}

// -- sign in / out --------------------------------------------------------------------------

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#login-error").textContent = "";
  const form = new FormData(e.target);
  const key = form.get("key").trim();
  form.delete("key");
  if (key) {  // an API key (e.g. the demo's) is sent as the bearer token itself
    const r = await fetch("/auth/me", { headers: { Authorization: `Bearer ${key}` } });
    if (!r.ok) { $("#login-error").textContent = "unknown API key"; return; }
    sessionStorage.setItem(TOKEN, key);
  } else {
    const r = await fetch("/auth/token", { method: "POST", body: new URLSearchParams(form) });
    if (!r.ok) { $("#login-error").textContent = "sign-in failed"; return; }
    sessionStorage.setItem(TOKEN, (await r.json()).access_token);
  }
  e.target.reset();
  start().catch(report);
});

$("#logout").addEventListener("click", () => signOut("signed out"));

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  if (state.stream) state.stream.abort();
  $("#main").hidden = true; $("#login").hidden = false; $("#logout").hidden = true;
  $("#status").textContent = message;
}

async function start() {
  $("#login").hidden = true; $("#main").hidden = false; $("#logout").hidden = false;
  const me = await api("/auth/me").catch(() => null);
  $("#status").textContent = me ? `signed in as ${me.name ?? me.user ?? ""}` : "signed in";
  state.config = await api("/live/config");
  [state.areas, state.feeders] = await Promise.all([api("/topology/areas"), api("/topology/feeders")]);
  const select = $("#area");
  select.replaceChildren(...state.areas.map((a) => new Option(a.name, a.name)));
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (state.areas.some((a) => a.name === wanted)) select.value = wanted;
  await chooseArea(select.value);
}

$("#area").addEventListener("change", (e) => { location.hash = q(e.target.value); chooseArea(e.target.value).catch(report); });
$("#meter").addEventListener("change", (e) => chooseMeter(e.target.value).catch(report));

// -- an area ------------------------------------------------------------------------------

async function chooseArea(name) {
  if (!name) return;
  state.area = name;
  $("#area-name").textContent = name;
  await loadArea();
  openStream(null);
}

async function loadArea() {
  const name = state.area;
  const members = (await api(`/topology/areas/${q(name)}/members`)).data;
  fill($("#values tbody"), members, (tr, m) => {
    tr.id = `row-${m.meter}`;
    tr.dataset.meter = m.meter;
    cell(tr, m.meter); cell(tr, m.role);
    cell(tr, "–", "num q-1.8.0"); cell(tr, "–", "num q-32.7.0"); cell(tr, "–", "at");
  });
  await Promise.all(members.map(async (m) => {
    const latest = await api(`/devices/${q(m.meter)}/latest`).catch(() => ({ data: [] }));
    for (const v of latest.data) show(m.meter, v.quantity, v.value, v.ts, false);
  }));
  const meters = members.map((m) => m.meter);
  $("#meter").replaceChildren(...meters.map((m) => new Option(m, m)));
  const meter = meters.includes(state.meter) ? state.meter : members.find((m) => m.role === "customer")?.meter ?? meters[0];
  if (meter) { $("#meter").value = meter; }
  await Promise.all([loadReads(), loadLoss(), loadCases(), meter ? chooseMeter(meter) : null]);
  drawDiagram();
  document.body.dataset.area = name;
}

function show(meter, quantity, value, ts, live) {
  const tr = document.getElementById(`row-${meter}`);
  const td = tr?.querySelector(`td.q-${CSS.escape(quantity)}`);
  if (!td) return;
  td.textContent = fmt(value, quantity === "1.8.0" ? 2 : 1);
  tr.querySelector("td.at").textContent = time(ts);
  if (live) { tr.classList.add("flash"); setTimeout(() => tr.classList.remove("flash"), 1000); }
}

async function loadReads() {
  const rows = await api(`/concentrators/read-stats/by-area?day=${state.config.today}`);
  fill($("#reads tbody"), rows, (tr, r) => {
    cell(tr, r.area ?? "–"); cell(tr, r.due, "num"); cell(tr, r.read, "num");
    cell(tr, r.rate === null ? "–" : `${fmt(100 * r.rate, 1)} %`, "num");
  });
}

async function loadLoss() {
  const r = await api(`/lineloss/ranking?period=day&day=${state.config.today}&limit=10000`);
  state.ranking = [...r.ranked, ...r.not_computable];
  fill($("#loss tbody"), r.ranked.slice(0, 5), (tr, a) => {
    cell(tr, a.name); cell(tr, `${fmt(a.rate, 1)} %`, "num"); cell(tr, a.status);
  });
}

async function loadCases() {
  const r = await api("/worklist?status=open&limit=20");
  fill($("#cases tbody"), r.data, (tr, c) => {
    cell(tr, c.id, "num"); cell(tr, c.meter); cell(tr, c.area ?? "–"); cell(tr, c.kind);
    cell(tr, fmt(c.score, 1), "num"); cell(tr, c.since ? time(c.since) : "–");
  });
}

// -- the one-line diagram: substation → feeder bus → each area's transformer ---------------

function drawDiagram() {
  const area = state.areas.find((a) => a.name === state.area);
  const svg = $("#diagram");
  svg.replaceChildren();
  if (!area) return;
  const feeder = state.feeders.find((f) => f.name === area.feeder);
  $("#feeder-name").textContent = `${area.feeder}${feeder ? ` (${feeder.substation}, ${feeder.voltage_kv} kV)` : ""}`;
  const areas = state.areas.filter((a) => a.feeder === area.feeder);
  const status = Object.fromEntries(state.ranking.map((r) => [r.name, r]));
  const step = 110, width = 140 + step * areas.length;
  svg.setAttribute("viewBox", `0 0 ${width} 200`);
  const el = (tag, attrs, parent = svg, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  };
  el("rect", { x: 5, y: 40, width: 60, height: 40, fill: "none", stroke: "#333" });
  el("text", { x: 35, y: 100, "text-anchor": "middle", "font-size": 11 }, svg, feeder?.substation ?? "");
  el("line", { x1: 65, y1: 60, x2: width - 20, y2: 60, stroke: "#333", "stroke-width": 3 });
  areas.forEach((a, i) => {
    const x = 120 + i * step, r = status[a.name];
    const s = r ? r.status : "none";
    const g = el("g", { class: "area", "data-area": a.name, "data-status": s });
    el("line", { x1: x, y1: 60, x2: x, y2: 108, stroke: "#333" }, g);
    el("circle", { cx: x, cy: 120, r: 12, class: `status-${s}`, stroke: a.name === state.area ? "#000" : "none", "stroke-width": 3 }, g);
    el("text", { x, y: 150, "text-anchor": "middle", "font-size": 12 }, g, a.name);
    el("text", { x, y: 167, "text-anchor": "middle", "font-size": 11 }, g, r && r.rate !== null ? `${fmt(r.rate, 1)} %` : s === "none" ? "no result" : s);
    g.addEventListener("click", () => { $("#area").value = a.name; $("#area").dispatchEvent(new Event("change")); });
  });
}

// -- a meter's charts -----------------------------------------------------------------------

async function chooseMeter(meter) {
  state.meter = meter;
  for (const e of document.querySelectorAll(".meter-name")) e.textContent = meter;
  const [energy, volts] = await Promise.all([
    api(`/devices/${q(meter)}/readings?quantity=1.8.0&limit=10000`),
    api(`/devices/${q(meter)}/readings?quantity=32.7.0&limit=10000`),
  ]);
  state.energy = energy.data.map((r) => [Date.parse(r.ts) / 1000, r.value]);
  state.volts = volts.data.map((r) => [Date.parse(r.ts) / 1000, r.value]);
  state.limits = limits(state.config.nominal_voltage); // the API shows no per-device nominal yet
  drawCharts();
}

function limits(nominal) {
  const rows = state.config.voltage_limits.filter((l) => l.nominal <= nominal);
  const row = rows.length ? rows[rows.length - 1] : state.config.voltage_limits[0];
  return { upper: nominal * (1 + row.upper_pct / 100), lower: nominal * (1 + row.lower_pct / 100) };
}

function curveData() {
  // kW of each interval between consecutive register readings (kWh / hours)
  const xs = [], ys = [];
  for (let i = 1; i < state.energy.length; i++) {
    const [t0, v0] = state.energy[i - 1], [t1, v1] = state.energy[i];
    xs.push(t1); ys.push((v1 - v0) / ((t1 - t0) / 3600));
  }
  return [xs, ys];
}

function voltageData() {
  const xs = state.volts.map((p) => p[0]);
  return [xs, state.volts.map((p) => p[1]), xs.map(() => state.limits.upper), xs.map(() => state.limits.lower)];
}

function drawCharts() {
  const width = Math.min(560, Math.max(320, window.innerWidth / 2 - 60));
  for (const c of [state.curve, state.voltage]) if (c) c.destroy();
  state.curve = new uPlot({
    width, height: 220, series: [{}, { label: "kW", stroke: "#1565c0", width: 1.5 }],
  }, curveData(), $("#curve"));
  state.voltage = new uPlot({
    width, height: 220,
    series: [{}, { label: "V", stroke: "#2e7d32", width: 1.5 },
      { label: "upper limit", stroke: "#c62828", dash: [6, 4] },
      { label: "lower limit", stroke: "#c62828", dash: [6, 4] }],
  }, voltageData(), $("#voltage"));
}

// -- the live feed --------------------------------------------------------------------------

function openStream(lastId) {
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  state.lastId = lastId;
  follow(ctrl).catch(() => {}).finally(() => {
    if (ctrl.signal.aborted) return;
    $("#feed").textContent = "reconnecting";
    setTimeout(() => { if (state.stream === ctrl) openStream(state.lastId); }, 2000);
  });
}

async function follow(ctrl) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` };
  if (state.lastId) headers["Last-Event-ID"] = state.lastId;
  const r = await fetch(`/live/stream?area=${q(state.area)}`, { headers, signal: ctrl.signal });
  if (r.status === 401) { signOut("session expired: sign in again"); ctrl.abort(); return; }
  if (!r.ok) throw new Error(`live feed: HTTP ${r.status}`);
  $("#feed").textContent = "connected";
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", event = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") { if (event.data !== undefined) dispatch(event); event = {}; continue; }
      if (line.startsWith(":")) continue; // a ping
      const i = line.indexOf(":");
      const key = i < 0 ? line : line.slice(0, i);
      const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      event[key] = key === "data" && event.data !== undefined ? `${event.data}\n${val}` : val;
    }
  }
}

function dispatch(ev) {
  if (ev.id) state.lastId = ev.id;
  const data = JSON.parse(ev.data);
  switch (ev.event) {
    case "ready": $("#feed").textContent = "live"; break;
    case "reset": $("#feed").textContent = "resynchronised"; loadArea().catch(report); break;
    case "reading": reading(data); break;
    case "event": case "alarm": alarm(ev.event, data); break;
  }
}

function reading(r) {
  show(r.device, r.quantity, r.value, r.ts, true);
  if (r.device === state.meter && r.value !== null) {
    const point = [Date.parse(r.ts) / 1000, r.value];
    if (r.quantity === "1.8.0") { state.energy.push(point); state.energy.sort((a, b) => a[0] - b[0]); state.curve.setData(curveData()); }
    if (r.quantity === "32.7.0") { state.volts.push(point); state.volts.sort((a, b) => a[0] - b[0]); state.voltage.setData(voltageData()); }
  }
  state.updates += 1;
  document.body.dataset.updates = state.updates;
}

function alarm(kind, a) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = a.kind === "case_opened"
    ? `inspection case #${a.case} opened: ${a.case_kind} at ${a.device} (score ${fmt(a.score, 1)})`
    : `${time(a.ts)} ${a.device}: ${a.kind}`;
  $("#alarms").prepend(li);
  if (a.kind === "case_opened") loadCases().catch(report);
}

if (sessionStorage.getItem(TOKEN)) start().catch(report);
