/* The operations pages (terminals, drills, people, templates), on console.js's toolkit
   (window.EBD): data from the JSON API with the person's session, DOM built with EBD.el
   (never innerHTML: names and texts came from other people), labels from EBD.t. The server
   checks every action again; a button hidden here is a convenience, not the guard. */
"use strict";

(function () {
  const { api, clear, el, errorText, flash, fmtNum, fmtTime, t } = window.EBD;

  const byId = (id) => document.getElementById(id);
  const rolesOf = (root) => (root.dataset.roles || "").split(/\s+/).filter(Boolean);
  const dash = "—";

  function setText(id, value) {
    const node = byId(id);
    if (node) node.textContent = value === undefined || value === null ? dash : String(value);
  }

  /** Replace a table body's rows; a single row saying `empty` when there are none. */
  function fillBody(table, rows, empty) {
    const body = clear(table.tBodies[0]);
    if (!rows.length) {
      const span = table.tHead ? table.tHead.rows[0].cells.length : 1;
      body.append(el("tr", {}, el("td", { colspan: String(span), class: "muted" }, empty || t("ops.none"))));
      return;
    }
    for (const row of rows) body.append(row);
  }

  function failBody(table, err) {
    fillBody(table, [], `${t("ops.load_failed")}: ${errorText(err)}`);
  }

  /** The label of `key`, or `fallback` when there is none (a value newer than the labels). */
  function label(key, fallback) {
    const text = t(key);
    return text === key ? fallback : text;
  }

  function stateBadge(state) {
    if (state === "online") return el("span", { class: "badge ok" }, t("ops.state.online"));
    if (state === "offline") return el("span", { class: "badge bad" }, t("ops.state.offline"));
    return el("span", { class: "badge state" }, t("ops.state.unknown"));
  }

  /** A local calendar day (yyyy-mm-dd from a date input) as an aware ISO time. */
  function dayStart(day) {
    return day ? new Date(`${day}T00:00:00`).toISOString() : "";
  }

  function dayEnd(day) {
    return day ? new Date(`${day}T23:59:59.999`).toISOString() : "";
  }

  function onReady(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  // -- Terminals ------------------------------------------------------------------------------

  function terminalsPage(root) {
    const region = root.dataset.region;
    const own = root.dataset.officeRegion || "";
    const canPing = rolesOf(root).includes("admin");
    const days = byId("f-days");
    byId("term-days").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });

    async function ping(terminal, button, cell) {
      button.disabled = true;
      cell.textContent = t("ops.terminals.pinging");
      try {
        const { data } = await api("POST", `/api/v1/terminals/${encodeURIComponent(terminal)}/ping`,
          undefined, { query: { timeout: 5 } });
        cell.textContent = data.answered
          ? t("ops.terminals.ping_ok", { ms: data.rtt_ms })
          : `${t("ops.terminals.ping_none")}: ${data.message || ""}`;
      } catch (err) {
        cell.textContent = errorText(err);
      } finally {
        button.disabled = false;
      }
    }

    function child(row) {
      const link = el("a", { href: `/terminals?region=${encodeURIComponent(row.code)}` }, row.name);
      return el("tr", { dataset: { code: row.code } },
        el("th", { scope: "row" }, link, " ", el("span", { class: "muted" }, row.code)),
        el("td", { class: "num" }, fmtNum(row.terminals)),
        el("td", { class: "num", dataset: { field: "online" } }, fmtNum(row.online)),
        el("td", { class: "num", dataset: { field: "offline" } }, fmtNum(row.offline)),
        el("td", { class: "num" }, fmtNum(row.unknown)),
        el("td", { class: "num" }, fmtNum(row.failures)),
        el("td", {}, fmtTime(row.last_seen)));
    }

    function terminal(row) {
      const result = el("span", { class: "ping-result", role: "status" });
      let action = null;
      if (canPing) {
        const button = el("button", { type: "button", class: "btn btn-plain" }, t("ops.terminals.ping"));
        button.addEventListener("click", () => ping(row.id, button, result));
        action = button;
      }
      const kind = row.kind ? label(`ops.kind.${row.kind}`, row.kind) : dash;
      return el("tr", { dataset: { terminal: row.id } },
        el("th", { scope: "row" }, row.id),
        el("td", {}, row.region_name || row.region),
        el("td", {}, kind),
        el("td", {}, stateBadge(row.state)),
        el("td", {}, fmtTime(row.last_seen)),
        el("td", { class: "num" }, fmtNum(row.failures)),
        el("td", {}, action, " ", result));
    }

    async function load() {
      const table = byId("term-children");
      try {
        const { data } = await api("GET", "/api/v1/terminals/health", undefined,
          { query: { region, days: days.value } });
        const path = clear(byId("term-path"));
        data.path.forEach((step, i) => {
          // Above the office's own region the API answers 403: no link there.
          const last = i === data.path.length - 1 || !step.code.startsWith(own);
          path.append(el("li", {}, last
            ? el("strong", { "aria-current": "page" }, step.name)
            : el("a", { href: `/terminals?region=${encodeURIComponent(step.code)}` }, step.name)));
        });
        const totals = data.totals;
        setText("tot-terminals", fmtNum(totals.terminals));
        setText("tot-online", fmtNum(totals.online));
        setText("tot-offline", fmtNum(totals.offline));
        setText("tot-unknown", fmtNum(totals.unknown));
        setText("tot-failures", fmtNum(totals.failures));
        setText("tot-last-seen", fmtTime(totals.last_seen));
        setText("term-failures-hint", t("ops.terminals.failures_hint",
          { days: data.days, alerts: data.alerts_considered }));
        byId("term-children-section").hidden = data.children.length === 0;
        fillBody(table, data.children.map(child));
        const listed = byId("term-list-section");
        listed.hidden = data.terminals_total === 0;
        fillBody(byId("term-list"), data.terminals.map(terminal));
        setText("term-list-note", data.terminals.length < data.terminals_total
          ? t("ops.terminals.shown_first", { total: data.terminals_total, shown: data.terminals.length })
          : "");
        root.dataset.loaded = "1";
      } catch (err) {
        failBody(table, err);
        flash(errorText(err), "error");
      }
    }

    load();
  }

  // -- Drills: calendar and list --------------------------------------------------------------

  const DONE = new Set(["running", "passed", "failed"]);
  const CELL_MOST = 8;

  /** planned | done | overdue | cancelled: what a coordinator asks of a drill. */
  function phase(drill, now) {
    if (drill.status === "cancelled") return "cancelled";
    if (DONE.has(drill.status)) return "done";
    if (drill.status === "missed") return "overdue";
    return Date.parse(drill.scheduled_at) < now ? "overdue" : "planned";
  }

  function phaseBadge(drill, now) {
    const which = phase(drill, now);
    const status = which === "overdue" && drill.status === "planned" ? "overdue" : drill.status;
    const kind = { done: drill.status === "failed" ? "bad" : "ok", overdue: "bad" }[which] || "state";
    return el("span", { class: `badge ${kind}`, dataset: { phase: which } }, t(`ops.dstatus.${status}`));
  }

  function drillLink(drill) {
    return el("a", { href: `/drills/${encodeURIComponent(drill.id)}` }, drill.township_name);
  }

  function drillsPage(root) {
    const year = Number(root.dataset.year);
    const month = Number(root.dataset.month);
    const view = root.dataset.view;
    const region = root.dataset.region;
    const now = Date.now();

    function calendar(drills) {
      const header = clear(byId("drill-weekdays"));
      for (const day of t("ops.drills.weekdays").split(",")) header.append(el("th", { scope: "col" }, day));
      const key = `${year}-${String(month).padStart(2, "0")}`;
      const byDay = new Map();
      for (const drill of drills) {
        // The API gives times in the engine's display zone: its date is the office's date.
        const day = drill.scheduled_at.slice(0, 10);
        if (!day.startsWith(key)) continue;
        if (!byDay.has(day)) byDay.set(day, []);
        byDay.get(day).push(drill);
      }
      const first = new Date(Date.UTC(year, month - 1, 1));
      const lead = (first.getUTCDay() + 6) % 7; // Monday first
      const length = new Date(Date.UTC(year, month, 0)).getUTCDate();
      const rows = [];
      let row = el("tr");
      for (let i = 0; i < lead; i++) row.append(el("td", { class: "muted" }));
      for (let d = 1; d <= length; d++) {
        const day = `${key}-${String(d).padStart(2, "0")}`;
        const items = (byDay.get(day) || []).sort((a, b) => a.scheduled_at.localeCompare(b.scheduled_at));
        const list = el("ul", { class: "chips" });
        // A province's calendar may hold dozens a day: the list view has them all.
        for (const drill of items.slice(0, CELL_MOST)) {
          list.append(el("li", { dataset: { drill: drill.id } }, drillLink(drill), " ", phaseBadge(drill, now)));
        }
        if (items.length > CELL_MOST) {
          list.append(el("li", {}, el("a", { href: `/drills?year=${year}&view=list${region ? `&region=${region}` : ""}` },
            t("ops.drill.more", { n: items.length - CELL_MOST }))));
        }
        row.append(el("td", { dataset: { day } }, el("strong", {}, String(d)), items.length ? list : null));
        if ((lead + d) % 7 === 0) {
          rows.push(row);
          row = el("tr");
        }
      }
      if (row.childNodes.length) {
        while (row.childNodes.length < 7) row.append(el("td", { class: "muted" }));
        rows.push(row);
      }
      fillBody(byId("drill-calendar"), rows);
      const prev = month === 1 ? { y: year - 1, m: 12 } : { y: year, m: month - 1 };
      const next = month === 12 ? { y: year + 1, m: 1 } : { y: year, m: month + 1 };
      const title = clear(byId("drill-month-title"));
      const to = (p) => `/drills?year=${p.y}&month=${p.m}&view=month${region ? `&region=${region}` : ""}`;
      title.append(
        el("a", { href: to(prev), class: "btn btn-plain", "aria-label": t("ops.previous") }, "‹"), " ",
        `${key}`, " ",
        el("a", { href: to(next), class: "btn btn-plain", "aria-label": t("ops.next") }, "›"));
    }

    function list(drills) {
      const rows = drills
        .slice()
        .sort((a, b) => a.scheduled_at.localeCompare(b.scheduled_at))
        .map((drill) => el("tr", { dataset: { drill: drill.id } },
          el("th", { scope: "row" }, drillLink(drill)),
          el("td", {}, `${drill.city_name} ${drill.county_name}`),
          el("td", {}, fmtTime(drill.scheduled_at)),
          el("td", {}, phaseBadge(drill, now)),
          el("td", { class: "num" }, drill.coverage === null ? dash : `${(drill.coverage * 100).toFixed(1)}%`)));
      fillBody(byId("drill-table"), rows, t("ops.drills.empty"));
    }

    async function load() {
      try {
        const { data } = await api("GET", "/api/v1/drills", undefined, { query: { year, region } });
        const counts = { planned: 0, done: 0, overdue: 0 };
        for (const drill of data.drills) {
          const which = phase(drill, now);
          if (which in counts) counts[which] += 1;
        }
        setText("tot-planned", fmtNum(counts.planned));
        setText("tot-done", fmtNum(counts.done));
        setText("tot-overdue", fmtNum(counts.overdue));
        if (!data.drills.length) flash(t("ops.drills.empty"), "warn");
        if (view === "list") list(data.drills);
        else calendar(data.drills);
        root.dataset.loaded = "1";
      } catch (err) {
        failBody(byId(view === "list" ? "drill-table" : "drill-calendar"), err);
        flash(errorText(err), "error");
      }
    }

    load();

    // A coordinator plans the year's drills of every township in their region, the rules of
    // docs/drills.md applied by the engine (POST /api/v1/drills/plan, as `ebd drills plan`).
    const planButton = byId("plan-year");
    if (rolesOf(root).includes("coordinator")) {
      planButton.hidden = false;
      planButton.addEventListener("click", async () => {
        planButton.disabled = true;
        try {
          const { data } = await api("POST", "/api/v1/drills/plan", { year, region });
          flash(t("ops.drills.planned_now", { n: data.planned, kept: data.already_planned }), "ok");
          await load();
        } catch (err) {
          flash(errorText(err), "error");
        } finally {
          planButton.disabled = false;
        }
      });
    }
  }

  // -- One drill and its report ---------------------------------------------------------------

  function figure(label, value, id) {
    return el("div", {}, el("dt", {}, label), el("dd", id ? { id } : {}, value));
  }

  function drillPage(root) {
    const id = root.dataset.drillId;
    const base = `/api/v1/drills/${encodeURIComponent(id)}`;
    const coordinator = rolesOf(root).includes("coordinator");

    function summary(drill) {
      const box = clear(byId("drill-summary"));
      box.append(
        el("h2", {}, `${drill.city_name} ${drill.county_name} ${drill.township_name}`),
        el("dl", { class: "figures" },
          figure(t("ops.status"), phaseBadge(drill, Date.now())),
          figure(t("ops.drills.scheduled_at"), fmtTime(drill.scheduled_at)),
          figure(t("ops.drill.dispatched_at"), fmtTime(drill.fired_at)),
          figure(t("ops.drills.coverage"), drill.coverage === null ? dash : `${(drill.coverage * 100).toFixed(1)}%`)),
        el("p", {}, el("a", { href: `/drills/acks?drill=${encodeURIComponent(drill.id)}` }, t("ops.drill.open_acks"))));
      const history = drill.history.map((edit) => el("tr", {},
        el("td", {}, fmtTime(edit.at)), el("td", {}, label(`ops.edit.${edit.action}`, edit.action)),
        el("td", {}, edit.office),
        el("td", {}, edit.reason)));
      fillBody(byId("drill-history"), history);
      byId("drill-actions").hidden = !(coordinator && drill.status === "planned");
    }

    function report(made) {
      const box = clear(byId("report-body"));
      const passed = made.passed
        ? el("span", { class: "badge ok" }, t("ops.drill.passed"))
        : el("span", { class: "badge bad" }, t("ops.drill.not_passed"));
      box.append(
        el("dl", { class: "figures", id: "report-figures" },
          figure(t("ops.drill.expected"), fmtNum(made.expected), "rep-expected"),
          figure(t("ops.drill.acknowledged"), fmtNum(made.acknowledged), "rep-acknowledged"),
          figure(t("ops.drill.played"), fmtNum(made.played), "rep-played"),
          figure(t("ops.drill.failed"), fmtNum(made.failed), "rep-failed"),
          figure(t("ops.drill.missing"), fmtNum(made.missing), "rep-missing"),
          figure(t("ops.drill.late"), fmtNum(made.late), "rep-late"),
          figure(t("ops.drills.coverage"), `${(made.coverage * 100).toFixed(1)}%`, "rep-coverage"),
          figure(t("ops.status"), passed),
          figure(t("ops.drill.latency"), made.ack_latency.n
            ? `p50 ${made.ack_latency.p50} · p95 ${made.ack_latency.p95}` : dash),
          figure(t("ops.drill.late_acks_count"), fmtNum(made.late_acks.length), "rep-late-acks"),
          figure(t("ops.drill.coverage_with_late"),
            `${(made.coverage_with_late * 100).toFixed(1)}% (${fmtNum(made.played_with_late)}/${fmtNum(made.expected)})`,
            "rep-coverage-late")),
        el("p", { class: "muted" }, t("ops.drill.late_note")),
        el("p", {}, el("a", { class: "btn btn-plain", href: `${base}/report?format=csv` }, t("ops.drill.download_report"))));
      if (made.problems.length) {
        box.append(el("h3", {}, t("ops.drill.problems")),
          el("ul", {}, made.problems.map((p) => el("li", {}, p))));
      }
      const villages = el("table", { class: "data", id: "report-villages" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, t("ops.drill.village")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.expected")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.acknowledged")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.played")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.failed")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.missing")))),
        el("tbody", {}, made.villages.map((v) => el("tr", { dataset: { code: v.code } },
          el("th", { scope: "row" }, v.name),
          el("td", { class: "num" }, fmtNum(v.expected)),
          el("td", { class: "num" }, fmtNum(v.acknowledged)),
          el("td", { class: "num" }, fmtNum(v.played)),
          el("td", { class: "num" }, fmtNum(v.failed)),
          el("td", { class: "num" }, fmtNum(v.missing))))));
      box.append(el("h3", {}, t("ops.drill.villages")), el("div", { class: "table-wrap" }, villages));
      if (made.missing_terminals.length) {
        box.append(el("h3", {}, t("ops.drill.missing_terminals")),
          el("ul", {}, made.missing_terminals.map((m) => el("li", {}, `${m.terminal} · ${m.village_name}`))));
      }
      lateAcks(box, made.late_acks);
    }

    // Acks that came after the window: every one the review log keeps, with when it came; a
    // repeat is shown as not counted, as in the ack log.
    function lateAcks(box, late) {
      box.append(el("h3", { id: "report-late-title" }, `${t("ops.drill.late_acks")} (${fmtNum(late.length)})`));
      if (!late.length) {
        box.append(el("p", { class: "muted", id: "report-late-none" }, t("ops.drill.no_late_acks")));
        return;
      }
      const table = el("table", { class: "data", id: "report-late-acks" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, t("ops.acks.terminal")),
          el("th", { scope: "col" }, t("ops.drill.village")),
          el("th", { scope: "col" }, t("ops.acks.state")),
          el("th", { scope: "col" }, t("ops.drill.arrived")),
          el("th", { scope: "col", class: "num" }, t("ops.drill.after_window_s")),
          el("th", { scope: "col" }, t("ops.acks.counted")))),
        el("tbody", {}, late.map((a) => el("tr", { dataset: { terminal: a.terminal, state: a.state } },
          el("th", { scope: "row" }, a.terminal),
          el("td", {}, a.village_name || a.village || dash),
          el("td", {}, label(`ops.astate.${a.state}`, a.state)),
          el("td", {}, fmtTime(a.recorded_at)),
          el("td", { class: "num" }, a.after_window_s.toFixed(1)),
          el("td", {}, t(a.counted ? "ops.yes" : "ops.no"))))));
      box.append(el("div", { class: "table-wrap" }, table));
    }

    async function load() {
      try {
        const { data } = await api("GET", base);
        summary(data);
        if (data.report) report((await api("GET", data.report)).data);
        else clear(byId("report-body")).append(el("p", { class: "muted" }, t("ops.drill.no_report")));
        root.dataset.loaded = "1";
      } catch (err) {
        clear(byId("drill-summary")).append(el("p", {}, `${t("ops.load_failed")}: ${errorText(err)}`));
        flash(errorText(err), "error");
      }
    }

    byId("drill-run").addEventListener("click", async () => {
      if (!window.confirm(t("ops.drill.confirm_run"))) return;
      try {
        await api("POST", `${base}/run`, { reason: "run now from the console" });
        flash(t("ops.drill.started"), "ok");
        load();
      } catch (err) {
        flash(errorText(err), "error");
      }
    });
    byId("drill-move").addEventListener("submit", async (event) => {
      event.preventDefault();
      const at = byId("move-at").value;
      const reason = byId("move-reason").value.trim();
      if (!at) return flash(t("ops.error.time_required"), "error");
      if (!reason) return flash(t("ops.error.reason_required"), "error");
      try {
        await api("POST", `${base}/move`, { at: new Date(at).toISOString(), reason });
        flash(t("ops.drill.moved"), "ok");
        load();
      } catch (err) {
        flash(errorText(err), "error");
      }
    });
    load();
  }

  // -- Compliance -----------------------------------------------------------------------------

  function compliancePage(root) {
    const query = { year: root.dataset.year, region: root.dataset.region };
    byId("compliance-csv").href = `/api/v1/drills/compliance?${window.EBD.qs({ ...query, format: "csv", lang: window.EBD.lang })}`;

    const rollupRow = (r) => el("tr", { dataset: { code: r.code } },
      el("th", { scope: "row" }, r.name),
      el("td", { class: "num" }, fmtNum(r.townships)),
      el("td", { class: "num" }, fmtNum(r.passed)),
      el("td", { class: "num" }, fmtNum(r.not_compliant)),
      el("td", {}, window.EBD.progress(r.passed, r.townships)));

    (async () => {
      try {
        const { data } = await api("GET", "/api/v1/drills/compliance", undefined, { query });
        const totals = clear(byId("compliance-totals"));
        totals.append(
          figure(t("ops.compliance.townships"), fmtNum(data.totals.townships)),
          figure(t("ops.compliance.passed"), fmtNum(data.totals.passed)),
          figure(t("ops.compliance.not_compliant"), fmtNum(data.totals.not_compliant)),
          figure(t("ops.compliance.percent"), data.totals.percent === null ? dash : `${data.totals.percent}%`));
        fillBody(byId("compliance-cities").querySelector("table"), data.cities.map(rollupRow));
        fillBody(byId("compliance-counties").querySelector("table"), data.counties.map(rollupRow));
        root.dataset.loaded = "1";
      } catch (err) {
        failBody(byId("compliance-cities").querySelector("table"), err);
        flash(errorText(err), "error");
      }
    })();
  }

  // -- Ack log review -------------------------------------------------------------------------

  function acksPage(root) {
    const form = byId("acks-filters");
    const params = new URLSearchParams(window.location.search);
    for (const name of ["since", "until"]) if (params.get(name)) form.elements[name].value = params.get(name);

    async function load() {
      const query = {
        drill: form.elements.drill.value.trim(),
        township: form.elements.township.value.trim(),
        terminal: form.elements.terminal.value.trim(),
        since: dayStart(form.elements.since.value),
        until: dayEnd(form.elements.until.value),
        state: form.elements.state.value,
      };
      byId("acks-csv").href = `/api/v1/drills/acks?${window.EBD.qs({ ...query, format: "csv", lang: window.EBD.lang })}`;
      const table = byId("acks-table");
      try {
        const { data } = await api("GET", "/api/v1/drills/acks", undefined, { query });
        const rows = data.acks;
        setText("acks-count", t("ops.acks.rows", { n: rows.length }));
        fillBody(table, rows.map((a) => el("tr", { dataset: { terminal: a.terminal_id || "", state: a.state || "" } },
          el("td", {}, fmtTime(a.recorded_at)),
          el("td", {}, a.township_name),
          el("td", {}, a.village_name || a.village || dash),
          el("th", { scope: "row" }, a.terminal_id || dash),
          el("td", {}, a.state ? t(`ops.astate.${a.state}`) : dash),
          el("td", {}, a.counted ? t("ops.yes") : t("ops.no")),
          el("td", {}, el("a", { href: `/drills/${encodeURIComponent(a.drill)}` }, a.drill)))));
        root.dataset.loaded = "1";
      } catch (err) {
        setText("acks-count", "");
        failBody(table, err);
        flash(errorText(err), "error");
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const shown = new URLSearchParams();
      for (const name of ["drill", "township", "terminal", "state", "since", "until"]) {
        const value = form.elements[name].value.trim();
        if (value) shown.set(name, value);
      }
      // The filters go in the address too: the view can be bookmarked and sent on.
      window.history.replaceState(null, "", `/drills/acks${shown.toString() ? `?${shown}` : ""}`);
      load();
    });
    load();
  }

  // -- People ---------------------------------------------------------------------------------

  function peoplePage(root) {
    const table = byId("people-table");
    if (!table) return; // not an admin: the page says so
    const form = byId("person-form");
    const note = byId("person-flash");

    async function act(person, verb) {
      try {
        await api("POST", `/api/v1/people/${encodeURIComponent(person.id)}/${verb}`);
        load();
      } catch (err) {
        flash(errorText(err), "error");
      }
    }

    async function token(person) {
      try {
        const { data } = await api("POST", `/api/v1/people/${encodeURIComponent(person.id)}/tokens`);
        byId("token-shown").hidden = false;
        const box = byId("token-value");
        box.value = data.token;
        box.focus();
        box.select();
        load();
      } catch (err) {
        flash(errorText(err), "error");
      }
    }

    const me = (byId("who-person") || { dataset: {} }).dataset.personId;

    function row(person) {
      const roles = person.roles.map((r) => label(`ops.role.${r}`, r)).join("、");
      // An admin does not lock themselves out with one click.
      const toggle = person.id === me ? null : el("button",
        { type: "button", class: person.disabled ? "btn btn-plain" : "btn btn-danger" },
        person.disabled ? t("ops.people.enable") : t("ops.people.disable"));
      if (toggle) toggle.addEventListener("click", () => act(person, person.disabled ? "enable" : "disable"));
      const issue = el("button", { type: "button", class: "btn btn-plain", disabled: person.disabled }, t("ops.people.token"));
      issue.addEventListener("click", () => token(person));
      return el("tr", { dataset: { person: person.id } },
        el("th", { scope: "row" }, person.id),
        el("td", {}, person.name),
        el("td", {}, roles),
        el("td", {}, person.disabled
          ? el("span", { class: "badge bad" }, t("ops.people.disabled"))
          : el("span", { class: "badge ok" }, t("ops.people.active"))),
        el("td", {}, el("div", { class: "actions" }, toggle, issue)));
    }

    async function load() {
      try {
        const { data } = await api("GET", "/api/v1/people");
        fillBody(table, data.people.map(row));
        root.dataset.loaded = "1";
      } catch (err) {
        failBody(table, err);
      }
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const roles = [...form.querySelectorAll('input[name="roles"]:checked')].map((box) => box.value);
      if (!roles.length) return flash(t("ops.people.role_required"), "error", note);
      const body = {
        id: form.elements.id.value.trim(),
        name: form.elements.name.value.trim(),
        roles,
        password: form.elements.password.value,
      };
      try {
        await api("POST", "/api/v1/people", body);
        flash(`${t("ops.people.created")}: ${body.id}`, "ok", note);
        form.reset();
        load();
      } catch (err) {
        flash(errorText(err), "error", note);
      }
    });
    load();
  }

  // -- Templates ------------------------------------------------------------------------------

  const TEXT_FIELDS = ["headline", "text", "instruction", "sms_text"];

  function templatesPage(root) {
    const roles = rolesOf(root);
    const canEdit = roles.includes("composer") || roles.includes("admin");
    const table = byId("tpl-table");
    const form = byId("tpl-form");
    const note = byId("tpl-flash");
    const hazard = byId("f-hazard");
    let all = [];
    let editing = null;

    function open(template) {
      editing = template;
      form.hidden = false;
      byId("tpl-form-title").textContent = `${t("ops.templates.edit")}: ${template.event} · ${t(`ops.severity.${template.severity}`)}`;
      for (const field of TEXT_FIELDS) {
        for (const l of ["zh", "en"]) byId(`tpl-${field}-${l}`).value = (template[field] || {})[l] || "";
      }
      byId("tpl-expires_in").value = template.expires_in;
      flash("", "ok", note);
      byId("tpl-headline-zh").focus();
    }

    async function reset(template) {
      if (!window.confirm(t("ops.templates.confirm_reset"))) return;
      try {
        await api("DELETE", `/api/v1/templates/${encodeURIComponent(template.id)}`);
        flash(t("ops.saved"), "ok");
        load();
      } catch (err) {
        flash(errorText(err), "error");
      }
    }

    function row(template) {
      const colour = template.severity;
      const actions = [];
      if (canEdit) {
        const edit = el("button", { type: "button", class: "btn btn-plain" }, t("ops.templates.edit"));
        edit.addEventListener("click", () => open(template));
        actions.push(edit);
        if (template.edited) {
          const back = el("button", { type: "button", class: "btn btn-plain" }, t("ops.templates.reset"));
          back.addEventListener("click", () => reset(template));
          actions.push(back);
        }
      }
      return el("tr", { dataset: { template: template.id } },
        el("th", { scope: "row" }, window.EBD.lang === "en" ? template.event_en : template.event),
        el("td", {}, window.EBD.sevBadge(colour)),
        el("td", {}, (template.headline || {})[window.EBD.lang] || (template.headline || {}).zh || ""),
        el("td", {}, template.edited ? t("ops.templates.edited") : t("ops.templates.builtin")),
        el("td", {}, el("div", { class: "actions" }, actions)));
    }

    function show() {
      const chosen = hazard.value;
      fillBody(table, all.filter((tpl) => !chosen || tpl.hazard === chosen).map(row));
    }

    async function load() {
      try {
        const { data } = await api("GET", "/api/v1/templates");
        all = data.templates;
        const hazards = new Map(all.map((tpl) => [tpl.hazard, window.EBD.lang === "en" ? tpl.event_en : tpl.event]));
        const chosen = hazard.value;
        while (hazard.options.length > 1) hazard.remove(1);
        for (const [value, name] of hazards) hazard.append(el("option", { value }, name));
        hazard.value = chosen;
        show();
        root.dataset.loaded = "1";
      } catch (err) {
        failBody(table, err);
      }
    }

    hazard.addEventListener("change", show);
    byId("tpl-filters").addEventListener("submit", (event) => event.preventDefault());
    byId("tpl-close").addEventListener("click", () => { form.hidden = true; editing = null; });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!editing) return;
      // Only what the person changed: the rest stays as it is (built in or the office's).
      const body = {};
      const expires = Number(byId("tpl-expires_in").value);
      if (expires !== editing.expires_in) body.expires_in = expires;
      for (const field of TEXT_FIELDS) {
        const now = { zh: byId(`tpl-${field}-zh`).value.trim(), en: byId(`tpl-${field}-en`).value.trim() };
        const was = editing[field] || {};
        if (now.zh !== (was.zh || "") || now.en !== (was.en || "")) body[field] = now;
      }
      try {
        await api("PUT", `/api/v1/templates/${encodeURIComponent(editing.id)}`, body);
        form.hidden = true;
        editing = null;
        flash(t("ops.saved"), "ok");
        load();
      } catch (err) {
        flash(errorText(err), "error", note);
      }
    });
    load();
  }

  const PAGES = {
    "ops-terminals": terminalsPage,
    "ops-drills": drillsPage,
    "ops-drill": drillPage,
    "ops-compliance": compliancePage,
    "ops-acks": acksPage,
    "ops-people": peoplePage,
    "ops-templates": templatesPage,
  };

  onReady(() => {
    for (const [id, start] of Object.entries(PAGES)) {
      const root = byId(id);
      if (root) start(root);
    }
  });
})();
