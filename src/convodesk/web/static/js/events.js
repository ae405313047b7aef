// The event log page: filters (kept in the address bar, so a filtered view can be linked
// and survives a reload), keyset paging with the API's `next` cursor, and each event's raw
// body on demand.

import { get, query, ApiError } from "./api.js";
import { h, replace } from "./dom.js";

const form = document.getElementById("event-filters");
const table = document.getElementById("events-table");
const body = table.querySelector("tbody");
const status = document.getElementById("events-status");
const pager = document.querySelector(".pager");
const FILTERS = ["service", "trigger", "outcome", "state", "app_id", "identity", "since", "until"];

// cursors[i] is the `before` of page i; page 0 is the newest
let cursors = [undefined];
let page = 0;
let next = null;

function filters() {
  const values = {};
  for (const name of [...FILTERS, "limit"]) {
    const el = form.elements.namedItem(name);
    if (el && el.value.trim() !== "") values[name] = el.value.trim();
  }
  return values;
}

function fillForm(params) {
  for (const name of [...FILTERS, "limit"]) {
    const el = form.elements.namedItem(name);
    if (!el || !params.has(name)) continue;
    const value = params.get(name);
    // a value from the address bar that the list does not offer (limit=10, say) is added
    if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === value)) {
      el.appendChild(h("option", { value }, value));
    }
    el.value = value;
  }
}

const utc = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "") : "");

function prettyBody(raw) {
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    return raw;
  }
}

function eventRows(item) {
  const detailId = `event-body-${item.id}`;
  const detail = h(
    "tr",
    { id: detailId, class: "event-body", hidden: true },
    h("td", { colspan: "11" }, h("pre", { tabindex: "0", "aria-label": `Body of event ${item.id}` }, prettyBody(item.body))),
  );
  const toggle = h(
    "button",
    {
      type: "button",
      class: "small",
      "aria-expanded": "false",
      "aria-controls": detailId,
      onclick: (event) => {
        const open = detail.hidden;
        detail.hidden = !open;
        event.currentTarget.setAttribute("aria-expanded", String(open));
        event.currentTarget.textContent = open ? "Hide body" : "Body";
      },
    },
    "Body",
  );
  const reason = [item.reason, item.state_reason].filter(Boolean).join(" — ");
  const row = h(
    "tr",
    { class: `outcome-${item.outcome}`, dataset: { eventId: String(item.id) } },
    h("td", {}, String(item.id)),
    h("td", { class: "nowrap" }, h("time", { datetime: item.received_at }, utc(item.received_at))),
    h("td", {}, item.service || "—"),
    h("td", {}, item.trigger || "—"),
    h("td", {}, item.channel || "—"),
    h("td", {}, item.identity || "—"),
    h("td", {}, h("span", { class: `badge ${item.outcome}` }, item.outcome)),
    h("td", {}, item.state),
    h(
      "td",
      {},
      item.conversation_id
        ? h("a", { href: `/?conversation=${item.conversation_id}` }, `#${item.conversation_id}`)
        : "—",
    ),
    h("td", { class: "reason" }, reason || ""),
    h("td", {}, toggle),
  );
  return [row, detail];
}

function updatePager() {
  pager.querySelector('[data-page="newest"]').disabled = page === 0;
  pager.querySelector('[data-page="newer"]').disabled = page === 0;
  pager.querySelector('[data-page="older"]').disabled = next === null;
}

async function load() {
  const params = { ...filters(), before: cursors[page] };
  status.textContent = "Loading…";
  let answer;
  try {
    answer = await get(`/api/v1/events${query(params)}`);
  } catch (error) {
    replace(body);
    next = null;
    updatePager();
    const problems = error instanceof ApiError ? error.problems : [];
    status.textContent = problems.length
      ? `The filter is not valid: ${problems.map((p) => `${p.path}: ${p.message}`).join("; ")}`
      : `The event log could not be loaded: ${error.message}`;
    return;
  }
  next = answer.next;
  replace(body, answer.items.map(eventRows));
  const count = answer.items.length;
  status.textContent = count
    ? `Page ${page + 1}: ${count} event${count > 1 ? "s" : ""}${next === null ? " (the oldest)" : ""}.`
    : "No event matches these filters.";
  updatePager();
}

function syncAddress() {
  const search = query(filters());
  history.replaceState(null, "", `${location.pathname}${search}`);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  cursors = [undefined];
  page = 0;
  syncAddress();
  load();
});

form.addEventListener("reset", () => {
  setTimeout(() => {
    cursors = [undefined];
    page = 0;
    syncAddress();
    load();
  });
});

pager.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-page]");
  if (!button) return;
  const which = button.dataset.page;
  if (which === "older" && next !== null) {
    cursors = cursors.slice(0, page + 1);
    cursors.push(next);
    page += 1;
  } else if (which === "newer" && page > 0) {
    page -= 1;
  } else if (which === "newest") {
    page = 0;
  }
  load().then(() => table.focus());
});

table.tabIndex = -1;
fillForm(new URLSearchParams(location.search));
load();
