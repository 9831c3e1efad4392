// The exchange log, live: server-sent events from /log/events (the backlog first, then each new
// exchange), newest on top.
"use strict";

(() => {
  const list = document.getElementById("log");
  if (!list) return;
  const status = document.getElementById("log-status");
  const filter = document.getElementById("filter");
  const hidePreflight = document.getElementById("hide-preflight");
  const KEPT = 500;

  function el(tag, attrs = {}, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function message(title, m) {
    const div = el("div");
    div.append(el("h4", {}, title));
    if (m.headers.length) {
      div.append(el("pre", { class: "headers" }, m.headers.map(([k, v]) => `${k}: ${v}`).join("\n")));
    }
    div.append(m.body.kind === "empty" ? el("p", { class: "hint" }, "(no body)") : el("pre", {}, m.body.text));
    return div;
  }

  function apply(item) {
    const query = filter.value.trim().toLowerCase();
    item.hidden =
      (hidePreflight.checked && item.dataset.preflight === "yes") ||
      (query !== "" && !item.dataset.search.includes(query));
  }

  function add(entry) {
    const item = el("details", { class: "entry" });
    item.dataset.search = `${entry.from} ${entry.to} ${entry.method} ${entry.path} ${entry.status}`.toLowerCase();
    item.dataset.preflight = entry.method === "OPTIONS" ? "yes" : "no";
    const summary = el("summary");
    summary.append(
      el("span", {}, new Date(entry.at).toLocaleTimeString()),
      el("span", {}, `${entry.from} → ${entry.to}`),
      el("span", {}, entry.method),
      el("span", { class: "path", title: entry.path }, entry.path),
      el("span", { class: "s" + String(entry.status)[0] }, String(entry.status)),
      el("span", {}, `${entry.duration_ms.toFixed(1)} ms`),
    );
    const body = el("div", { class: "body exchange" });
    body.append(message("Request", entry.request), message("Response", entry.response));
    item.append(summary, body);
    apply(item);
    list.prepend(item);
    while (list.children.length > KEPT) list.lastElementChild.remove();
  }

  const applyAll = () => [...list.children].forEach(apply);
  filter.addEventListener("input", applyAll);
  hidePreflight.addEventListener("change", applyAll);
  document.getElementById("clear").addEventListener("click", () => list.replaceChildren());

  const source = new EventSource("/log/events");
  source.addEventListener("exchange", (e) => add(JSON.parse(e.data)));
  source.addEventListener("lagged", (e) => {
    status.textContent = `live (${e.data} exchanges went by too fast to show)`;
  });
  source.addEventListener("open", () => {
    status.textContent = "live";
  });
  source.addEventListener("error", () => {
    status.textContent = "reconnecting…";
  });
})();
