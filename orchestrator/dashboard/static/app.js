// tmuxagent dashboard: renders /api/state and follows /api/stream (SSE), polling if that fails.
// Every value from the state is inserted as text (textContent / text nodes), never as HTML.
"use strict";
(function () {
  const POLL_MS = 3000;
  const STALE_MS = 10000;
  let lastMessageAt = 0;
  const openDetails = new Set();

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // CSS class fragments only from a fixed alphabet, so data can never add other classes.
  const token = (value) => String(value || "none").toLowerCase().replace(/[^a-z0-9_-]/g, "") || "none";
  const pct = (value) => (value === null || value === undefined ? "n/a" : (value * 100).toFixed(1) + "%");
  const time = (iso) => (iso ? String(iso).replace("T", " ").slice(0, 19) : "");
  const seconds = (s) => (typeof s !== "number" ? "?" : s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s");

  function badge(text, kind, cls) {
    return el("span", { class: "badge " + kind + (cls ? " " + cls : "") }, text);
  }

  function ageText(iso) {
    const then = Date.parse(iso);
    if (!iso || Number.isNaN(then)) return "no heartbeat";
    const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    return "heartbeat " + seconds + "s ago";
  }

  function elapsedText(iso) {
    const then = Date.parse(iso);
    if (!iso || Number.isNaN(then)) return "";
    const total = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (total < 60) return "for " + total + "s";
    if (total < 3600) return "for " + Math.floor(total / 60) + "m" + String(total % 60).padStart(2, "0") + "s";
    if (total < 86400) return "for " + Math.floor(total / 3600) + "h" + String(Math.floor((total % 3600) / 60)).padStart(2, "0") + "m";
    return "for " + Math.floor(total / 86400) + "d" + String(Math.floor((total % 86400) / 3600)).padStart(2, "0") + "h";
  }

  function details(key, summary, body) {
    const node = el("details", { "data-key": key }, el("summary", null, summary), body);
    if (openDetails.has(key)) node.open = true;
    node.addEventListener("toggle", () => (node.open ? openDetails.add(key) : openDetails.delete(key)));
    return node;
  }

  // An agent's tool calls: the name, and the shell command for shell tools.
  function toolList(tools) {
    if (!tools.length) return el("p", { class: "muted last-tools-none" }, "no tool calls");
    return el("div", { class: "last-tools-box" }, el("span", { class: "muted" }, "tools (" + tools.length + ")"),
      el("ul", { class: "last-tools" }, tools.map((t) =>
      el("li", { class: "tool" }, el("span", { class: "tool-name" }, t.name || "?"),
        t.command ? [" ", el("code", { class: "tool-command" }, t.command)] : null))));
  }

  function lastResult(session) {
    const last = session.last_command_result;
    const agent = session.kind === "agent";
    if (!last) return el("p", { class: "muted last-none" }, agent ? "no turn has finished yet" : "no command has finished yet");
    return el("div", { class: "last" },
      el("div", { class: "last-line" },
        badge(last.status || "unknown", "status-" + token(last.status), "last-status"),
        agent && last.exit_code === null ? null
          : el("span", { class: "last-exit" }, "exit " + (last.exit_code === null ? "—" : last.exit_code)),
        el("span", { class: "muted" }, seconds(last.duration_s)),
        el("span", { class: "muted" }, "#" + last.command_id + " at " + time(last.finished_at))),
      el("code", { class: "last-command" }, last.command || ""),
      last.reply !== null && last.reply !== undefined
        ? el("div", { class: "last-reply-box" }, el("span", { class: "muted" }, "reply"),
          el("pre", { class: "last-reply" }, last.reply || "(empty)"))
        : null,
      Array.isArray(last.tools) ? toolList(last.tools) : null,
      agent ? null
        : details(session.name + ":tail", "output tail", el("pre", { class: "last-output" }, last.output_tail || "(no output)")));
  }

  function runningLine(s) {
    if (!s.running) return null;
    const agent = s.kind === "agent";
    return el("p", { class: "running", "data-started": s.running.started_at },
      (agent ? "prompt #" : "running #") + s.running.id + " ",
      el("span", { class: "muted elapsed" }, elapsedText(s.running.started_at)), ": ",
      el("code", { class: agent ? "running-prompt" : "running-command" }, s.running.command));
  }

  function recommendations(next) {
    if (!next) return null;
    const head = el("h3", null, "下一步建议 · next actions",
      el("span", { class: "muted" }, " " + [next.source, time(next.generated_at)].filter(Boolean).join(" · ")));
    const blockers = next.blockers.length
      ? el("ul", { class: "rec-blockers" }, next.blockers.map((b) => el("li", null, b))) : null;
    const cards = next.recommendations.map((rec) =>
      el("article", { class: "rec-card", "data-priority": token(rec.priority), "data-risk": token(rec.risk) },
        el("h4", { class: "rec-title" }, rec.title),
        el("div", { class: "rec-badges" },
          rec.priority ? badge("priority " + rec.priority, "priority-" + token(rec.priority)) : null,
          rec.risk ? badge("risk " + rec.risk, "risk-" + token(rec.risk)) : null),
        rec.detail ? el("p", { class: "rec-detail" }, rec.detail) : null,
        rec.command ? el("p", { class: "rec-command-line" }, rec.kind === "prompt" ? "prompt: " : null, el("code", { class: "rec-command" }, rec.command)) : null));
    return el("div", { class: "recs" }, head, blockers, el("div", { class: "rec-cards" }, cards));
  }

  function plan(decomposition) {
    if (!decomposition) return null;
    const steps = decomposition.steps.map((step) =>
      el("li", { class: "step", "data-status": token(step.status) },
        el("span", { class: "step-title" }, step.title), " ", badge(step.status, "step-" + token(step.status))));
    return el("div", { class: "plan" },
      el("h3", null, "任务分解 · decomposition ",
        el("span", { class: "muted plan-count" }, decomposition.done + "/" + decomposition.total + " done"),
        decomposition.source ? el("span", { class: "muted" }, " · " + decomposition.source) : null),
      el("progress", { class: "plan-progress", max: Math.max(1, decomposition.total), value: decomposition.done }),
      el("ol", { class: "steps" }, steps));
  }

  function sessionPanel(s) {
    const queued = s.queued.length
      ? details(s.name + ":queue", "queued (" + s.queue_depth + ")",
        el("ol", { class: "queued" }, s.queued.map((q) => el("li", null, el("code", null, q.command)))))
      : null;
    return el("section", { class: "session" + (s.blocked ? " blocked" : ""), "data-session": s.name,
      "data-heartbeat": s.heartbeat },
      el("div", { class: "session-head" },
        el("h2", { class: "session-name" }, s.name),
        el("span", { class: "muted target" }, s.target),
        s.kind === "agent" ? badge(s.provider || "agent", "info", "provider") : null,
        badge(s.state || "no state", "state-" + token(s.state), "state"),
        s.blocked ? badge("BLOCKED", "blocked-badge") : null,
        badge("failure streak " + s.failure_streak, s.failure_streak ? "warn" : "ok", "streak"),
        badge("stalls " + s.stall_count, s.stall_count ? "warn" : "ok", "stalls"),
        badge("queue " + s.queue_depth, s.queue_depth ? "info" : "ok", "queue"),
        el("span", { class: "muted heartbeat" }, ageText(s.heartbeat))),
      s.state_detail ? el("p", { class: "muted state-detail" }, s.state_detail) : null,
      runningLine(s),
      s.question ? el("p", { class: "question" }, el("strong", null, "question: "), el("span", { class: "question-text" }, s.question)) : null,
      s.approval ? el("p", { class: "question approval" }, el("strong", null, "approval: "), el("span", { class: "approval-text" }, `${s.approval.tool}: ${s.approval.command}`), " — ", el("code", null, `tmux-agent approve ${s.name}`), " / ", el("code", null, `tmux-agent deny ${s.name}`)) : null,
      lastResult(s),
      queued,
      s.blockers.length ? el("ul", { class: "blockers" }, s.blockers.map((b) => el("li", null, "blocker: ", b))) : null,
      s.requirements_doc ? el("p", { class: "muted" }, "requirements: ", el("code", null, s.requirements_doc)) : null,
      recommendations(s.next_actions),
      plan(s.task_decomposition));
  }

  // messages every channel refused for good: how many, and the last one's errcodes with their fixes
  function deadNotifications(dead) {
    if (!dead || !dead.count || !dead.last) return null;
    const last = dead.last;
    return el("div", { class: "dead-notifications" },
      el("strong", { class: "badge warn" }, dead.count + " dead (not delivered, not retried)"), " — last #" + last.id + " ", last.title || "",
      (last.refusals || []).map((r) => el("div", { class: "dead-refusal" },
        r.channel + " errcode " + r.errcode + (r.meaning ? " (" + r.meaning + ")" : ""), " — fix: ",
        el("span", { class: "dead-fix" }, r.fix || "?"))));
  }

  function render(state) {
    const error = document.getElementById("error");
    error.hidden = !state.error;
    error.textContent = state.error ? "state DB: " + state.error : "";

    const n = state.notifications || {};
    const notifications = document.getElementById("notifications");
    notifications.className = "banner " + ({ degraded: "bad", ok: "good" }[n.state] || "");
    notifications.replaceChildren(
      el("strong", null, "notifications " + (n.state || "unknown")), " ",
      el("span", null, ["channels: " + (n.channels || "none"), n.reason].filter(Boolean).join(" — ")), " ",
      el("span", { class: "muted" }, (n.pending || 0) + " queued in outbox"),
      deadNotifications(n.dead));

    const t = state.totals || {};
    document.getElementById("totals").replaceChildren(
      el("span", null, (t.sessions || 0) + " sessions"),
      el("span", null, (t.blocked || 0) + " blocked"),
      el("span", null, (t.queued || 0) + " queued"),
      el("span", null, "success " + pct(t.success_rate)),
      el("span", null, "failure " + pct(t.failure_rate)));

    document.getElementById("sessions").replaceChildren(
      ...(state.sessions.length ? state.sessions.map(sessionPanel) : [el("p", { class: "muted" }, "no sessions yet")]));

    document.querySelector("#events tbody").replaceChildren(...(state.events || []).map((e) =>
      el("tr", { "data-event": token(e.event) },
        el("td", null, time(e.ts)), el("td", null, e.event), el("td", null, e.session || ""),
        el("td", null, e.command_id !== undefined ? "#" + e.command_id + " " + (e.command || "") : ""),
        el("td", null, [e.status, e.exit_code !== undefined && e.exit_code !== null ? "exit " + e.exit_code : null,
          e.detail].filter((x) => x !== null && x !== undefined && x !== "").join(" · ")))));

    document.getElementById("updated").textContent = "updated " + time(state.generated_at) + " UTC";
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function setLive(kind, text) {
    const live = document.getElementById("live");
    live.className = "live " + kind;
    live.textContent = text;
  }

  function handle(state) {
    lastMessageAt = Date.now();
    render(state);
  }

  function poll() {
    fetch("api/state", { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
      .then((state) => { handle(state); setLive("polling", "polling"); })
      .catch(() => setLive("down", "disconnected"));
  }

  function connect() {
    if (!window.EventSource) {
      setLive("polling", "polling");
      poll();
      setInterval(poll, POLL_MS);
      return;
    }
    const source = new EventSource("api/stream");
    source.addEventListener("state", (event) => { handle(JSON.parse(event.data)); setLive("ok", "live"); });
    source.addEventListener("error", () => setLive("down", "reconnecting…"));
    // If the stream goes quiet (a proxy buffering it, say), fall back to polling until it speaks again.
    setInterval(() => {
      if (Date.now() - lastMessageAt > STALE_MS) poll();
    }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    window.tmuxagentDashboard = { bootedAt: Date.now() };
    connect();
    setInterval(() => {
      for (const node of document.querySelectorAll(".heartbeat")) {
        const panel = node.closest("[data-session]");
        if (panel && panel.dataset.heartbeat) node.textContent = ageText(panel.dataset.heartbeat);
      }
      for (const node of document.querySelectorAll(".running .elapsed")) {
        const line = node.closest("[data-started]");
        if (line) node.textContent = elapsedText(line.dataset.started);
      }
    }, 1000);
  });
})();
