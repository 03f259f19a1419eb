/* The console's one script, no build step. The first part is the toolkit every page uses
   (window.EBD): EBD.api() calls the JSON API with the session cookie and the CSRF header,
   EBD.el() builds DOM (never innerHTML: every text came from someone else), EBD.t() gives
   a label in the page's language. The second part fills the pages of the alerts. */
"use strict";

(function () {
  const labels = JSON.parse(document.getElementById("console-labels").textContent || "{}");
  const meta = (name) => {
    const node = document.querySelector(`meta[name="${name}"]`);
    return node ? node.getAttribute("content") || "" : "";
  };
  const lang = meta("console-lang") || "zh";
  let csrfToken = meta("csrf-token");

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  /** A label in the page's language; {name} placeholders filled from vars. */
  function t(key, vars) {
    let text = Object.prototype.hasOwnProperty.call(labels, key) ? labels[key] : key;
    if (vars) {
      for (const [k, v] of Object.entries(vars)) text = text.split(`{${k}}`).join(String(v));
    }
    return text;
  }

  async function csrf(path) {
    // Signing in is the one change made before there is a session (and a token).
    if (!csrfToken && path !== "/api/v1/session") {
      try {
        const me = await api("GET", "/api/v1/me", undefined, { noRedirect: true });
        csrfToken = me.data.csrf || "";
      } catch (_) {
        csrfToken = "";
      }
    }
    return csrfToken;
  }

  /** Calls the API; resolves {status, data}; rejects with ApiError (a 401 goes to /login
   *  unless opts.noRedirect). opts.query: an object of query parameters. */
  async function api(method, path, body, opts) {
    opts = opts || {};
    const headers = { Accept: "application/json" };
    if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = await csrf(path);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const url = opts.query ? `${path}?${qs(opts.query)}` : path;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "network", `${t("common.error")}: ${err.message}`, null);
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = { raw: text }; }
    }
    if (response.ok) return { status: response.status, data };
    const error = (data && data.error) || {};
    if (response.status === 401 && !opts.noRedirect) {
      window.location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    throw new ApiError(response.status, error.code || String(response.status),
      error.message || response.statusText, error.details || null);
  }

  function qs(params) {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") search.set(k, v);
    }
    return search.toString();
  }

  /** el("td", {class: "num", dataset: {code: "35"}, onclick: fn}, "text", node, ...) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  /** A message in the page's live region (kind: ok, error, warn). */
  function flash(message, kind, where) {
    const box = where || document.getElementById("flash");
    if (!box) return;
    box.className = `flash ${kind || "ok"}`;
    box.textContent = message;
    box.hidden = !message;
    if (message && kind === "error") box.setAttribute("role", "alert");
  }

  function errorText(err) {
    if (!(err instanceof ApiError)) return `${t("common.error")}: ${err}`;
    let text = err.message;
    if (Array.isArray(err.details)) {
      const parts = err.details
        .filter((d) => d && typeof d === "object" && d.message)
        .map((d) => (d.field ? `${d.field}: ${d.message}` : d.message));
      if (parts.length) text += ` (${parts.join("; ")})`;
    }
    return text;
  }

  // The API gives times in the engine's display zone (+08:00 by default): shown as given, so
  // an office reads Beijing time whatever zone the browser's machine is set to. A time made
  // in the browser (UTC, "Z") is moved to that zone first.
  const DISPLAY_OFFSET = document.documentElement.dataset.utcOffset || "+08:00";
  function fmtTime(iso) {
    if (!iso) return "—";
    let text = String(iso);
    if (text.endsWith("Z")) {
      const date = new Date(text);
      if (Number.isNaN(date.getTime())) return text;
      const [h, m] = DISPLAY_OFFSET.slice(1).split(":").map(Number);
      const minutes = (DISPLAY_OFFSET[0] === "-" ? -1 : 1) * (h * 60 + m);
      text = new Date(date.getTime() + minutes * 60000).toISOString().replace("Z", DISPLAY_OFFSET);
    }
    const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(text);
    return match ? `${match[1]} ${match[2]}` : text;
  }

  function fmtNum(n) {
    if (n === undefined || n === null) return "—";
    return Number(n).toLocaleString(lang === "en" ? "en-GB" : "zh-CN");
  }

  const SEVERITIES = ["red", "orange", "yellow", "blue"];
  // Severities as CAP names them, mapped to the four warning colours.
  const CAP_COLOURS = { extreme: "red", severe: "orange", moderate: "yellow", minor: "blue" };

  function colourOf(severity) {
    const s = String(severity || "").toLowerCase();
    return SEVERITIES.includes(s) ? s : CAP_COLOURS[s] || "";
  }

  /** A warning colour with its word: colour is never the only sign. */
  function sevBadge(severity) {
    const colour = colourOf(severity);
    return el("span", { class: `badge sev-${colour}` }, colour ? t(`sev.${colour}`) : String(severity || "—"));
  }

  function pct(part, whole) {
    return whole ? Math.floor((100 * part) / whole) : 0;
  }

  /** A progress bar with its figure as text (role progressbar for screen readers). */
  function progress(done, total, failed) {
    const p = pct(done, total);
    const bar = el("div", {
      class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(p),
    });
    // Through the CSSOM: the pages' security policy refuses style attributes.
    const done_ = el("span", { class: "bar" });
    done_.style.width = `${p}%`;
    bar.append(done_);
    if (failed) {
      const bad = el("span", { class: "bar failed" });
      bad.style.left = `${p}%`;
      bad.style.width = `${pct(failed, total)}%`;
      bar.append(bad);
    }
    bar.append(el("span", { class: "pct" }, total ? `${p}%` : "—"));
    return bar;
  }

  function onPage(name, fn) {
    if (document.body.dataset.page === name) {
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
      else fn();
    }
  }

  async function signOut() {
    try {
      await api("DELETE", "/api/v1/session", undefined, { noRedirect: true });
    } finally {
      window.location.assign("/login");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("sign-out");
    if (button) button.addEventListener("click", signOut);
  });

  window.EBD = {
    api, ApiError, append, clear, colourOf, el, errorText, flash, fmtNum, fmtTime, lang,
    onPage, pct, progress, qs, sevBadge, SEVERITIES, t,
  };
})();

