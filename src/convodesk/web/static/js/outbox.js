// Outbox and dead letters: list by state, queue failed and dead sends again.

import { get, post, query } from "./api.js";
import { formatDateTime, h, replace } from "./dom.js";

const form = document.getElementById("outbox-filters");
const body = document.querySelector("#outbox-table tbody");
const status = document.getElementById("outbox-status");
const retrySelected = document.getElementById("retry-selected");
const retryAll = document.getElementById("retry-all");
const selectAll = document.getElementById("select-all");
const RETRYABLE = new Set(["dead", "failed"]);

function states() {
  return [...form.querySelectorAll('input[name="state"]:checked')].map((el) => el.value);
}

function selected() {
  return [...body.querySelectorAll('input[name="entry"]:checked')].map((el) => Number(el.value));
}

function syncButtons() {
  const count = selected().length;
  retrySelected.disabled = count === 0;
  retrySelected.textContent = count ? `Retry selected (${count})` : "Retry selected";
}

function entryRow(item) {
  const retryable = RETRYABLE.has(item.state);
  const preview = item.text ? (item.text.length > 80 ? `${item.text.slice(0, 77)}…` : item.text) : "(no text)";
  return h(
    "tr",
    { class: `state-${item.state}`, dataset: { outboxId: String(item.id) } },
    h(
      "td",
      {},
      retryable
        ? h("input", {
            type: "checkbox",
            name: "entry",
            value: String(item.id),
            "aria-label": `Select outbox entry ${item.id}`,
          })
        : "",
    ),
    h("td", {}, String(item.id)),
    h("td", {}, h("span", { class: `badge ${item.state}` }, item.state)),
    h("td", {}, String(item.attempts)),
    h("td", { class: "message-preview" }, `#${item.message_id} `, h("span", {}, preview)),
    h("td", {}, h("a", { href: `/?conversation=${item.conversation_id}` }, `#${item.conversation_id}`)),
    h("td", {}, item.message_status, item.reason_code ? ` (${item.reason_code})` : ""),
    h("td", { class: "reason" }, item.last_error || ""),
    h("td", { class: "nowrap" }, formatDateTime(item.created_at)),
    h("td", { class: "nowrap" }, item.next_attempt_at ? formatDateTime(item.next_attempt_at) : ""),
  );
}

async function load(message = "") {
  const chosen = states();
  let items;
  try {
    items = await get(`/api/v1/outbox${query({ state: chosen, limit: 500 })}`);
  } catch (error) {
    status.textContent = `The outbox could not be loaded: ${error.message}`;
    return;
  }
  replace(body, items.map(entryRow));
  selectAll.checked = false;
  syncButtons();
  const summary = items.length
    ? `${items.length} entr${items.length > 1 ? "ies" : "y"} (${chosen.join(", ") || "no state chosen"}).`
    : `Nothing in the outbox with state ${chosen.join(" or ") || "(none chosen)"}.`;
  status.textContent = message ? `${message} ${summary}` : summary;
}

async function retry(selection) {
  retrySelected.disabled = true;
  retryAll.disabled = true;
  try {
    const answer = await post("/api/v1/outbox/retry", selection);
    const n = answer.retried;
    await load(`${n} send${n === 1 ? "" : "s"} queued again.`);
  } catch (error) {
    status.textContent = `Retry failed: ${error.message}`;
  } finally {
    retryAll.disabled = false;
    syncButtons();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
body.addEventListener("change", syncButtons);
selectAll.addEventListener("change", () => {
  for (const box of body.querySelectorAll('input[name="entry"]')) box.checked = selectAll.checked;
  syncButtons();
});
retrySelected.addEventListener("click", () => retry({ ids: selected() }));
retryAll.addEventListener("click", () => {
  if (window.confirm("Queue every dead and failed send again?")) retry({ all: true });
});

load();
