// sysmon dashboard: a single page with hash routes (#/, #/host/NAME,
// #/server) over the server's /api/v1 JSON API. Plain JavaScript with no
// build step; the only library is uPlot (window.uPlot), served by the
// sysmon server itself so the page works without any other host.
"use strict";

(() => {
  const API = "/api/v1";

  const PRESETS = [
    { id: "1h", seconds: 3600, label: "Last hour" },
    { id: "24h", seconds: 86400, label: "Last 24 hours" },
    { id: "7d", seconds: 7 * 86400, label: "Last 7 days" },
    { id: "30d", seconds: 30 * 86400, label: "Last 30 days" },
    { id: "1y", seconds: 365 * 86400, label: "Last year" },
  ];

  // The host page's charts. `metrics` lists candidates; a chart with
  // `pick` uses the first group that has data (memory: agents send bytes,
  // the original client sends MB). `always` charts stay on the page with a
  // "no data" note; the others appear only when the host reports them.
  const CHARTS = [
    {
      id: "cpu", title: "CPU", unit: "percent", always: true, yMax: 100,
      metrics: [{ key: "cpu_load", label: "CPU", color: "--c1" }],
    },
    {
      id: "memory", title: "Memory", always: true,
      pick: [
        {
          unit: "bytes",
          metrics: [
            { key: "memory_used_bytes", label: "Used", color: "--c3" },
            { key: "memory_total_bytes", label: "Total", color: "--idle", dash: true, band: false },
          ],
        },
        { unit: "MB", metrics: [{ key: "mem", label: "Used", color: "--c3" }] },
      ],
    },
    {
      // Disks fill slowly: a 0-based axis would show a flat line.
      id: "storage", title: "Storage", unit: "MB", always: true, yAuto: true,
      metrics: [{ key: "storage", label: "Used", color: "--c4" }],
    },
    {
      id: "network", title: "Network", unit: "bytes/s", ifReported: true,
      metrics: [
        { key: "network_receive_bytes_per_second", label: "Receive", color: "--c1" },
        { key: "network_transmit_bytes_per_second", label: "Transmit", color: "--c2" },
      ],
    },
    {
      id: "disk", title: "Disk I/O", unit: "bytes/s", ifReported: true,
      metrics: [
        { key: "disk_read_bytes_per_second", label: "Read", color: "--c4" },
        { key: "disk_write_bytes_per_second", label: "Write", color: "--c2" },
      ],
    },
    {
      id: "load", title: "Load average (1 min)", unit: "number",
      metrics: [{ key: "load_average_1m", label: "Load", color: "--c3" }],
    },
    {
      id: "swap", title: "Swap", unit: "bytes", hideWhenZero: true,
      metrics: [{ key: "swap_used_bytes", label: "Used", color: "--c2" }],
    },
    {
      id: "temperature", title: "Temperature", unit: "celsius", yAuto: true,
      metrics: [{ key: "temperature_celsius", label: "Temperature", color: "--bad" }],
    },
  ];

  // Each chart's metric groups, made once: a chart is rebuilt only when the
  // group it shows changes, which identity tells.
  for (const def of CHARTS) def.groups = def.pick || [{ unit: def.unit, metrics: def.metrics }];

  const FLEET_REFRESH_MS = 10000;

  // The fleet table's rows have this height (app.css; measured in
  // Chromium), so the rows out of view can be stood for by spacers.
  const ROW_HEIGHT = 46;
  const ROW_OVERSCAN = 10;
  const SERVER_REFRESH_MS = 2000;
  // The server page's history: 15 minutes of the server's readings, one a
  // second (the server's own), then one per refresh.
  const SERVER_HISTORY = 900;
  const SERVER_HISTORY_SECONDS = 900;

  let session = null; // {name, role} while logged in
  let current = null; // the shown view: {stop()}

  // ---------------------------------------------------------------- DOM

  /** Builds an element. Text always goes in as text nodes: host names come
   *  from clients and must never be parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  /** A CSS colour with the given opacity, for band fills. */
  function alpha(color, opacity) {
    return `color-mix(in srgb, ${color} ${Math.round(opacity * 100)}%, transparent)`;
  }

  // --------------------------------------------------------- formatting

  const numberFormats = new Map();
  function num(value, digits = 1) {
    let format = numberFormats.get(digits);
    if (!format) {
      format = new Intl.NumberFormat(undefined, { maximumFractionDigits: digits });
      numberFormats.set(digits, format);
    }
    return format.format(value);
  }

  const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  // Tick spacings for byte axes: powers of two in every unit, so ticks
  // land on 256 MiB, 4 GiB and the like instead of 4.66 GiB.
  const BYTE_INCREMENTS = BYTE_UNITS.flatMap((_, power) =>
    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].map((m) => m * 1024 ** power));

  const MEBIBYTE = 1024 * 1024;

  /** A byte count in its largest binary unit: [scaled magnitude, unit index]. */
  function binaryScale(value) {
    let unit = 0;
    let scaled = Math.abs(value);
    while (scaled >= 1024 && unit < BYTE_UNITS.length - 1) {
      scaled /= 1024;
      unit += 1;
    }
    return [scaled, unit];
  }

  /** An axis label in bytes, with as many decimals as the tick spacing
   *  needs for neighbours to differ. */
  function bytesTick(value, increment) {
    const [scaled, unit] = binaryScale(value);
    const step = increment / 1024 ** unit;
    const digits = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
    return `${num(Math.sign(value) * scaled, digits)} ${BYTE_UNITS[unit]}`;
  }

  function bytes(value) {
    const [scaled, unit] = binaryScale(value);
    const digits = scaled >= 100 || unit === 0 ? 0 : scaled >= 10 ? 1 : 2;
    return `${num(Math.sign(value) * scaled, digits)} ${BYTE_UNITS[unit]}`;
  }

  /** A value in a chart's unit, for labels and read-outs. */
  function formatValue(value, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    switch (unit) {
      case "percent": return `${num(value, 1)} %`;
      case "bytes": return bytes(value);
      case "bytes/s": return `${bytes(value)}/s`;
      // The original's "MB" are mebibytes (bytes / 1024²): shown like
      // every other amount of bytes, so memory and storage read alike.
      case "MB": return bytes(value * MEBIBYTE);
      case "celsius": return `${num(value, 1)} °C`;
      default: return num(value, 2);
    }
  }

  /** Shorter labels for axis ticks; `increment` is the tick spacing, so
   *  neighbouring labels never round to the same text. */
  function formatTick(value, unit, increment) {
    switch (unit) {
      case "percent": return `${num(value, 0)} %`;
      case "MB": return bytesTick(value * MEBIBYTE, increment * MEBIBYTE);
      case "celsius": return `${num(value, increment < 1 ? 1 : 0)} °C`;
      default: return formatValue(value, unit);
    }
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const hours = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return hours ? `${d} d ${hours} h` : `${d} d`;
    if (hours > 0) return m ? `${hours} h ${m} min` : `${hours} h`;
    if (m > 0) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
    return `${s} s`;
  }

  // ------------------------------------------------------------- time

  /** Where times are shown: "local" (the browser's zone) or "utc"; the
   *  host page's URL carries it (`tz=utc`), and the choice is kept. */
  let timeZone = "local";
  const TZ_KEY = "sysmon-tz";
  try {
    if (localStorage.getItem(TZ_KEY) === "utc") timeZone = "utc";
  } catch (_) {
    // Storage refused: local time.
  }

  function setTimeZone(zone) {
    timeZone = zone === "utc" ? "utc" : "local";
    try {
      if (timeZone === "utc") localStorage.setItem(TZ_KEY, "utc");
      else localStorage.removeItem(TZ_KEY);
    } catch (_) {
      // Not kept; applied all the same.
    }
  }

  /** The zone's name as shown: "UTC", or the browser's offset. */
  function zoneLabel() {
    if (timeZone === "utc") return "UTC";
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes < 0 ? "−" : "+";
    const hours = Math.floor(Math.abs(minutes) / 60);
    const rest = Math.abs(minutes) % 60;
    return `local, UTC${sign}${hours}${rest ? `:${String(rest).padStart(2, "0")}` : ""}`;
  }

  /** A time's parts in the shown zone. */
  function timeParts(seconds) {
    const d = new Date(seconds * 1000);
    const utc = timeZone === "utc";
    const two = (n) => String(n).padStart(2, "0");
    return {
      date: `${utc ? d.getUTCFullYear() : d.getFullYear()}-${two((utc ? d.getUTCMonth() : d.getMonth()) + 1)}-${two(utc ? d.getUTCDate() : d.getDate())}`,
      minute: `${two(utc ? d.getUTCHours() : d.getHours())}:${two(utc ? d.getUTCMinutes() : d.getMinutes())}`,
      second: two(utc ? d.getUTCSeconds() : d.getSeconds()),
    };
  }

  /** Whether a range's times need their dates: it covers a day or more,
   *  or crosses midnight in the zone shown. */
  function spansDays({ from, to }) {
    return to - from >= 86400 || timeParts(from).date !== timeParts(to).date;
  }

  /** The one date format, everywhere: 2026-12-03 14:05:09, or 14:05:09. */
  function dateTime(seconds, withDate) {
    const p = timeParts(seconds);
    return withDate ? `${p.date} ${p.minute}:${p.second}` : `${p.minute}:${p.second}`;
  }

  /** A time axis's labels in the same format, as fine as its ticks. */
  function timeTicks(u, splits, axisIdx, space, increment) {
    return splits.map((t) => {
      const p = timeParts(t);
      if (increment >= 86400) return p.date;
      if (increment >= 60) return p.minute === "00:00" ? p.date : p.minute;
      return `${p.minute}:${p.second}`;
    });
  }

  /** Tick placement in the shown zone, for uPlot. */
  function zonedDate(ts) {
    return timeZone === "utc" ? uPlot.tzDate(new Date(ts * 1000), "Etc/UTC") : new Date(ts * 1000);
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Calls the API with the session cookie. A 401 means the session is
   *  gone: back to the login form. */
  async function api(path, { method = "GET", body } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, options);
    } catch (error) {
      throw new ApiError(0, "The sysmon server cannot be reached.");
    }
    if (response.status === 401 && path !== "/session") {
      session = null;
      route();
      throw new ApiError(401, "Your session has ended; please log in again.");
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const reply = await response.json();
        if (reply && reply.error) message = reply.error;
      } catch (_) {
        // Not JSON: keep the status line.
      }
      throw new ApiError(response.status, message);
    }
    if (response.status === 204) return null;
    return response.json();
  }

  const clientPath = (name) => `/clients/${encodeURIComponent(name)}`;

  // ------------------------------------------------------------ routing

  function route() {
    if (current) {
      current.stop();
      current = null;
    }
    const main = $("#main");
    main.replaceChildren();
    renderTopbar();
    if (!session) {
      current = loginView(main);
      return;
    }
    const [path, query = ""] = (location.hash || "#/").split("?");
    const host = /^#\/host\/(.+)$/.exec(path);
    if (host) current = hostView(main, decodedName(host[1]), new URLSearchParams(query));
    else if (path === "#/server") current = serverView(main);
    else if (path === "#/alerts") current = alertsView(main);
    else current = fleetView(main);
  }

  /** A host name from the address; one typed with a bare `%` as is. */
  function decodedName(text) {
    try {
      return decodeURIComponent(text);
    } catch (_) {
      return text;
    }
  }

  function renderTopbar() {
    const bar = $("#topbar");
    bar.hidden = !session;
    if (!session) return;
    $("#user-name").textContent = session.name;
    $("#user-role").textContent = session.role;
    $("#nav-server").hidden = session.role !== "admin";
    const hash = (location.hash || "#/").split("?")[0];
    const section = hash === "#/server" ? "server" : hash === "#/alerts" ? "alerts" : "fleet";
    for (const link of bar.querySelectorAll("[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === section);
    }
  }

  // ------------------------------------------------------------- alerts

  /** Alerts not ok, for the hosts this user may read: every view that
   *  shows them asks here (one request per refresh, not one per host), and
   *  the nav's count follows. */
  async function loadAlerts() {
    const reply = await api("/alerts");
    const alerts = reply.alerts || [];
    const firing = alerts.filter((alert) => alert.state === "firing").length;
    const count = $("#nav-alerts-count");
    count.textContent = firing ? String(firing) : "";
    count.hidden = !firing;
    return alerts;
  }

  /** Firing alerts by host name. */
  function firingByHost(alerts) {
    const byHost = new Map();
    for (const alert of alerts) {
      if (alert.state !== "firing") continue;
      if (!byHost.has(alert.host)) byHost.set(alert.host, []);
      byHost.get(alert.host).push(alert);
    }
    return byHost;
  }

  function severityOf(alerts) {
    return alerts.some((alert) => alert.severity === "critical") ? "critical"
      : alerts.some((alert) => alert.severity === "warning") ? "warning" : "info";
  }

  function alertValue(alert) {
    if (alert.value === null || alert.value === undefined) return "–";
    return alert.metric === "host_silent" ? `silent ${duration(alert.value)}` : num(alert.value, 1);
  }

  async function logout() {
    try {
      await api("/session", { method: "DELETE" });
    } catch (_) {
      // Logged out locally either way; the cookie expires with the session.
    }
    session = null;
    route();
  }

  // -------------------------------------------------------------- login

  function loginView(main) {
    const error = h("p", { class: "error-text", role: "alert", id: "login-error" });
    const username = h("input", { type: "text", name: "username", id: "login-username", autocomplete: "username", required: true });
    const password = h("input", { type: "password", name: "password", id: "login-password", autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit", class: "button primary", id: "login-submit" }, "Log in");
    const form = h("form", { class: "card", id: "login-form", novalidate: true },
      h("div", { class: "brand" }, $(".brand svg").cloneNode(true), h("span", {}, "sysmon")),
      h("p", { class: "lead" }, "Log in to see your fleet."),
      h("label", {}, "Username", username),
      h("label", {}, "Password", password),
      submit,
      error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      if (!username.value || !password.value) {
        error.textContent = "Enter your username and password.";
        return;
      }
      submit.disabled = true;
      try {
        const reply = await api("/session", {
          method: "POST",
          body: { username: username.value, password: password.value },
        });
        session = { name: reply.name, role: reply.role };
        route();
      } catch (e) {
        error.textContent = e.status === 401 ? "Wrong username or password." : e.message;
        submit.disabled = false;
        password.select();
      }
    });
    main.append(h("section", { class: "login", id: "login-view" }, form));
    username.focus();
    return { stop() {} };
  }

  // -------------------------------------------------------------- fleet

  /** A small bar for a share in percent, amber from 70 %, red from 90 %. */
  function meter(percent) {
    if (percent === null || percent === undefined) return null;
    const level = percent >= 90 ? " high" : percent >= 70 ? " warn" : "";
    const bar = h("i");
    bar.style.width = `${Math.min(100, Math.max(0, percent))}%`;
    return h("span", { class: `meter${level}`, "aria-hidden": "true" }, bar);
  }

  /** The fleet: one request for every host, shown as a table that renders
   *  only the rows in view (a fleet of 10,000 hosts stays as quick as one of
   *  ten), with search, filters and sorting by any column. Sparklines are
   *  fetched only for the rows in view, once scrolling settles. */
  function fleetView(main) {
    let stopped = false;
    const rows = new Map(); // name -> {tr, client, canvas, spark, sparkAt}
    let clients = []; // every host, as the API gave them
    let shown = []; // after search and filter, sorted
    let firing = new Map(); // host name -> its firing alerts
    const view = { query: "", filter: "all", label: "", sort: "name", descending: false };
    const summary = h("p", { class: "summary", id: "fleet-summary" });
    const tbody = h("tbody");
    const spacer = () => h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", { colspan: "8" }));
    const before = spacer();
    const after = spacer();
    const header = (key, label, className = "") => h("th", { class: className, "aria-sort": "none" },
      h("button", { type: "button", class: "sort", "data-sort": key, onclick: () => sortBy(key) }, label));
    const headers = h("tr", {},
      h("th", { "aria-label": "status" }),
      header("name", "Host"),
      header("last_seen", "Last seen"),
      header("cpu_load", "CPU", "num"),
      header("memory", "Memory", "num"),
      header("storage", "Storage", "num hide-narrow"),
      header("uptime_seconds", "Uptime", "num hide-narrow"),
      h("th", { class: "hide-narrow" }, "CPU, last hour"));
    const table = h("table", { class: "fleet", id: "fleet-table" }, h("thead", {}, headers), tbody);
    const search = h("input", { type: "search", id: "fleet-search", placeholder: "Search hosts", "aria-label": "Search hosts", autocomplete: "off" });
    const filter = h("select", { id: "fleet-filter", "aria-label": "Show" },
      h("option", { value: "all" }, "All hosts"),
      h("option", { value: "online" }, "Online"),
      h("option", { value: "offline" }, "Offline"),
      h("option", { value: "alerting" }, "Alerting"));
    const labelFilter = h("select", { id: "fleet-label", "aria-label": "Label", hidden: true });
    // What to do about an empty fleet depends on who looks at it.
    const empty = session.role === "admin"
      ? h("div", { class: "empty", hidden: true, id: "fleet-empty" },
        h("p", {}, "No host has reported yet."),
        h("p", {}, "Run ", h("code", {}, "sysmon-agent --server URL --name HOST"), " on a machine, and it appears here."))
      : h("div", { class: "empty", hidden: true, id: "fleet-empty" },
        h("p", {}, "No host is shared with you yet."),
        h("p", {}, "An administrator can give you hosts to watch."));
    const noMatch = h("p", { class: "empty", hidden: true, id: "fleet-no-match" }, "No host matches.");
    const failure = h("p", { class: "message error-text", hidden: true });
    const controls = h("div", { class: "toolbar fleet-controls", hidden: true }, search, filter, labelFilter);
    main.append(h("section", { class: "view", id: "fleet-view" },
      h("div", { class: "view-head" }, h("h1", {}, "Fleet"), summary),
      failure,
      controls,
      h("div", { class: "card table-card" }, table, noMatch, empty)));
    search.addEventListener("input", () => {
      view.query = search.value.trim().toLowerCase();
      update();
    });
    filter.addEventListener("change", () => {
      view.filter = filter.value;
      update();
    });
    labelFilter.addEventListener("change", () => {
      view.label = labelFilter.value;
      update();
    });

    /** The label filter's choices: every label in the fleet. */
    function renderLabelChoices() {
      const labels = [...new Set(clients.flatMap((client) => client.labels || []))].sort();
      if (view.label && !labels.includes(view.label)) view.label = "";
      labelFilter.replaceChildren(h("option", { value: "" }, "Any label"),
        ...labels.map((label) => h("option", { value: label }, label)));
      labelFilter.value = view.label;
      labelFilter.hidden = labels.length === 0;
    }

    function cell(field, className, ...children) {
      return h("td", { class: className, "data-field": field }, ...children);
    }

    /** A row's DOM, made once per host and refilled when its data change. */
    function renderRow(client) {
      let row = rows.get(client.name);
      if (!row) {
        const canvas = h("canvas", { width: 120, height: 30, "aria-hidden": "true" });
        row = { tr: h("tr", { "data-client": client.name }), canvas, spark: null, sparkAt: 0, client: null };
        rows.set(client.name, row);
      }
      const alerts = firing.get(client.name) || [];
      const alertKey = alerts.map((alert) => alert.rule).join(",");
      if (row.client === client && row.alertKey === alertKey) return row;
      row.client = client;
      row.alertKey = alertKey;
      const latest = client.latest || {};
      const cpu = latest.cpu_load;
      const memory = memoryCell(latest);
      const storage = storageCell(client);
      row.tr.dataset.online = String(Boolean(client.online));
      // An offline host keeps its last values, greyed.
      row.tr.classList.toggle("offline", !client.online);
      row.tr.replaceChildren(
        h("td", { class: "status" }, h("span", {
          class: `dot${client.online ? " online" : ""}`,
          title: client.online ? "online" : "offline",
          role: "img",
          "aria-label": client.online ? "online" : "offline",
        })),
        cell("name", "host", h("a", { href: `#/host/${encodeURIComponent(client.name)}` }, client.name),
          ...(alerts.length ? [h("a", {
            class: `badge alerting sev-${severityOf(alerts)}`, href: "#/alerts", "data-alerts": String(alerts.length),
            title: alerts.map((alert) => `${alert.rule}: ${alert.condition}`).join("\n"),
          }, String(alerts.length), h("span", { class: "wide" }, " firing"))] : []),
          ...(client.labels || []).map((label) => h("span", { class: "badge label" }, label))),
        cell("last_seen", "last-seen", ago(client.last_seen)),
        h("td", { class: "num", "data-field": "cpu_load", "data-value": cpu ?? "" },
          formatValue(cpu, "percent"), meter(cpu)),
        h("td", { class: "num", "data-field": "memory", "data-value": memory.value ?? "", title: memory.title },
          memory.text, meter(memory.percent)),
        h("td", { class: "num hide-narrow", "data-field": "storage", "data-value": storage.value ?? "", title: storage.title },
          storage.text, meter(storage.percent)),
        h("td", { class: "num hide-narrow", "data-field": "uptime_seconds", "data-value": client.uptime_seconds ?? "" },
          client.uptime_seconds === undefined ? "–" : duration(client.uptime_seconds)),
        h("td", { class: "spark hide-narrow" }, row.canvas));
      return row;
    }

    function memoryCell(latest) {
      const used = latest.memory_used_bytes;
      const total = latest.memory_total_bytes;
      if (used !== undefined && total) {
        const percent = (100 * used) / total;
        return { value: percent, percent, text: `${num(percent, 0)} %`, title: `${bytes(used)} of ${bytes(total)}` };
      }
      if (latest.mem !== undefined) return { value: latest.mem, text: formatValue(latest.mem, "MB") };
      return { value: null, text: "–" };
    }

    /** The share used of the host's fullest file system (agents send
     *  them all), else the original's amount of storage used. */
    function storageCell(client) {
      const fullest = client.fullest_filesystem;
      if (fullest && fullest.used_percent !== null) {
        const percent = fullest.used_percent;
        return { value: percent, percent, text: `${num(percent, 0)} %`,
          title: `fullest file system: ${fullest.mount_point}, ${bytes(fullest.used_bytes)} of ${bytes(fullest.total_bytes)}` };
      }
      const latest = client.latest || {};
      if (latest.storage !== undefined) return { value: latest.storage, text: formatValue(latest.storage, "MB"), title: "used" };
      return { value: null, text: "–" };
    }

    /** A host's value for a sort key; missing values sort last. */
    function sortValue(client, key) {
      const latest = client.latest || {};
      switch (key) {
        case "name": return client.name;
        case "last_seen": return client.last_seen ?? null;
        case "uptime_seconds": return client.uptime_seconds ?? null;
        // A share of memory where the host says its total; hosts that send
        // only an amount (the original's MB) sort after those.
        case "memory": return memoryCell(latest).percent ?? null;
        // Likewise the fullest file system's share, then amounts.
        case "storage": return storageCell(client).percent ?? null;
        default: return latest[key] ?? null;
      }
    }

    function sortBy(key) {
      view.descending = view.sort === key ? !view.descending : key !== "name";
      view.sort = key;
      update();
    }

    /** Search, filter and sort, then draw what is in view. */
    function update() {
      const { query, filter: which, sort, descending } = view;
      shown = clients.filter((client) =>
        (!query || client.name.toLowerCase().includes(query)
          || (client.labels || []).some((label) => label.toLowerCase().includes(query)))
        && (which === "all" || (which === "alerting" ? firing.has(client.name) : (which === "online") === Boolean(client.online)))
        && (!view.label || (client.labels || []).includes(view.label)));
      const direction = descending ? -1 : 1;
      shown.sort((a, b) => {
        const x = sortValue(a, sort);
        const y = sortValue(b, sort);
        if (x === y) return a.name.localeCompare(b.name);
        if (x === null) return 1;
        if (y === null) return -1;
        return (typeof x === "string" ? x.localeCompare(y) : x - y) * direction;
      });
      for (const button of headers.querySelectorAll("[data-sort]")) {
        const active = button.dataset.sort === sort;
        button.parentElement.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
      }
      table.dataset.shown = String(shown.length);
      noMatch.hidden = shown.length > 0 || clients.length === 0;
      renderVisible();
    }

    /** Rows in and near the viewport, between spacers of the others'
     *  height: the DOM holds a few dozen rows whatever the fleet's size. */
    function renderVisible() {
      if (stopped) return;
      const top = tbody.getBoundingClientRect().top + window.scrollY;
      const count = Math.ceil(window.innerHeight / ROW_HEIGHT) + 2 * ROW_OVERSCAN;
      // Scrolled past the end of a list that just shrank: its last rows.
      const first = Math.min(
        Math.max(0, Math.floor((window.scrollY - top) / ROW_HEIGHT) - ROW_OVERSCAN),
        Math.max(0, shown.length - count));
      const last = Math.min(shown.length, first + count);
      before.firstChild.style.height = `${first * ROW_HEIGHT}px`;
      after.firstChild.style.height = `${(shown.length - last) * ROW_HEIGHT}px`;
      const visible = shown.slice(first, last).map((client) => renderRow(client).tr);
      // Rows are moved, not made anew; a focused link in one keeps focus.
      const focused = document.activeElement;
      tbody.replaceChildren(before, ...visible, after);
      if (focused && focused !== document.activeElement && tbody.contains(focused)) {
        focused.focus({ preventScroll: true });
      }
      scheduleSparks();
    }

    let sparkTimer = null;
    function scheduleSparks() {
      clearTimeout(sparkTimer);
      sparkTimer = setTimeout(loadVisibleSparks, 250);
    }

    /** Sparklines of the rows in view that have none from the last minute. */
    function loadVisibleSparks() {
      const to = Date.now() / 1000;
      for (const tr of tbody.querySelectorAll("tr[data-client]")) {
        const row = rows.get(tr.dataset.client);
        if (row && to - row.sparkAt > 60) {
          row.sparkAt = to;
          loadSpark(row, to);
        }
      }
    }

    async function refresh() {
      let reply;
      try {
        const [fleet, alerts] = await Promise.all([api("/clients"), loadAlerts().catch(() => null)]);
        reply = fleet;
        if (alerts) firing = firingByHost(alerts);
      } catch (e) {
        if (stopped || e.status === 401) return;
        failure.textContent = `Cannot load the fleet: ${e.message}`;
        failure.hidden = false;
        return;
      }
      if (stopped) return;
      failure.hidden = true;
      clients = reply.clients || [];
      const names = new Set(clients.map((client) => client.name));
      for (const name of [...rows.keys()]) if (!names.has(name)) rows.delete(name);
      const online = clients.filter((client) => client.online).length;
      summary.textContent = `${num(clients.length, 0)} ${clients.length === 1 ? "host" : "hosts"} · ${num(online, 0)} online`;
      empty.hidden = clients.length > 0;
      table.hidden = clients.length === 0;
      controls.hidden = clients.length === 0;
      renderLabelChoices();
      update();
    }

    async function loadSpark(row, to) {
      try {
        const series = await api(`${clientPath(row.client.name)}/series?from=${Math.floor(to - 3600)}&to=${Math.ceil(to)}&step=60&metrics=cpu_load`);
        if (stopped) return;
        row.spark = { from: to - 3600, to, time: series.time, values: series.metrics.cpu_load ? series.metrics.cpu_load.avg : [] };
        drawSpark(row);
      } catch (_) {
        // A sparkline is decoration: the row shows the numbers anyway.
      }
    }

    function tick() {
      for (const tr of tbody.querySelectorAll("tr[data-client]")) {
        const row = rows.get(tr.dataset.client);
        const cell = $('[data-field="last_seen"]', tr);
        if (row && cell) cell.textContent = ago(row.client.last_seen);
      }
    }

    let frame = null;
    const onScroll = () => {
      if (frame === null) frame = requestAnimationFrame(() => {
        frame = null;
        renderVisible();
      });
    };
    window.addEventListener("scroll", onScroll, { passive: true });
    window.addEventListener("resize", onScroll);
    refresh();
    const timers = [setInterval(refresh, FLEET_REFRESH_MS), setInterval(tick, 1000)];
    return {
      stop() {
        stopped = true;
        timers.forEach(clearInterval);
        clearTimeout(sparkTimer);
        window.removeEventListener("scroll", onScroll);
        window.removeEventListener("resize", onScroll);
      },
    };
  }

  /** A small cpu line (0..100 %) over the last hour, gaps left open. */
  function drawSpark(row) {
    const { canvas, spark } = row;
    const ratio = window.devicePixelRatio || 1;
    const width = 120;
    const height = 30;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const color = cssVar("--c1");
    const x = (t) => ((t - spark.from) / (spark.to - spark.from)) * (width - 2) + 1;
    const y = (v) => height - 2 - (Math.min(100, Math.max(0, v)) / 100) * (height - 4);
    // Points more than 3 buckets apart are not joined: the host was away.
    const segments = [];
    let segment = [];
    let previous = null;
    spark.time.forEach((t, i) => {
      const v = spark.values[i];
      if (v === null || v === undefined || (previous !== null && t - previous > 180)) {
        if (segment.length) segments.push(segment);
        segment = [];
      }
      if (v !== null && v !== undefined) {
        segment.push([x(t), y(v)]);
        previous = t;
      }
    });
    if (segment.length) segments.push(segment);
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    for (const points of segments) {
      ctx.beginPath();
      points.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.strokeStyle = color;
      if (points.length === 1) {
        ctx.fillStyle = color;
        ctx.fillRect(points[0][0] - 1, points[0][1] - 1, 2, 2);
        continue;
      }
      ctx.stroke();
      ctx.lineTo(points[points.length - 1][0], height);
      ctx.lineTo(points[0][0], height);
      ctx.closePath();
      ctx.fillStyle = alpha(color, 0.15);
      ctx.fill();
    }
  }

  // --------------------------------------------------------------- host

  /** A host's page. `params` (from the URL) may name its range
   *  (`range=24h`, or `from`/`to` unix seconds when zoomed) and time zone
   *  (`tz=utc`); the page keeps them there as they change, so a view can be
   *  reloaded and shared. */
  function hostView(main, name, params) {
    const asked = {
      preset: PRESETS.find((preset) => preset.id === params.get("range")) || null,
      from: Number(params.get("from")),
      to: Number(params.get("to")),
    };
    // A shared link's zone shows this view in it; the viewer's own choice
    // (kept by the toolbar button) is left alone.
    if (params.has("tz")) timeZone = params.get("tz") === "utc" ? "utc" : "local";
    const state = {
      stopped: false,
      preset: asked.preset || PRESETS[0],
      zoom: null, // {from, to} while zoomed in, else the preset ending now
      range: null, // the shown {from, to}
      data: null, // the last series reply, live samples appended
      charts: [], // {def, group, el, plot, observer}
      loadSeq: 0,
      socket: null,
      socketRetry: null,
      socketFailures: 0,
      poll: null,
      client: null,
    };

    const status = h("span", { class: "dot", role: "img", "aria-label": "status" });
    const seen = h("span", { class: "muted" });
    const hostAlerts = h("span", { class: "host-alerts", id: "host-alerts" });
    const presetButtons = PRESETS.map((preset) =>
      h("button", { type: "button", "data-preset": preset.id, "aria-pressed": "false", onclick: () => selectPreset(preset) }, preset.id));
    const rangeLabel = h("span", { class: "range-label", id: "range-label" });
    const resetZoom = h("button", { type: "button", class: "button", hidden: true, onclick: () => selectPreset(state.preset) }, "Reset zoom");
    const resolution = h("span", { class: "badge", id: "resolution" });
    const live = h("span", { class: "live", id: "live", title: "New samples appear as they arrive" }, h("span", { class: "dot" }), "Live");
    const exportLink = h("a", { class: "button", id: "export", download: `${name}.csv` }, "Export CSV");
    const zoneButton = h("button", { type: "button", class: "button ghost", id: "time-zone", title: "Show times in the browser's zone or in UTC", onclick: toggleZone });
    const failure = h("p", { class: "message error-text", hidden: true });
    const charts = h("div", { class: "charts", id: "charts" });
    const disksBody = h("tbody");
    const disksTime = h("span", { class: "muted" });
    // Disk usage over the view's range, one line per mount point.
    const diskHistoryEl = h("div", { class: "plot disk-history", id: "disk-history", "aria-label": "disk usage over time" });
    const disks = h("section", { class: "card disks", id: "filesystems", hidden: true },
      h("header", {}, h("h3", {}, "File systems"), disksTime),
      diskHistoryEl,
      h("table", { class: "fleet" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Mount"), h("th", { class: "num" }, "Used"), h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Used %"))),
        disksBody));
    const toolbar = h("div", { class: "toolbar" },
      h("div", { class: "segmented", role: "group", "aria-label": "time range" }, presetButtons),
      rangeLabel, resetZoom, resolution,
      h("span", { class: "spacer" }),
      zoneButton, live, exportLink);
    const hint = h("p", { class: "muted" }, "Drag across a chart to zoom in; double-click to go back.");

    // Admins label hosts here; the fleet groups and filters by labels.
    const labelsInput = h("input", { type: "text", id: "labels-input", placeholder: "labels, e.g. prod db", "aria-label": "Labels", autocomplete: "off" });
    const labelsNote = h("span", { class: "muted", id: "labels-note" });
    const labelsForm = h("form", { class: "labels-form", id: "labels-form", hidden: session.role !== "admin" },
      labelsInput, h("button", { type: "submit", class: "button", id: "labels-save" }, "Save labels"), labelsNote);
    labelsForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const labels = labelsInput.value.split(/[\s,]+/).filter(Boolean);
      try {
        const reply = await api(`${clientPath(name)}/labels`, { method: "PUT", body: { labels } });
        labelsInput.value = reply.labels.join(" ");
        labelsNote.textContent = "Saved";
      } catch (e) {
        labelsNote.textContent = e.message;
      }
    });
    main.append(h("section", { class: "view", id: "host-view", "data-host": name },
      h("div", { class: "view-head" },
        h("a", { href: "#/", class: "back" }, "← Fleet"),
        h("h1", { class: "host-title" }, status, h("span", {}, name)),
        seen, hostAlerts, labelsForm),
      toolbar,
      failure,
      charts,
      disks,
      hint));

    function currentRange() {
      if (state.zoom) return state.zoom;
      const to = Date.now() / 1000;
      return { from: to - state.preset.seconds, to };
    }

    function isLive() {
      return !state.zoom;
    }

    function selectPreset(preset) {
      state.preset = preset;
      state.zoom = null;
      saveToUrl();
      load();
    }

    /** The view's range and zone into the URL, without a new history
     *  entry or a re-route. */
    function saveToUrl() {
      const query = new URLSearchParams();
      if (state.zoom) {
        query.set("from", state.zoom.from.toFixed(3));
        query.set("to", state.zoom.to.toFixed(3));
      }
      // Kept when zoomed too, so "Reset zoom" after a reload goes back to it.
      query.set("range", state.preset.id);
      if (timeZone === "utc") query.set("tz", "utc");
      history.replaceState(null, "", `#/host/${encodeURIComponent(name)}?${query}`);
    }

    function toggleZone() {
      setTimeZone(timeZone === "utc" ? "local" : "utc");
      saveToUrl();
      renderToolbar();
      if (state.data) renderCharts();
    }

    function zoomTo(from, to) {
      // Finer than a minute shows nothing new, even at raw resolution.
      if (to - from < 60) {
        const middle = (from + to) / 2;
        from = middle - 30;
        to = middle + 30;
      }
      state.zoom = { from, to };
      saveToUrl();
      load();
    }

    function renderToolbar() {
      for (const button of presetButtons) {
        const pressed = !state.zoom && button.dataset.preset === state.preset.id;
        button.setAttribute("aria-pressed", String(pressed));
      }
      const { from, to } = state.range;
      const withDate = spansDays(state.range);
      rangeLabel.textContent = state.zoom
        ? `${dateTime(from, withDate)} – ${dateTime(to, withDate)}`
        : state.preset.label;
      resetZoom.hidden = !state.zoom;
      zoneButton.textContent = `Time: ${zoneLabel()}`;
      zoneButton.dataset.zone = timeZone;
      live.hidden = !isLive();
      exportLink.href = `${API}${clientPath(name)}/export.csv?from=${Math.floor(from)}&to=${Math.ceil(to)}`;
      if (state.data) {
        resolution.textContent = banded() ? `${duration(state.data.step)} averages` : "raw samples";
        resolution.title = banded()
          ? `one point per ${duration(state.data.step)}, its samples' average; shaded: their min – max`
          : "one point per sample";
      }
    }

    async function load() {
      const seq = ++state.loadSeq;
      state.range = currentRange();
      renderToolbar();
      const { from, to } = state.range;
      let reply;
      // Live samples that come while the series is read wait for it: those
      // after its newest sample are applied to it, not to the old data.
      state.buffer = state.buffer || [];
      try {
        reply = await api(`${clientPath(name)}/series?from=${Math.floor(from)}&to=${Math.ceil(to)}`);
      } catch (e) {
        if (seq === state.loadSeq) flushBuffer(null);
        if (state.stopped || seq !== state.loadSeq || e.status === 401) return;
        if (e.status === 403 || e.status === 404) {
          unavailable(e.status === 404
            ? `There is no host named “${name}”.`
            : "You may not see this host. An administrator can give you access to it.");
          return;
        }
        failure.textContent = `Cannot load the charts: ${e.message}`;
        failure.hidden = false;
        return;
      }
      if (state.stopped || seq !== state.loadSeq) return;
      toolbar.hidden = hint.hidden = false;
      failure.hidden = true;
      state.data = seriesData(reply);
      renderToolbar();
      renderCharts();
      flushBuffer(reply.latest);
      syncLive();
      loadDiskHistory();
    }

    /** A series reply as the charts keep it. */
    function seriesData(reply) {
      const count = (reply.count || reply.time.map(() => 1)).slice();
      return {
        resolution: reply.resolution,
        step: reply.step,
        banded: reply.resolution !== "raw" || count.some((n) => n > 1),
        count,
        time: reply.time.slice(),
        // Per metric, how many samples each average is over: the bucket's
        // count where it has a value (the server does not say more), so
        // live samples weigh into it as the server would.
        metrics: Object.fromEntries(Object.entries(reply.metrics || {}).map(([key, s]) =>
          [key, { min: s.min.slice(), avg: s.avg.slice(), max: s.max.slice(),
            n: s.avg.map((v, i) => (v === null || v === undefined ? 0 : count[i] || 1)) }])),
      };
    }

    /** Applies the live samples buffered during a read: those after the
     *  newest sample the read saw (`latest`; all when unknown). */
    function flushBuffer(latest) {
      const buffered = state.buffer || [];
      state.buffer = null;
      for (const message of buffered) {
        if (latest === null || latest === undefined || message.time > latest) appendSample(message);
      }
    }

    /** Once the socket follows the host, what was stored between the last
     *  read and then: the shown data's last point read again (replacing
     *  it, so nothing counts twice), and the points after it. */
    async function catchUp() {
      const data = state.data;
      if (!data || !data.time.length || state.buffer) return;
      const seq = state.loadSeq;
      const from = data.time[data.time.length - 1];
      const to = Date.now() / 1000 + 1;
      state.buffer = [];
      let reply = null;
      try {
        reply = await api(`${clientPath(name)}/series?from=${from}&to=${to}&step=${data.step}&resolution=${data.resolution}`);
      } catch (_) {
        // The buffered samples still apply; a later reload fills the rest.
      }
      if (state.stopped || seq !== state.loadSeq || state.data !== data) return;
      if (reply) {
        const tail = seriesData(reply);
        let keep = data.time.length;
        while (keep > 0 && data.time[keep - 1] >= from - 1e-6) keep--;
        data.time.splice(keep, Infinity, ...tail.time);
        data.count.splice(keep, Infinity, ...tail.count);
        for (const [key, series] of Object.entries(data.metrics)) {
          const fresh = tail.metrics[key];
          const nulls = () => tail.time.map(() => null);
          series.min.splice(keep, Infinity, ...(fresh ? fresh.min : nulls()));
          series.avg.splice(keep, Infinity, ...(fresh ? fresh.avg : nulls()));
          series.max.splice(keep, Infinity, ...(fresh ? fresh.max : nulls()));
          series.n.splice(keep, Infinity, ...(fresh ? fresh.n : tail.time.map(() => 0)));
        }
        for (const [key, fresh] of Object.entries(tail.metrics)) {
          if (data.metrics[key]) continue;
          const pad = () => data.time.slice(0, keep).map(() => null);
          data.metrics[key] = { min: [...pad(), ...fresh.min], avg: [...pad(), ...fresh.avg],
            max: [...pad(), ...fresh.max], n: [...data.time.slice(0, keep).map(() => 0), ...fresh.n] };
        }
        redrawLive();
      }
      flushBuffer(reply ? reply.latest : null);
    }

    /** A host that does not exist, or that this user may not see: a plain
     *  message, with none of the page's controls (they could not work). */
    function unavailable(message) {
      state.stopped = true;
      closeSocket();
      destroyCharts();
      main.querySelector("#host-view").replaceChildren(
        h("div", { class: "view-head" }, h("a", { href: "#/", class: "back" }, "← Fleet")),
        h("div", { class: "empty", id: "host-unavailable" }, h("p", {}, message)));
    }

    /** Every file system of the host's latest sample: used, size, share. */
    async function loadFilesystems() {
      let reply;
      try {
        reply = await api(`${clientPath(name)}/filesystems`);
      } catch (_) {
        return; // The charts say when the host cannot be read.
      }
      if (state.stopped) return;
      const filesystems = reply.filesystems || [];
      disks.hidden = filesystems.length === 0;
      disksTime.textContent = reply.time ? `as of ${dateTime(reply.time, true)}` : "";
      disksBody.replaceChildren(...filesystems.map((fs) => h("tr", { "data-mount": fs.mount_point },
        h("td", { class: "host", title: fs.mount_point }, fs.mount_point),
        h("td", { class: "num" }, bytes(fs.used_bytes)),
        h("td", { class: "num" }, fs.total_bytes ? bytes(fs.total_bytes) : "–"),
        h("td", { class: "num", "data-field": "used_percent", "data-value": fs.used_percent ?? "" },
          fs.used_percent === null ? "–" : `${num(fs.used_percent, 1)} %`, meter(fs.used_percent)))));
    }

    /** Each mount point's share used over the shown range (the first
     *  sample of each step: disk usage moves slowly), drawn with a legend
     *  that reads out every mount at the cursor. */
    async function loadDiskHistory() {
      const { from, to } = state.range || currentRange();
      let reply;
      try {
        reply = await api(`${clientPath(name)}/filesystems/history?from=${Math.floor(from)}&to=${Math.ceil(to)}`);
      } catch (_) {
        return; // The charts say when the host cannot be read.
      }
      if (state.stopped) return;
      drawDiskHistory(reply.mounts || []);
    }

    function drawDiskHistory(mounts) {
      const times = [...new Set(mounts.flatMap((mount) => mount.time))].sort((a, b) => a - b);
      const key = mounts.map((mount) => mount.mount_point).join("\n");
      diskHistoryEl.hidden = times.length === 0;
      const columns = [times, ...mounts.map((mount) => {
        const at = new Map(mount.time.map((time, i) => [time, i]));
        return times.map((time) => {
          const i = at.get(time);
          if (i === undefined || !mount.total_bytes[i]) return null;
          return (100 * mount.used_bytes[i]) / mount.total_bytes[i];
        });
      })];
      // What the chart shows, for tests and tools: points, and each
      // mount's latest share.
      diskHistoryEl.dataset.points = String(times.length);
      diskHistoryEl.dataset.last = JSON.stringify(Object.fromEntries(mounts.map((mount, i) =>
        [mount.mount_point, columns[i + 1].filter((v) => v !== null).pop() ?? null])));
      // Same mounts: new data into the same chart (the cursor stays).
      if (state.diskPlot && state.diskPlotKey === key) {
        state.diskPlot.setData(columns);
        return;
      }
      if (state.diskPlot) state.diskPlot.destroy();
      state.diskPlot = null;
      if (!times.length) return;
      const palette = ["--c1", "--c2", "--c3", "--c4"];
      const muted = cssVar("--muted");
      const grid = cssVar("--grid");
      state.diskPlotKey = key;
      state.diskPlot = new uPlot({
        width: Math.max(200, diskHistoryEl.clientWidth),
        height: chartHeight(),
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false }, points: { size: 7 } },
        scales: { x: { time: true, range: () => [state.range.from, state.range.to] }, y: { range: [0, 100] } },
        tzDate: zonedDate,
        axes: [
          { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, values: timeTicks },
          { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { show: false }, values: (u, splits) => splits.map((v) => `${v} %`), size: axisSize },
        ],
        // Away from the chart, the legend reads out the latest shares.
        series: [
          { value: (u, v) => (v === null || v === undefined ? "latest" : dateTime(v, spansDays(state.range))) },
          ...mounts.map((mount, i) => ({
            label: mount.mount_point,
            stroke: cssVar(palette[i % palette.length]),
            dash: i >= palette.length ? [6, 4] : undefined,
            width: 1.75,
            spanGaps: true,
            points: { show: false },
            value: (u, v, sidx, idx) => {
              if (idx === null || idx === undefined) v = u.data[sidx].filter((x) => x !== null).pop();
              return v === null || v === undefined ? "–" : `${num(v, 1)} %`;
            },
          })),
        ],
      }, columns, diskHistoryEl);
      if (!state.diskObserver) {
        state.diskObserver = new ResizeObserver(() => {
          const width = Math.max(200, diskHistoryEl.clientWidth);
          if (state.diskPlot && width !== state.diskPlot.width) state.diskPlot.setSize({ width, height: chartHeight() });
        });
        state.diskObserver.observe(diskHistoryEl);
      }
    }

    /** This host's alerts: a badge each (pending and firing), and the
     *  thresholds drawn on the charts of their metrics. */
    async function loadHostAlerts() {
      let alerts;
      try {
        alerts = (await loadAlerts()).filter((alert) => alert.host === name && alert.state !== "resolved");
      } catch (_) {
        return;
      }
      if (state.stopped) return;
      hostAlerts.replaceChildren(...alerts.map((alert) => h("a", {
        class: `badge state-${alert.state} sev-${alert.severity}`, href: "#/alerts", "data-rule": alert.rule,
        title: `${alert.condition} · ${alert.state} since ${dateTime(alert.since, true)}`,
      }, `${alert.rule} ${alert.state}`)));
      const thresholds = alerts.filter((alert) => typeof alert.threshold === "number")
        .map((alert) => ({ metric: alert.metric, value: alert.threshold, state: alert.state }));
      const key = JSON.stringify(thresholds);
      if (key === state.thresholdKey) return;
      state.thresholdKey = key;
      state.thresholds = thresholds;
      for (const chart of state.charts) {
        updateChartAttributes(chart);
        if (chart.plot) chart.plot.redraw();
      }
    }

    /** The alert thresholds on this chart's metrics. */
    function chartThresholds(chart) {
      const keys = new Set(chart.group.metrics.map((metric) => metric.key));
      return (state.thresholds || []).filter((threshold) => keys.has(threshold.metric));
    }

    /** Dashed lines at the thresholds, red when firing, amber when pending. */
    function drawThresholds(u, chart) {
      const ctx = u.ctx;
      for (const threshold of chartThresholds(chart)) {
        const y = Math.round(u.valToPos(threshold.value, "y", true));
        if (!Number.isFinite(y) || y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
        ctx.save();
        ctx.strokeStyle = cssVar(threshold.state === "firing" ? "--bad" : "--c2");
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(u.bbox.left, y);
        ctx.lineTo(u.bbox.left + u.bbox.width, y);
        ctx.stroke();
        ctx.restore();
      }
    }

    async function loadClient() {
      try {
        const reply = await api("/clients");
        if (state.stopped) return;
        state.client = (reply.clients || []).find((client) => client.name === name) || null;
        if (state.client && document.activeElement !== labelsInput && !labelsInput.value) {
          labelsInput.value = (state.client.labels || []).join(" ");
        }
        renderStatus();
      } catch (_) {
        // The header keeps its last state; the charts say if the API is down.
      }
    }

    /** The header, every second: online and "last seen" from the host's
     *  own interval (live samples move it at once), and "Live" lit only
     *  while the socket is open and samples keep arriving. */
    function renderStatus() {
      const client = state.client;
      const now = Date.now() / 1000;
      const interval = (client && client.interval_seconds) || 60;
      // Judged on the server's clock (its online flag, as the fleet shows
      // it) or on this browser's (when a live sample last arrived), never
      // by comparing the two: a browser whose clock is off must not call
      // a live host offline.
      const arrived = Boolean(state.lastArrival && now - state.lastArrival < 3 * interval + 5);
      const fresh = arrived || Boolean(client && client.online && !state.lastArrival);
      const online = Boolean(client && (client.online || arrived) && fresh);
      status.className = `dot${online ? " online" : ""}`;
      status.setAttribute("aria-label", online ? "online" : "offline");
      status.title = online ? "online" : "offline";
      let text = client && client.last_seen ? `${online ? "online" : "offline"} · last seen ${ago(client.last_seen)}` : "no samples yet";
      if (client && client.interval_seconds) text += ` · every ${duration(client.interval_seconds)}`;
      seen.textContent = text;
      const lit = Boolean(state.socketOpen && fresh);
      live.classList.toggle("on", lit);
      live.title = lit
        ? "New samples appear as they arrive"
        : state.socketOpen
          ? "Connected; no sample from this host lately"
          : "Not connected; the page reloads every 10 s";
    }

    // ---- charts

    function hasData(key) {
      const series = state.data.metrics[key];
      return Boolean(series && series.avg.some((v) => v !== null && v !== undefined));
    }

    /** The metric group a chart shows now, or null when it has no data. */
    function groupFor(def) {
      return def.groups.find((g) => hasData(g.metrics[0].key)) || null;
    }

    /** Whether a chart belongs on this host's page: `always` ones do;
     *  `ifReported` ones when the host sends the metric at all (its latest
     *  sample has it), with or without data in this range; the others when
     *  they have data here, and `hideWhenZero` ones (a host without swap)
     *  only when some of it is not zero. */
    function shows(def, group) {
      if (def.always) return true;
      if (def.ifReported) {
        const latest = (state.client && state.client.latest) || {};
        return Boolean(group) || def.groups.some((g) => g.metrics.some((m) => typeof latest[m.key] === "number"));
      }
      if (!group) return false;
      if (def.hideWhenZero) return group.metrics.some((m) => (state.data.metrics[m.key]?.max || []).some((v) => v > 0));
      return true;
    }

    function destroyCharts() {
      for (const chart of state.charts) {
        if (chart.observer) chart.observer.disconnect();
        if (chart.plot) chart.plot.destroy();
      }
      state.charts = [];
    }

    function renderCharts() {
      destroyCharts();
      charts.replaceChildren();
      for (const def of CHARTS) {
        const group = groupFor(def);
        if (!shows(def, group)) continue;
        const primary = (group || def.groups[0]).metrics[0].key;
        const now = h("span", { class: "now" });
        const plotEl = h("div", { class: "plot" });
        const readout = h("div", { class: "readout" });
        const el = h("section", { class: "chart card", "data-chart": def.id, "data-metric": primary, "data-points": "0", "data-last-value": "" },
          h("header", {}, h("h3", {}, def.title), now),
          plotEl, readout);
        charts.append(el);
        const chart = { def, group, el, now, plotEl, readout, plot: null, observer: null, primary };
        state.charts.push(chart);
        if (group) createPlot(chart);
        else plotEl.append(h("div", { class: "no-data" }, "No data in this range"));
        updateChartAttributes(chart);
      }
    }

    /** Whether buckets hold several samples, so min – max bands mean
     *  something: decided when the range is loaded, and kept while live
     *  samples merge into it (the charts keep their series). */
    function banded() {
      return state.data.banded;
    }

    /** uPlot's columns for a chart: time, then per metric avg (and min,
     *  max when banded). A null row is put into gaps longer than three
     *  points' spacing, so uPlot leaves an offline stretch empty instead of
     *  drawing a straight line across it. */
    function columns(chart) {
      const data = state.data;
      const spacing = Math.max(data.step || 0, typicalSpacing(data.time));
      const keys = [];
      for (const metric of chart.group.metrics) {
        const series = data.metrics[metric.key] || { min: [], avg: [], max: [] };
        keys.push(series.avg);
        if (banded() && metric.band !== false) keys.push(series.min, series.max);
      }
      const out = [[], ...keys.map(() => [])];
      data.time.forEach((t, i) => {
        if (i > 0 && t - data.time[i - 1] > 3 * spacing) {
          out[0].push(data.time[i - 1] + spacing);
          for (let k = 0; k < keys.length; k++) out[k + 1].push(null);
        }
        out[0].push(t);
        for (let k = 0; k < keys.length; k++) out[k + 1].push(keys[k][i] ?? null);
      });
      return out;
    }

    function createPlot(chart) {
      const { group, def } = chart;
      const unit = group.unit;
      const muted = cssVar("--muted");
      const grid = cssVar("--grid");
      const series = [{}];
      const bands = [];
      const bandSeries = new Set();
      for (const metric of group.metrics) {
        const color = cssVar(metric.color);
        const avgIdx = series.length;
        series.push({
          label: metric.label,
          stroke: color,
          width: metric.dash ? 1 : 1.75,
          dash: metric.dash ? [6, 4] : undefined,
          fill: !metric.dash && group.metrics.length === 1 && !banded() ? alpha(color, 0.1) : undefined,
          points: { show: false },
        });
        if (banded() && metric.band !== false) {
          // min and max: invisible edges of the band around the average.
          for (const label of ["min", "max"]) {
            bandSeries.add(series.length);
            series.push({ label: `${metric.label} ${label}`, stroke: "transparent", width: 0, points: { show: false } });
          }
          bands.push({ series: [avgIdx + 2, avgIdx + 1], fill: alpha(color, 0.22) });
        }
      }
      const yMax = def.yMax;
      const options = {
        width: Math.max(200, chart.plotEl.clientWidth),
        height: chartHeight(),
        legend: { show: false },
        cursor: {
          sync: { key: `host-${name}` },
          drag: { x: true, y: false, setScale: false },
          points: { size: (u, i) => (bandSeries.has(i) ? 0 : 7) },
          // Double-click goes back to the preset (refetching), instead of
          // uPlot's own rescale to the loaded data.
          bind: { dblclick: () => () => { if (state.zoom) selectPreset(state.preset); return null; } },
        },
        scales: {
          x: { time: true, range: () => [state.range.from, state.range.to] },
          y: {
            range: (u, min, max) => {
              if (yMax) return [0, yMax];
              if (def.yAuto && min !== null && max !== null) return uPlot.rangeNum(min, max, 0.1, true);
              const top = max === null || max <= 0 ? 1 : max;
              return uPlot.rangeNum(0, top, 0.1, true);
            },
          },
        },
        tzDate: zonedDate,
        axes: [
          { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, values: timeTicks },
          {
            stroke: muted,
            grid: { stroke: grid, width: 1 },
            ticks: { show: false },
            values: (u, splits, axisIdx, space, increment) => splits.map((v) => formatTick(v, unit, increment)),
            size: axisSize,
            incrs: unit === "bytes" || unit === "bytes/s" ? BYTE_INCREMENTS : undefined,
          },
        ],
        series,
        bands,
        hooks: {
          setSelect: [(u) => {
            const { left, width } = u.select;
            if (width < 5) return;
            const from = u.posToVal(left, "x");
            const to = u.posToVal(left + width, "x");
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            zoomTo(from, to);
          }],
          setCursor: [(u) => renderReadout(chart, u.cursor.idx)],
          draw: [(u) => drawThresholds(u, chart)],
        },
      };
      chart.plot = new uPlot(options, columns(chart), chart.plotEl);
      chart.observer = new ResizeObserver(() => {
        const width = Math.max(200, chart.plotEl.clientWidth);
        if (chart.plot && (width !== chart.plot.width || chart.plot.height !== chartHeight())) {
          chart.plot.setSize({ width, height: chartHeight() });
        }
      });
      chart.observer.observe(chart.plotEl);
    }

    /** The latest value of a metric: its last non-null average. */
    function lastValue(key) {
      const series = state.data.metrics[key];
      if (!series) return null;
      for (let i = series.avg.length - 1; i >= 0; i--) {
        if (series.avg[i] !== null && series.avg[i] !== undefined) return series.avg[i];
      }
      return null;
    }

    function updateChartAttributes(chart) {
      const series = state.data.metrics[chart.primary];
      const points = series ? series.avg.filter((v) => v !== null && v !== undefined).length : 0;
      const last = lastValue(chart.primary);
      chart.el.dataset.points = String(points);
      chart.el.dataset.lastValue = last === null ? "" : String(last);
      chart.el.dataset.resolution = state.data.resolution;
      chart.el.dataset.step = String(state.data.step || 0);
      chart.el.dataset.thresholds = chartThresholds(chart).map((threshold) => threshold.value).join(",");
      chart.now.textContent = last === null || !chart.group ? "" : formatValue(last, chart.group.unit);
      // A hovered point keeps its read-out as samples arrive.
      renderReadout(chart, chart.plot ? chart.plot.cursor.idx : null);
    }

    /** Values at the hovered point, or the latest ones when not hovering. */
    function renderReadout(chart, idx) {
      if (!chart.group) return;
      const data = chart.plot ? chart.plot.data : null;
      const items = [];
      const hovering = idx !== null && idx !== undefined && data;
      if (hovering) items.push(h("span", {}, dateTime(data[0][idx], spansDays(state.range))));
      let column = 1;
      for (const metric of chart.group.metrics) {
        const withBand = banded() && metric.band !== false;
        let text;
        if (hovering) {
          const avg = data[column][idx];
          text = formatValue(avg, chart.group.unit);
          if (withBand && avg !== null) {
            text += ` (${formatValue(data[column + 1][idx], chart.group.unit)} – ${formatValue(data[column + 2][idx], chart.group.unit)})`;
          }
        } else {
          text = formatValue(lastValue(metric.key), chart.group.unit);
        }
        column += withBand ? 3 : 1;
        const swatch = h("i", { class: "swatch" });
        swatch.style.background = cssVar(metric.color);
        items.push(h("span", { class: "key" }, swatch, `${metric.label} ${text}`));
      }
      if (!hovering && banded()) items.push(h("span", {}, "shaded: min – max"));
      chart.readout.replaceChildren(...items);
    }

    // ---- live updates

    /** A live sample into the view: merged into its bucket at the view's
     *  step (min, max, and the average weighted by the bucket's count), or
     *  a bucket of its own; the charts are updated in place, never rebuilt
     *  unless a chart's metric group changes. */
    function appendSample(message) {
      if (!state.data || message.client !== name || typeof message.time !== "number") return;
      const data = state.data;
      const step = data.step || 0;
      const t = step > 0 ? Math.floor(message.time / step + 1e-9) * step : message.time;
      const values = message.values || {};
      for (const key of Object.keys(values)) {
        if (!data.metrics[key]) {
          const nulls = () => data.time.map(() => null);
          data.metrics[key] = { min: nulls(), avg: nulls(), max: nulls(), n: data.time.map(() => 0) };
        }
      }
      // Agents back-fill after an outage, so a sample may be older than the
      // last one shown: keep the columns sorted.
      const same = (a, b) => Math.abs(a - b) < 1e-6;
      let at = data.time.length;
      while (at > 0 && data.time[at - 1] > t && !same(data.time[at - 1], t)) at--;
      const merge = at > 0 && same(data.time[at - 1], t);
      if (merge) {
        const i = at - 1;
        for (const [key, series] of Object.entries(data.metrics)) {
          const v = values[key];
          if (typeof v !== "number") continue;
          const n = series.n[i] || 0;
          if (n === 0 || series.avg[i] === null || series.avg[i] === undefined) {
            series.min[i] = series.avg[i] = series.max[i] = v;
          } else {
            series.min[i] = Math.min(series.min[i], v);
            series.max[i] = Math.max(series.max[i], v);
            series.avg[i] = (series.avg[i] * n + v) / (n + 1);
          }
          series.n[i] = n + 1;
        }
        data.count[i] = (data.count[i] || 0) + 1;
      } else {
        data.time.splice(at, 0, t);
        data.count.splice(at, 0, 1);
        for (const [key, series] of Object.entries(data.metrics)) {
          const v = typeof values[key] === "number" ? values[key] : null;
          series.min.splice(at, 0, v);
          series.avg.splice(at, 0, v);
          series.max.splice(at, 0, v);
          series.n.splice(at, 0, v === null ? 0 : 1);
        }
      }
      // Slide the window: the range ends now, so the oldest points leave.
      state.range = currentRange();
      let drop = 0;
      while (drop < data.time.length && data.time[drop] + step <= state.range.from) drop++;
      if (drop) {
        data.time.splice(0, drop);
        data.count.splice(0, drop);
        for (const series of Object.values(data.metrics)) {
          series.min.splice(0, drop);
          series.avg.splice(0, drop);
          series.max.splice(0, drop);
          series.n.splice(0, drop);
        }
      }
      state.lastArrival = Date.now() / 1000;
      if (state.client) {
        state.client.last_seen = Math.max(state.client.last_seen || 0, message.time);
        state.client.online = true;
      }
      renderStatus();
      redrawLive();
    }

    /** The charts after live data changed, in place. */
    function redrawLive() {
      renderToolbar();
      // A chart that had no data, or a memory chart that can now show
      // bytes, needs other series: only then are the charts built anew.
      const shown = new Set(state.charts.map((chart) => chart.def));
      const changed = state.charts.some((chart) => groupFor(chart.def) !== chart.group)
        || CHARTS.some((def) => !shown.has(def) && shows(def, groupFor(def)));
      if (changed) {
        renderCharts();
        return;
      }
      for (const chart of state.charts) {
        if (chart.plot) chart.plot.setData(columns(chart));
        updateChartAttributes(chart);
      }
    }

    function syncLive() {
      if (isLive()) openSocket();
      else closeSocket();
    }

    function openSocket() {
      if (state.socket || state.socketRetry || state.stopped) return;
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(`${scheme}//${location.host}${API}${clientPath(name)}/live`);
      state.socket = socket;
      let opened = false;
      socket.onopen = () => {
        opened = true;
        state.socketFailures = 0;
        state.socketOpen = true;
        renderStatus();
        stopPolling();
      };
      socket.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          return;
        }
        if (message.type === "READY") catchUp();
        else if (message.type === "SAMPLE") {
          if (state.buffer) state.buffer.push(message);
          else appendSample(message);
        }
      };
      socket.onclose = () => {
        if (state.socket !== socket) return;
        state.socket = null;
        state.socketOpen = false;
        renderStatus();
        if (state.stopped || !isLive()) return;
        // Reconnect with backoff; meanwhile poll, so the page stays current.
        state.socketFailures += 1;
        const delay = Math.min(30000, 1000 * 2 ** Math.min(5, state.socketFailures - 1));
        state.socketRetry = setTimeout(() => {
          state.socketRetry = null;
          // Samples stored while the socket was down come with the reload.
          if (opened) load();
          else openSocket();
        }, delay);
        startPolling();
      };
    }

    function closeSocket() {
      clearTimeout(state.socketRetry);
      state.socketRetry = null;
      stopPolling();
      if (state.socket) {
        const socket = state.socket;
        state.socket = null;
        socket.close();
      }
      state.socketOpen = false;
      renderStatus();
    }

    function startPolling() {
      if (!state.poll) state.poll = setInterval(() => { if (isLive()) load(); }, 10000);
    }

    function stopPolling() {
      clearInterval(state.poll);
      state.poll = null;
    }

    // A host that went quiet opens on the smallest preset that still shows
    // its last samples, not on an empty hour.
    loadClient().then(() => {
      if (state.stopped) return;
      if (asked.from > 0 && asked.to > asked.from) {
        zoomTo(asked.from, asked.to);
        return;
      }
      if (asked.preset) {
        selectPreset(asked.preset);
        return;
      }
      const lastSeen = state.client && state.client.last_seen;
      if (lastSeen) {
        const age = Date.now() / 1000 - lastSeen;
        state.preset = PRESETS.find((preset) => preset.seconds > age + 60) || PRESETS[PRESETS.length - 1];
      }
      selectPreset(state.preset);
    });
    loadFilesystems();
    loadHostAlerts();
    const timers = [
      setInterval(loadClient, FLEET_REFRESH_MS),
      setInterval(loadHostAlerts, FLEET_REFRESH_MS),
      setInterval(loadFilesystems, FLEET_REFRESH_MS),
      // A live view's disk lines move on with it (a zoomed one stays put).
      setInterval(() => { if (isLive() && state.socketOpen) loadDiskHistory(); }, FLEET_REFRESH_MS),
      setInterval(renderStatus, 1000),
    ];
    return {
      stop() {
        state.stopped = true;
        timers.forEach(clearInterval);
        closeSocket();
        destroyCharts();
        if (state.diskObserver) state.diskObserver.disconnect();
        if (state.diskPlot) state.diskPlot.destroy();
      },
    };
  }

  /** The usual distance between neighbouring points: the median of the
   *  last few hundred gaps, which ignores the odd outage. */
  function typicalSpacing(time) {
    const gaps = [];
    for (let i = Math.max(1, time.length - 300); i < time.length; i++) gaps.push(time[i] - time[i - 1]);
    if (!gaps.length) return 0;
    gaps.sort((a, b) => a - b);
    return gaps[Math.floor(gaps.length / 2)];
  }

  function chartHeight() {
    return window.matchMedia("(max-width: 640px)").matches ? 170 : 210;
  }

  /** Room for the longest tick label of a y axis, measured in its font. */
  function axisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    const gap = axis.gap ?? 5;
    const ticks = axis.ticks && axis.ticks.show ? axis.ticks.size : 0;
    let widest = 0;
    if (values) {
      u.ctx.font = axis.font[0];
      for (const value of values) widest = Math.max(widest, u.ctx.measureText(value).width);
    }
    return Math.ceil(widest / (window.devicePixelRatio || 1) + gap + ticks + 8);
  }

  // ------------------------------------------------------------- server

  /** #/alerts: what fires now, the rules (admins add and delete the API's
   *  and test channels), and the history with each notification's fate. */
  function alertsView(main) {
    let stopped = false;
    const admin = session.role === "admin";
    const failure = h("p", { class: "message error-text", hidden: true });
    const activeBody = h("tbody");
    const activeEmpty = h("p", { class: "empty muted", id: "alerts-none" }, "Nothing is firing.");
    const rulesBody = h("tbody");
    const channelsList = h("div", { class: "host-alerts", id: "alert-channels" });
    const historyBody = h("tbody");
    const formNote = h("span", { class: "muted", id: "rule-note" });
    const field = (label, input) => h("label", {}, label, input);
    const input = (attrs) => h("input", { autocomplete: "off", ...attrs });
    const form = {
      name: input({ id: "rule-name", placeholder: "cpu-hot", required: true }),
      metric: h("select", { id: "rule-metric" }), // the server's list, with the rules
      comparison: h("select", { id: "rule-comparison" }, h("option", { value: "above" }, "above"), h("option", { value: "below" }, "below")),
      threshold: input({ id: "rule-threshold", type: "number", step: "any", placeholder: "90" }),
      over: input({ id: "rule-over", type: "number", min: "0", placeholder: "window, s" }),
      hold: input({ id: "rule-for", type: "number", min: "0", placeholder: "for, s" }),
      hosts: input({ id: "rule-hosts", placeholder: "* or web-* or a, b" }),
      severity: h("select", { id: "rule-severity" }, ...["warning", "critical", "info"].map((v) => h("option", { value: v }, v))),
      channels: h("span", { class: "channels", id: "rule-channels" }),
    };
    const ruleForm = h("form", { class: "rule-form", id: "rule-form", hidden: !admin },
      field("Name", form.name), field("Metric", form.metric), field("When", form.comparison),
      field("Threshold (s for host_silent)", form.threshold), field("Over, seconds", form.over),
      field("For, seconds", form.hold), field("Hosts", form.hosts), field("Severity", form.severity),
      field("Channels", form.channels),
      h("button", { type: "submit", class: "button primary", id: "rule-save" }, "Save rule"), formNote);
    const card = (id, title, ...children) => h("section", { class: "card", id }, h("header", {}, h("h3", {}, title)), ...children);
    const table = (headers, body) => h("table", { class: "fleet" }, h("thead", {}, h("tr", {}, ...headers.map((text) => h("th", {}, text)))), body);
    main.append(h("section", { class: "view", id: "alerts-view" },
      h("div", { class: "view-head" }, h("h1", {}, "Alerts")),
      failure,
      h("div", { class: "alerts-grid" },
        card("alerts-active", "Now", table(["", "Rule", "Host", "Condition", "Value", "Since"], activeBody), activeEmpty),
        card("alerts-rules", "Rules", table(["Rule", "Condition", "Hosts", "Severity", "Channels", "From", ""], rulesBody),
          h("div", { class: "rule-form" }, h("span", { class: "muted" }, "Channels:"), channelsList), ruleForm),
        card("alerts-history", "History", table(["Time", "Rule", "Host", "State", "Value", "Notifications"], historyBody)))));

    form.metric.addEventListener("change", () => {
      const silent = form.metric.value === "host_silent";
      form.comparison.disabled = form.over.disabled = silent;
    });
    ruleForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = form.name.value.trim();
      const threshold = Number(form.threshold.value);
      const spec = { name, metric: form.metric.value, severity: form.severity.value,
        channels: [...form.channels.querySelectorAll("input:checked")].map((box) => box.value) };
      if (spec.metric === "host_silent") spec.silent_seconds = threshold;
      else {
        spec[form.comparison.value] = threshold;
        if (form.over.value) spec.over_seconds = Number(form.over.value);
      }
      if (form.hold.value) spec.for_seconds = Number(form.hold.value);
      const hosts = form.hosts.value.trim();
      if (hosts && hosts !== "*") spec.hosts = hosts.includes(",") ? hosts.split(",").map((host) => host.trim()).filter(Boolean) : hosts;
      try {
        await api(`/alerts/rules/${encodeURIComponent(name)}`, { method: "PUT", body: spec });
        formNote.textContent = `Saved ${name}`;
        refresh();
      } catch (e) {
        formNote.textContent = e.message;
      }
    });

    function hostLink(host) {
      return h("a", { href: `#/host/${encodeURIComponent(host)}` }, host);
    }

    function renderActive(alerts) {
      activeEmpty.hidden = alerts.some((alert) => alert.state !== "resolved");
      activeBody.replaceChildren(...alerts.map((alert) => h("tr", { "data-rule": alert.rule, "data-host": alert.host, "data-state": alert.state },
        h("td", {}, h("span", { class: `badge state-${alert.state}` }, alert.state), " ", h("span", { class: `badge sev-${alert.severity}` }, alert.severity)),
        h("td", {}, alert.rule), h("td", { class: "host" }, hostLink(alert.host)),
        h("td", {}, alert.condition), h("td", { class: "num" }, alertValue(alert)),
        h("td", {}, `${dateTime(alert.since, true)} (${ago(alert.since)})`))));
    }

    function renderRules({ rules = [], channels = [], metrics = [] }) {
      if (form.metric.options.length !== metrics.length) {
        form.metric.replaceChildren(...metrics.map((metric) => h("option", { value: metric }, metric)));
      }
      rulesBody.replaceChildren(...rules.map((rule) => h("tr", { "data-rule": rule.name, "data-source": rule.source },
        h("td", {}, rule.name), h("td", {}, rule.condition + (rule.for_seconds ? ` for ${duration(rule.for_seconds)}` : "")),
        h("td", {}, Array.isArray(rule.hosts) ? rule.hosts.join(", ") : rule.hosts || "*"),
        h("td", {}, h("span", { class: `badge sev-${rule.severity}` }, rule.severity)),
        h("td", {}, (rule.channels || []).join(", ") || "–"),
        h("td", { class: "muted", title: rule.source === "config" ? "Declared in the config file: change it there" : "Made here or through the API" }, rule.source),
        h("td", {}, admin && rule.source === "api" ? h("button", { type: "button", class: "button ghost", "data-delete": rule.name,
          onclick: () => deleteRule(rule.name) }, "Delete") : ""))));
      channelsList.replaceChildren(...(channels.length ? channels.map((channel) => h("span", { class: "badge", "data-channel": channel.name },
        `${channel.name} (${channel.kind})`,
        admin ? h("button", { type: "button", class: "button ghost", "data-test": channel.name, onclick: (event) => testChannel(channel.name, event.target) }, "Send test") : ""))
        : [h("span", { class: "muted" }, "none: declare them in the config file's alerts.channels (docs/alerts.md)")]));
      const checked = new Set([...form.channels.querySelectorAll("input:checked")].map((box) => box.value));
      form.channels.replaceChildren(...channels.map((channel) => h("label", {},
        h("input", { type: "checkbox", value: channel.name, ...(checked.has(channel.name) ? { checked: true } : {}) }), channel.name)));
    }

    function renderHistory(transitions) {
      historyBody.replaceChildren(...transitions.map((t) => h("tr", { "data-state": t.state, "data-rule": t.rule, "data-host": t.host },
        h("td", {}, dateTime(t.at, true)), h("td", {}, t.rule), h("td", { class: "host" }, hostLink(t.host)),
        h("td", {}, h("span", { class: `badge state-${t.state}` }, t.repeat ? "firing (again)" : t.state)),
        h("td", { class: "num" }, t.value === null ? "–" : num(t.value, 1)),
        h("td", {}, ...(t.deliveries.length ? t.deliveries.map((d) => h("span", {
          class: `badge ${d.status === "failed" ? "sev-critical" : d.status === "pending" ? "sev-warning" : ""}`,
          title: d.last_error ? `${d.attempts} attempts; last: ${d.last_error}` : `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`,
        }, `${d.channel}: ${d.status}`)) : ["–"])))));
    }

    async function deleteRule(name) {
      try {
        await api(`/alerts/rules/${encodeURIComponent(name)}`, { method: "DELETE" });
        refresh();
      } catch (e) {
        formNote.textContent = e.message;
      }
    }

    async function testChannel(name, button) {
      button.disabled = true;
      try {
        await api(`/alerts/channels/${encodeURIComponent(name)}/test`, { method: "POST" });
        button.textContent = "Sent";
      } catch (e) {
        button.textContent = "Failed";
        button.title = e.message;
      }
      button.disabled = false;
    }

    async function refresh() {
      try {
        const [alerts, rules, history] = await Promise.all([loadAlerts(), api("/alerts/rules"), api("/alerts/history?limit=100")]);
        if (stopped) return;
        failure.hidden = true;
        renderActive(alerts);
        renderRules(rules);
        renderHistory(history.transitions || []);
      } catch (e) {
        if (stopped || e.status === 401) return;
        failure.textContent = `Cannot load the alerts: ${e.message}`;
        failure.hidden = false;
      }
    }

    refresh();
    const timer = setInterval(refresh, FLEET_REFRESH_MS);
    return {
      stop() {
        stopped = true;
        clearInterval(timer);
      },
    };
  }

  function serverView(main) {
    if (session.role !== "admin") {
      main.append(h("section", { class: "view", id: "server-view" },
        h("div", { class: "view-head" }, h("h1", {}, "Server")),
        h("p", { class: "message" }, "Only administrators can see the server page.")));
      return { stop() {} };
    }
    let stopped = false;
    const history = { time: [], cpu: [], memory: [] };
    const cards = h("div", { class: "cards", id: "server-cards" });
    const failure = h("p", { class: "message error-text", hidden: true });
    const cpuEl = h("div", { class: "plot" });
    const memEl = h("div", { class: "plot" });
    const plots = [];
    const observers = [];
    const subtitle = h("p", { class: "summary" });
    main.append(h("section", { class: "view", id: "server-view" },
      h("div", { class: "view-head" }, h("h1", {}, "Server"), subtitle),
      failure,
      cards,
      h("div", { class: "charts" },
        h("section", { class: "chart card", "data-chart": "server-cpu" }, h("header", {}, h("h3", {}, "Server CPU"), h("span", { class: "muted" }, "last 15 minutes")), cpuEl),
        h("section", { class: "chart card", "data-chart": "server-memory" }, h("header", {}, h("h3", {}, "Server memory"), h("span", { class: "muted" }, "last 15 minutes")), memEl))));
    // Hosts online, counted as the fleet page counts them.
    let fleet = null;

    function card(field, label, value, detail, percent) {
      const parts = [h("div", { class: "label" }, label), h("div", { class: "value" }, value)];
      if (detail) parts.push(h("div", { class: "detail" }, detail));
      if (percent !== undefined && percent !== null) {
        const bar = h("i");
        bar.style.width = `${Math.min(100, Math.max(0, percent))}%`;
        parts.push(h("div", { class: "bar" }, bar));
      }
      return h("div", { class: "card stat", "data-field": field }, ...parts);
    }

    function share(used, total) {
      return total ? (100 * used) / total : null;
    }

    function render(s) {
      const host = s.host || {};
      const ingest = s.ingest || {};
      const memPct = share(host.memory_used_bytes, host.memory_total_bytes);
      const diskPct = share(host.storage_used_bytes, host.storage_total_bytes);
      subtitle.textContent = `sysmon ${s.version} · ${s.store === "postgresql" ? "PostgreSQL" : "SQLite"} · up ${duration(s.uptime_seconds)}`;
      cards.replaceChildren(
        card("cpu_percent", "CPU", formatValue(host.cpu_percent, "percent"), null, host.cpu_percent),
        card("memory", "Memory", memPct === null ? "–" : `${num(memPct, 0)} %`, `${bytes(host.memory_used_bytes || 0)} of ${bytes(host.memory_total_bytes || 0)}`, memPct),
        card("storage", "Storage", diskPct === null ? "–" : `${num(diskPct, 0)} %`, `${bytes(host.storage_used_bytes || 0)} of ${bytes(host.storage_total_bytes || 0)}`, diskPct),
        card("clients", "Hosts", fleet ? `${num(fleet.online, 0)} of ${num(fleet.total, 0)}` : num(s.clients, 0),
          fleet ? "online now, of those registered" : "registered"),
        card("samples_acknowledged", "Samples stored", num(ingest.samples_acknowledged, 0), "since start"),
        card("queue_depth", "Ingest queue", num(ingest.queue_depth, 0), "requests waiting"),
        card("open_websockets", "WebSockets", num(ingest.open_websockets, 0), "open now"),
        card("uptime", "Uptime", duration(s.uptime_seconds), `since ${dateTime(s.started_at, true)}`),
        card("version", "Version", s.version, s.store === "postgresql" ? "PostgreSQL store" : "SQLite store"));
      if (s.history) {
        // The server's own readings of the last 15 minutes, once.
        history.time = s.history.time.slice();
        history.cpu = s.history.cpu_percent.slice();
        history.memory = s.history.memory_percent.slice();
      } else {
        // Stamped with the server's clock, as its history is.
        const at = s.started_at + s.uptime_seconds;
        if (!history.time.length || at > history.time[history.time.length - 1]) {
          history.time.push(at);
          history.cpu.push(host.cpu_percent ?? null);
          history.memory.push(memPct);
        }
      }
      const last = history.time[history.time.length - 1];
      while (history.time.length > SERVER_HISTORY || (history.time.length && history.time[0] < last - SERVER_HISTORY_SECONDS)) {
        for (const column of Object.values(history)) column.shift();
      }
      cpuEl.parentElement.dataset.points = String(history.time.length);
      memEl.parentElement.dataset.points = String(history.time.length);
      if (!plots.length) {
        plots.push(historyPlot(cpuEl, "CPU", "--c1", [history.time, history.cpu]));
        plots.push(historyPlot(memEl, "Memory", "--c3", [history.time, history.memory]));
      } else {
        plots[0].setData([history.time, history.cpu]);
        plots[1].setData([history.time, history.memory]);
      }
    }

    function historyPlot(el, label, colorVar, data) {
      const color = cssVar(colorVar);
      const muted = cssVar("--muted");
      const grid = cssVar("--grid");
      const plot = new uPlot({
        width: Math.max(200, el.clientWidth),
        height: chartHeight(),
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { size: 7 } },
        // At least 10 s wide, so the first readings do not get sub-second
        // ticks; the line grows from the left as readings come.
        scales: { x: { time: true, range: (u, min, max) => [min, Math.max(max, min + 10)] }, y: { range: [0, 100] } },
        tzDate: zonedDate,
        axes: [
          { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, values: timeTicks },
          { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { show: false }, values: (u, splits) => splits.map((v) => `${v} %`), size: axisSize },
        ],
        series: [{}, { label, stroke: color, width: 1.75, fill: alpha(color, 0.1), points: { show: false } }],
      }, data, el);
      const observer = new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth), height: chartHeight() }));
      observer.observe(el);
      observers.push(observer);
      return plot;
    }

    async function refreshFleet() {
      try {
        const reply = await api("/clients");
        const clients = reply.clients || [];
        fleet = { total: clients.length, online: clients.filter((client) => client.online).length };
      } catch (_) {
        fleet = null;
      }
    }

    let firstRefresh = true;
    async function refresh() {
      try {
        const reply = await api(firstRefresh ? "/server?history=1" : "/server");
        firstRefresh = false;
        if (stopped) return;
        failure.hidden = true;
        render(reply);
      } catch (e) {
        if (stopped || e.status === 401) return;
        failure.textContent = e.status === 403 ? "Only administrators can see the server page." : `Cannot load the server's status: ${e.message}`;
        failure.hidden = false;
        // Asking again will not make this user an administrator.
        if (e.status === 403) {
          clearInterval(timer);
          clearInterval(fleetTimer);
        }
      }
    }

    refreshFleet().then(refresh);
    const timer = setInterval(refresh, SERVER_REFRESH_MS);
    const fleetTimer = setInterval(refreshFleet, FLEET_REFRESH_MS);
    return {
      stop() {
        stopped = true;
        clearInterval(timer);
        clearInterval(fleetTimer);
        observers.forEach((observer) => observer.disconnect());
        plots.forEach((plot) => plot.destroy());
      },
    };
  }

  // --------------------------------------------------------------- boot

  // ---------------------------------------------------------------- theme

  const THEMES = ["system", "light", "dark"];
  const THEME_KEY = "sysmon-theme";

  /** The chosen theme (system, light or dark), remembered per browser. */
  function chosenTheme() {
    let chosen = null;
    try {
      chosen = localStorage.getItem(THEME_KEY);
    } catch (_) {
      // Storage refused (private mode): the system's theme, every time.
    }
    return THEMES.includes(chosen) ? chosen : "system";
  }

  /** Applies the chosen theme; charts read the palette when drawn, so the
   *  view is drawn again when it changes. */
  function applyTheme(redraw) {
    const chosen = chosenTheme();
    const dark = chosen === "dark" || (chosen === "system" && window.matchMedia("(prefers-color-scheme: dark)").matches);
    const theme = dark ? "dark" : "light";
    const button = $("#theme");
    button.textContent = `Theme: ${chosen}`;
    button.dataset.theme = chosen;
    if (document.documentElement.dataset.theme === theme) return;
    document.documentElement.dataset.theme = theme;
    if (redraw) route();
  }

  function cycleTheme() {
    const next = THEMES[(THEMES.indexOf(chosenTheme()) + 1) % THEMES.length];
    try {
      if (next === "system") localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, next);
    } catch (_) {
      // Not remembered; applied for this page all the same.
    }
    applyTheme(true);
  }

  async function boot() {
    $("#logout").addEventListener("click", logout);
    $("#theme").addEventListener("click", cycleTheme);
    window.addEventListener("hashchange", route);
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(true));
    applyTheme(false);
    try {
      session = await api("/session");
    } catch (_) {
      session = null;
    }
    route();
  }

  if (typeof uPlot === "undefined") {
    $("#main").replaceChildren(h("p", { class: "message error-text" }, "The chart library did not load; reload the page."));
  } else {
    boot();
  }
})();