/* ---- The pages of the alerts ------------------------------------------------------------ */
(function () {
  const { api, clear, el, errorText, flash, fmtNum, fmtTime, onPage, progress, sevBadge, t } = window.EBD;

  // Sign-in: POST /api/v1/session, then where the guard sent the person from.
  onPage("login", () => {
    const form = document.getElementById("login-form");
    const box = document.getElementById("login-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      box.hidden = true;
      const login = form.elements.login.value.trim();
      const password = form.elements.password.value;
      try {
        await api("POST", "/api/v1/session", { login, password }, { noRedirect: true });
        window.location.assign(form.dataset.next || "/alerts");
      } catch (err) {
        flash(errorText(err), "error", box);
        form.elements.password.value = "";
        form.elements.password.focus();
      }
    });
  });

  // The alerts list: the API's newest alerts, filtered here by status, colour, region, time.
  onPage("alerts", () => {
    const form = document.getElementById("alert-filters");
    const body = document.getElementById("alerts-body");
    const params = new URLSearchParams(location.search);
    for (const name of ["status", "severity", "region", "since", "until"]) {
      if (params.get(name)) form.elements[name].value = params.get(name);
    }
    let alerts = [];
    const render = () => {
      const f = Object.fromEntries(new FormData(form).entries());
      const region = (f.region || "").trim();
      const since = f.since ? new Date(`${f.since}T00:00:00`) : null;
      const until = f.until ? new Date(`${f.until}T23:59:59`) : null;
      const rows = alerts.filter((a) =>
        (!f.status || a.status === f.status)
        && (!f.severity || window.EBD.colourOf(a.severity) === f.severity)
        && (!region || (a.areas || []).some((code) => code.startsWith(region) || region.startsWith(code))
          || Object.values(a.area_names || {}).some((name) => String(name).includes(region)))
        && (!since || new Date(a.sent) >= since)
        && (!until || new Date(a.sent) <= until));
      clear(body);
      if (!rows.length) {
        body.append(el("tr", {}, el("td", { colspan: "7" }, t("alerts.none"))));
        return;
      }
      for (const a of rows) {
        const d = a.dispatch || {};
        body.append(el("tr", { dataset: { alertId: a.id } },
          el("td", {}, fmtTime(a.sent)),
          el("td", {}, sevBadge(a.severity)),
          el("td", {}, el("a", { href: `/alerts/${encodeURIComponent(a.id)}` }, a.headline || a.id)),
          el("td", {}, t(`status.${a.status}`)),
          el("td", {}, areaText(a)),
          el("td", {}, el("span", { class: "badge state" }, d.state || "—")),
          el("td", {}, progress(d.played || 0, d.expected || 0, d.failed || 0))));
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const f = new URLSearchParams(new FormData(form));
      history.replaceState(null, "", `?${window.EBD.qs(Object.fromEntries(f.entries()))}`);
      render();
    });
    form.addEventListener("reset", () => setTimeout(render, 0));
    api("GET", "/api/v1/alerts", undefined, { query: { limit: 500 } })
      .then(({ data }) => { alerts = data.alerts || []; render(); })
      .catch((err) => flash(errorText(err), "error"));
  });

  function areaText(a) {
    const names = a.area_names || {};
    return (a.areas || []).map((code) => names[code] || code).join("、");
  }
  window.EBD.areaText = areaText;

  /** The preview as the API gave it: totals, per region, offline terminals, SMS. */
  function renderPreview(box, p) {
    clear(box);
    const totals = p.totals || {};
    const keys = ["villages", "villages_without_terminal", "terminals", "terminals_offline",
      "recipients", "recipients_covering_offline", "sms_segments", "sms_messages", "sms_cost_yuan"];
    box.append(el("h2", {}, t("preview.title")));
    box.append(el("p", {}, (p.areas || []).map((a) => `${a.name}（${a.code}）`).join("、")));
    box.append(el("dl", { class: "figures", id: "preview-totals" },
      keys.filter((k) => k in totals).map((k) =>
        el("div", { dataset: { key: k } }, el("dt", {}, t(`preview.${k}`)), el("dd", {}, fmtNum(totals[k]))))));
    const regions = p.regions || [];
    if (regions.length) {
      box.append(el("h3", {}, t("preview.regions")));
      box.append(el("div", { class: "table-wrap" }, el("table", { class: "data", id: "preview-regions" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, t("preview.region")),
          el("th", { scope: "col" }, t("preview.level")),
          el("th", { scope: "col", class: "num" }, t("preview.villages")),
          el("th", { scope: "col", class: "num" }, t("preview.terminals")),
          el("th", { scope: "col", class: "num" }, t("preview.terminals_offline")),
          el("th", { scope: "col", class: "num" }, t("preview.recipients")))),
        el("tbody", {}, regions.map((r) => el("tr", { dataset: { code: r.code } },
          el("th", { scope: "row" }, `${r.name}（${r.code}）`),
          el("td", {}, t(`level.${r.level}`)),
          el("td", { class: "num" }, fmtNum(r.villages)),
          el("td", { class: "num" }, fmtNum(r.terminals)),
          el("td", { class: "num" }, fmtNum(r.offline)),
          el("td", { class: "num" }, fmtNum(r.recipients))))))));
    }
    box.append(el("h3", {}, t("preview.offline_list")));
    const offline = p.offline_terminals || [];
    box.append(offline.length
      ? el("ul", { id: "preview-offline" }, offline.map((o) =>
        el("li", {}, `${o.id} · ${o.region_name || o.region} · ${t("preview.last_seen")} ${fmtTime(o.last_seen)}`)))
      : el("p", { class: "muted" }, t("preview.none_offline")));
    if (p.sms) {
      box.append(el("h3", {}, t("preview.sms")));
      box.append(el("p", {}, p.sms.text || ""));
      box.append(el("p", { class: "muted" },
        `${t("preview.sms_segments")}: ${fmtNum(p.sms.segments)} · ¥${p.sms.cost_per_segment_yuan}`));
    }
    if ("audio" in p) renderAudio(box, p.audio);
  }
  window.EBD.renderPreview = renderPreview;

  /** The announcement the loudspeakers will play, to listen to before sending; a region's own
   *  variant (slower, more repeats) too. Played from this origin: the URL terminals are given
   *  may be another host, which the console's CSP would refuse. */
  function renderAudio(box, audio) {
    box.append(el("h3", {}, t("preview.audio")));
    const player = (described, id) => el("audio", {
      controls: true, preload: "none", id,
      src: new URL(described.url, location.href).pathname,
    });
    if (!audio || !audio.url) {
      box.append(el("p", { class: "muted", id: "preview-audio-none" }, t("preview.audio_none")));
      return;
    }
    box.append(el("p", {}, player(audio, "preview-audio")));
    box.append(el("p", { class: "muted" },
      `${t("preview.audio_duration")}: ${fmtNum(Math.round(audio.duration))} s`));
    for (const variant of audio.regions || []) {
      if (!variant.url) continue;
      box.append(el("p", { dataset: { code: variant.code } },
        `${t("preview.audio_region")} ${variant.code}: `, player(variant),
        ` ${fmtNum(Math.round(variant.duration))} s`));
    }
  }

  // Approvals: each pending alert with the preview its composer saw; approve, or reject with a reason.
  onPage("approvals", () => {
    const list = document.getElementById("approvals-list");
    const load = async () => {
      let data;
      try {
        ({ data } = await api("GET", "/api/v1/approvals", undefined, { query: { state: "pending" } }));
      } catch (err) {
        flash(errorText(err), "error");
        return;
      }
      clear(list);
      const items = data.approvals || data.items || [];
      if (!items.length) list.append(el("p", { id: "approvals-none" }, t("approvals.none")));
      for (const item of items) list.append(await approvalCard(item, load));
    };
    load();
  });

  async function approvalCard(item, reload) {
    const alert = item.alert || item.request || item;
    const card = el("section", { class: `card sev-${window.EBD.colourOf(alert.severity)}`, dataset: { approvalId: item.id } });
    card.append(el("h2", {}, sevBadge(alert.severity), " ", alert.headline || item.id));
    card.append(el("dl", { class: "figures" },
      el("div", {}, el("dt", {}, t("approvals.composer")), el("dd", {}, item.composer_name || item.composer || "—")),
      el("div", {}, el("dt", {}, t("approvals.submitted")), el("dd", {}, fmtTime(item.submitted_at))),
      el("div", {}, el("dt", {}, t("approvals.expires")), el("dd", {}, fmtTime(item.expires_at)))));
    card.append(el("p", {}, alert.text || ""));
    const previewBox = el("div", { class: "preview" });
    card.append(previewBox);
    try {
      const { data } = await api("GET", `/api/v1/approvals/${encodeURIComponent(item.id)}`);
      if (data.preview) renderPreview(previewBox, data.preview);
    } catch (err) {
      previewBox.append(el("p", { class: "flash error" }, errorText(err)));
    }
    const reasonId = `reason-${item.id}`;
    const reason = el("textarea", { id: reasonId, name: "reason", maxlength: "500", rows: "2" });
    const message = el("div", { class: "flash", role: "status", hidden: true });
    const approve = el("button", { type: "button", class: "btn btn-primary", dataset: { action: "approve" } }, t("approvals.approve"));
    const reject = el("button", { type: "button", class: "btn btn-danger", dataset: { action: "reject" } }, t("approvals.reject"));
    approve.addEventListener("click", async () => {
      approve.disabled = true;
      try {
        const { data } = await api("POST", `/api/v1/approvals/${encodeURIComponent(item.id)}/approve`);
        flash(t("approvals.approved"), "ok", message);
        const id = data.id || (data.alert && data.alert.id) || item.id;
        card.append(el("p", {}, el("a", { href: `/alerts/${encodeURIComponent(id)}`, class: "btn" }, t("alert.title"))));
        reject.disabled = true;
      } catch (err) {
        flash(errorText(err), "error", message);
        approve.disabled = false;
      }
    });
    reject.addEventListener("click", async () => {
      if (!reason.value.trim()) {
        flash(t("approvals.reason_needed"), "error", message);
        reason.focus();
        return;
      }
      try {
        await api("POST", `/api/v1/approvals/${encodeURIComponent(item.id)}/reject`, { reason: reason.value.trim() });
        flash(t("approvals.rejected"), "ok", message);
        approve.disabled = reject.disabled = true;
      } catch (err) {
        flash(errorText(err), "error", message);
      }
    });
    card.append(el("div", { class: "form-row" }, el("label", { for: reasonId }, t("approvals.reason")), reason));
    card.append(el("div", { class: "actions" }, approve, reject), message);
    return card;
  }
})();

/* ---- Compose with preview; the live alert page ---------------------------------------- */
(function () {
  const { api, clear, el, errorText, flash, fmtNum, fmtTime, onPage, progress, sevBadge, t } = window.EBD;

  onPage("new", () => {
    const form = document.getElementById("compose");
    const previewBox = document.getElementById("preview");
    const sendButton = document.getElementById("send");
    const stale = document.getElementById("stale");
    const result = document.getElementById("compose-result");
    const search = document.getElementById("area-search");
    const suggest = document.getElementById("area-suggest");
    const chips = document.getElementById("area-chips");
    const region = document.getElementById("who-office").dataset.officeRegion;
    const lang = window.EBD.lang;
    let templates = [];
    let chosen = new Map(); // code → name
    let known = new Map(); // code → {code, name} of the regions loaded so far
    let previewed = null; // {body, id}: what the last preview showed

    const pick = (text) => (text && typeof text === "object" ? text[lang] || text.zh || "" : text || "");

    // Templates name their areas with {area}: filled in, as the server's templates do, with
    // up to three names (then a count), so what is previewed is what is sent.
    function areaPhrase() {
      const names = [...chosen.values()];
      const shown = names.slice(0, 3);
      if (document.documentElement.lang === "en") {
        return shown.join(", ") + (names.length > 3 ? ` and ${names.length - 3} more areas` : "");
      }
      return shown.join("、") + (names.length > 3 ? `等${names.length}个地区` : "");
    }
    const fill = (value) => value.trim().replaceAll("{area}", areaPhrase());

    function body() {
      const f = form.elements;
      const channels = [...form.querySelectorAll("input[name=channels]:checked")].map((c) => c.value);
      const out = {
        event: f.event.value, event_code: f.event_code.value || undefined, severity: f.severity.value,
        headline: fill(f.headline.value), text: fill(f.text.value),
        instruction: fill(f.instruction.value) || undefined,
        areas: [...chosen.keys()], channels, status: f.status.value,
        expires_in: Number(f.expires_in.value) * 60 || undefined,
      };
      if (channels.includes("sms") && f.sms_text.value.trim()) out.sms_text = fill(f.sms_text.value);
      return out;
    }

    function changed() {
      const now = JSON.stringify(body());
      const fresh = previewed && previewed.json === now;
      sendButton.disabled = !fresh;
      stale.hidden = !previewed || fresh;
    }

    function renderChips() {
      clear(chips);
      if (!chosen.size) chips.append(el("li", { class: "muted" }, t("new.area_none")));
      for (const [code, name] of chosen) {
        chips.append(el("li", { dataset: { code } }, `${name}（${code}）`,
          el("button", { type: "button", class: "btn btn-plain", "aria-label": `${t("new.area_remove")} ${name}`,
            onclick: () => { chosen.delete(code); renderChips(); changed(); } }, "×")));
      }
    }

    async function load(code) {
      const { data } = await api("GET", `/api/v1/regions/${encodeURIComponent(code)}`);
      known.set(data.code, { code: data.code, name: data.name });
      for (const c of data.children || []) known.set(c.code, { code: c.code, name: c.name, parent: data.code });
      return data;
    }

    function add(code, name) {
      chosen.set(code, name);
      search.value = "";
      clear(suggest);
      renderChips();
      changed();
    }

    function showSuggestions() {
      const q = search.value.trim();
      clear(suggest);
      if (!q) return;
      const hits = [...known.values()].filter((r) => r.name.includes(q) || r.code.startsWith(q)).slice(0, 12);
      for (const r of hits) {
        suggest.append(el("li", {},
          el("button", { type: "button", dataset: { code: r.code }, onclick: () => add(r.code, r.name) }, `${r.name}（${r.code}）`),
          r.code.length < 12 ? el("button", { type: "button", class: "btn-plain", "aria-label": `${t("new.area_browse")} ${r.name}`,
            onclick: async () => { await load(r.code); showSuggestions(); } }, `${t("new.area_browse")} ›`) : null));
      }
    }

    search.addEventListener("input", async () => {
      const q = search.value.trim();
      // A code typed whole: ask for it, so regions deeper than those loaded are found too.
      if (/^\d{2,12}$/.test(q) && !known.has(q) && [2, 4, 6, 9, 12].includes(q.length)) {
        try { await load(q); } catch (_) { /* an unknown code simply finds nothing */ }
      }
      showSuggestions();
    });
    search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        const first = suggest.querySelector("button[data-code]");
        if (first) first.click();
      }
    });

    function applyTemplate(tpl) {
      const f = form.elements;
      f.event.value = tpl.event || "";
      f.event_code.value = tpl.event_code || "";
      f.severity.value = tpl.severity;
      f.headline.value = pick(tpl.headline);
      f.text.value = pick(tpl.text);
      f.instruction.value = pick(tpl.instruction);
      f.sms_text.value = pick(tpl.sms_text);
      if (tpl.expires_in) f.expires_in.value = Math.round(tpl.expires_in / 60);
      changed();
    }

    document.getElementById("template").addEventListener("change", (event) => {
      const tpl = templates.find((x) => x.id === event.target.value);
      if (tpl) applyTemplate(tpl);
    });
    form.addEventListener("input", (event) => { if (event.target !== search) changed(); });

    document.getElementById("preview-button").addEventListener("click", async () => {
      const sent = body();
      flash("", "ok", result);
      clear(previewBox);
      try {
        const { data } = await api("POST", "/api/v1/alerts", sent, { query: { dry_run: 1 } });
        previewed = { json: JSON.stringify(sent), id: data.preview_id };
        renderPreview(previewBox, data);
      } catch (err) {
        previewed = null;
        const refused = err.code === "nothing_to_reach";
        flash(refused ? `${t("preview.unreachable")} ${errorText(err)}` : errorText(err), "error", result);
      }
      changed();
    });

    sendButton.addEventListener("click", async () => {
      if (!previewed) return;
      sendButton.disabled = true;
      try {
        const { status, data } = await api("POST", "/api/v1/alerts", { ...JSON.parse(previewed.json), preview_id: previewed.id });
        if (status === 202) {
          flash(t("new.pending"), "warn", result);
          result.append(" ", el("a", { href: "/approvals" }, t("nav.approvals")));
          previewed = null;
          sendButton.textContent = t("new.submit");
        } else {
          window.location.assign(`/alerts/${encodeURIComponent(data.id)}`);
        }
      } catch (err) {
        flash(errorText(err), "error", result);
        if (err.code === "preview_stale" || err.code === "preview_required") previewed = null;
        changed();
      }
    });

    const renderPreview = window.EBD.renderPreview;
    renderChips();
    changed();
    load(region).catch((err) => flash(errorText(err), "error"));
    api("GET", "/api/v1/templates").then(({ data }) => {
      templates = data.templates || [];
      const select = document.getElementById("template");
      for (const tpl of templates) {
        select.append(el("option", { value: tpl.id }, `${tpl.event}（${tpl.event_en}）· ${t(`sev.${tpl.severity}`)}${tpl.edited ? " *" : ""}`));
      }
    }).catch((err) => flash(errorText(err), "error"));
    // "Update" on an alert page: start from that alert.
    const from = form.dataset.update;
    if (from) {
      api("GET", `/api/v1/alerts/${encodeURIComponent(from)}`).then(({ data }) => {
        applyTemplate({ ...data, expires_in: 0 });
        form.elements.severity.value = window.EBD.colourOf(data.severity) || data.severity;
        for (const code of data.areas || []) chosen.set(code, (data.area_names || {})[code] || code);
        renderChips();
        changed();
      }).catch((err) => flash(errorText(err), "error"));
    }
  });

  // The live alert page: the tree down to terminals, kept current by the event stream.
  onPage("alert", () => {
    const root = document.getElementById("alert-page");
    const id = root.dataset.alertId;
    const treeBody = document.getElementById("tree-body");
    const eventsList = document.getElementById("events");
    const liveBadge = document.getElementById("live-state");
    let alert = null;
    let counts = {}; // code → {expected, received, played, failed, pending}
    const open = new Set(); // codes whose children are shown
    const children = new Map(); // code → [{code, name}] loaded
    const names = new Map();

    function row(code, name, depth, c, expandable) {
      c = c || { expected: 0, received: 0, played: 0, failed: 0, pending: 0 };
      const toggle = expandable
        ? el("button", { type: "button", class: "btn btn-plain toggle", "aria-expanded": String(open.has(code)),
          "aria-label": `${open.has(code) ? t("alert.collapse") : t("alert.expand")} ${name}`,
          onclick: () => toggleNode(code) }, open.has(code) ? "−" : "+")
        : null;
      return el("tr", { class: `depth-${depth}`, dataset: { code } },
        el("td", { class: "region" }, toggle, `${name}`),
        el("td", { class: "num", dataset: { k: "expected" } }, fmtNum(c.expected)),
        el("td", { class: "num", dataset: { k: "received" } }, fmtNum(c.received)),
        el("td", { class: "num", dataset: { k: "played" } }, fmtNum(c.played)),
        el("td", { class: "num", dataset: { k: "failed" } }, fmtNum(c.failed)),
        el("td", {}, progress(c.played, c.expected, c.failed)));
    }

    async function loadChildren(code) {
      if (children.has(code)) return;
      if (code.length === 12) {
        // A village: its terminals, from the alert's terminal list.
        const { data } = await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}/terminals`);
        const mine = (data.terminals || []).filter((x) => x.region === code);
        children.set(code, mine.map((x) => ({ code: `t:${x.id}`, name: `${x.id} · ${t(`tstate.${x.state}`)}`, terminal: x })));
        return;
      }
      const { data } = await api("GET", `/api/v1/regions/${encodeURIComponent(code)}`);
      children.set(code, (data.children || []).map((c) => ({ code: c.code, name: c.name })));
      for (const c of data.children || []) names.set(c.code, c.name);
    }

    async function toggleNode(code) {
      if (open.has(code)) open.delete(code);
      else {
        try { await loadChildren(code); } catch (err) { flash(errorText(err), "error"); return; }
        if (code.length >= 9) await refreshVillages(code);
        open.add(code);
      }
      draw();
    }

    // Villages and terminals are below what the stream counts: counted from the terminal list.
    async function refreshVillages(code) {
      const { data } = await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}/terminals`);
      const per = {};
      for (const x of data.terminals || []) {
        if (!x.region.startsWith(code)) continue;
        const c = per[x.region] || (per[x.region] = { expected: 0, received: 0, played: 0, failed: 0, pending: 0 });
        c.expected += 1;
        if (["received", "playing", "played"].includes(x.state)) c.received += 1;
        if (x.state === "played") c.played += 1;
        if (["failed", "no_ack"].includes(x.state)) c.failed += 1;
        if (x.state === "pending") c.pending += 1;
      }
      Object.assign(counts, per);
      for (const x of data.terminals || []) {
        if (!x.region.startsWith(code)) continue;
        const done = x.state === "played";
        counts[`t:${x.id}`] = { expected: 1, received: ["received", "playing", "played"].includes(x.state) ? 1 : 0,
          played: done ? 1 : 0, failed: ["failed", "no_ack"].includes(x.state) ? 1 : 0, pending: x.state === "pending" ? 1 : 0 };
      }
      if (children.has(code) && code.length === 12) children.delete(code);
      if (code.length === 12) await loadChildren(code);
    }

    function draw() {
      clear(treeBody);
      const province = (alert.areas[0] || "").slice(0, 2);
      const walk = (code, name, depth) => {
        const c = counts[code];
        if (depth > 0 && (!c || !c.expected)) return;
        const expandable = !code.startsWith("t:");
        treeBody.append(row(code, name, depth, c, expandable));
        if (open.has(code)) for (const ch of children.get(code) || []) walk(ch.code, ch.name, depth + 1);
      };
      walk(province, names.get(province) || province, 0);
    }

    function setCounts(data) {
      counts = { ...counts, ...data.regions };
      const p = alert.areas[0].slice(0, 2);
      counts[p] = data.totals;
      const tot = data.totals;
      document.getElementById("totals-progress").replaceChildren(progress(tot.played, tot.expected, tot.failed));
      for (const k of ["expected", "received", "played", "failed", "pending"]) {
        const node = document.getElementById(`total-${k}`);
        if (node) node.textContent = fmtNum(tot[k]);
      }
      draw();
    }

    function addEvent(text) {
      const none = document.getElementById("no-events");
      if (none) none.remove();
      eventsList.prepend(el("li", {}, `${fmtTime(new Date().toISOString())} · ${text}`));
    }

    function listen() {
      const source = new EventSource(`/api/v1/alerts/${encodeURIComponent(id)}/events`);
      liveBadge.textContent = t("alert.live");
      source.addEventListener("counts", (e) => setCounts(JSON.parse(e.data)));
      source.addEventListener("resend", (e) => {
        const d = JSON.parse(e.data);
        addEvent(`${t("alert.events")}: +${d.new} (${d.resends})`);
      });
      source.addEventListener("escalation", (e) => {
        const d = JSON.parse(e.data);
        addEvent(`⚠ ${d.terminal_id} · ${d.region_name || d.region || ""} · ${d.reason || d.state || ""}`);
      });
      source.addEventListener("done", async () => {
        source.close();
        liveBadge.textContent = t("alert.done");
        liveBadge.className = "badge ok";
        for (const code of open) if (code.length >= 9) await refreshVillages(code);
        draw();
      });
      source.onerror = () => { if (source.readyState === EventSource.CLOSED) liveBadge.textContent = "—"; };
    }

    async function start() {
      const { data } = await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}`, undefined, { query: { detail: "township" } });
      alert = data;
      document.getElementById("alert-headline").textContent = data.headline;
      document.getElementById("alert-severity").replaceChildren(sevBadge(data.severity));
      document.getElementById("alert-status").textContent = t(`status.${data.status}`);
      document.getElementById("alert-text").textContent = data.text;
      document.getElementById("alert-areas").textContent = window.EBD.areaText(data);
      document.getElementById("alert-sender").textContent = data.sender_name || data.sender || "—";
      // Approved alerts carry who approved them and when the composer submitted them.
      const approval = data.approval || {};
      const times = { ...approval, sent: data.sent, expires: data.expires };
      for (const k of ["submitted_at", "approved_at", "sent", "expires"]) {
        const node = document.getElementById(`time-${k}`);
        if (node) node.textContent = fmtTime(times[k]);
      }
      document.getElementById("time-approver").textContent = approval.approver_name
        ? `${approval.approver_name}（${approval.approver_office || ""}）` : (approval.approver || "—");
      const d = data.delivery || {};
      document.getElementById("alert-state").textContent = d.state ? t(`dstate.${d.state}`) : "—";
      const p = data.areas[0].slice(0, 2);
      for (const level of ["by_city", "by_county", "by_township"]) {
        for (const r of d[level] || []) { counts[r.code] = r; names.set(r.code, r.name); }
      }
      counts[p] = d;
      const { data: province } = await api("GET", `/api/v1/regions/${p}`);
      names.set(p, province.name);
      await loadChildren(p);
      open.add(p);
      setCounts({ totals: d, regions: {} });
      if (d.state === "cancelled" || d.state === "expired" || data.msg_type === "cancel") {
        document.getElementById("alert-actions").hidden = true;
      }
      listen();
    }

    document.getElementById("cancel-alert").addEventListener("click", async () => {
      if (!window.confirm(t("alert.cancel_confirm"))) return;
      try {
        await api("POST", `/api/v1/alerts/${encodeURIComponent(id)}/cancel`, {});
        flash(t("alert.cancelled"), "ok");
        document.getElementById("alert-state").textContent = t("dstate.cancelled");
        document.getElementById("alert-actions").hidden = true;
      } catch (err) {
        flash(errorText(err), "error");
      }
    });
    start().catch((err) => flash(errorText(err), "error"));
  });
})();
