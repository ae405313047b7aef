// The agent desktop: offers, my chats, queues, the transcript and the reply box, kept live
// by the event stream (stream.js) and fetched again after every reconnection.
//
// Endpoints (docs/guides/agent-guide.md lists them): /api/v1/me, /me/presence,
// /queues/overview, /queues/{name}/waiting, /offers, /offers/{id}/accept|reject,
// /conversations?assigned=me&status=active, /conversations/{id}[/messages|/history|
// /templates|/attachments|/pick|/transfer|/end], /stream. An endpoint this server does not
// have (404) leaves its panel empty with a note, and the rest works.

import { api, ApiError, get, post, put, query } from "./api.js";
import { formatDateTime, formatSeconds, formatTime, h, replace } from "./dom.js";
import { customerLabel, newerSnapshot, renderMessage, updateStatus } from "./messages.js";
import { LiveStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const root = $("desktop");
const me = { login: root.dataset.login, role: root.dataset.role, name: root.dataset.name };

const state = {
  presence: null,
  offers: new Map(), // id -> offer
  chats: new Map(), // id -> conversation (mine, active)
  unread: new Map(), // conversation id -> count
  typing: new Map(), // conversation id -> until (ms since epoch)
  overview: new Map(), // queue name -> row
  overviewAt: Date.now(),
  current: null, // the conversation on screen
  messages: new Map(), // message id -> message, of the conversation on screen
  templates: null, // {whatsapp_window, templates} of the conversation on screen
  attachment: null, // the uploaded file waiting to be sent: {token, filename, ...}
  waitingQueue: null,
  missing: new Set(), // endpoints this server does not have
};

// What a screen reader should hear at once (a new offer, a new message, a failed one); the
// lists themselves are not live regions, so a re-render never reads them out again.
function announce(text) {
  const region = $("announce");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// --------------------------------------------------------------------------- fetching

// null when the endpoint does not exist here (404 or 405 on a collection)
async function optional(path, note) {
  try {
    const answer = await get(path);
    state.missing.delete(note);
    return answer;
  } catch (error) {
    // 403 too: before the chat server, /queues/overview is taken for an admin queue name
    if (error instanceof ApiError && [403, 404, 405].includes(error.status)) {
      state.missing.add(note);
      return null;
    }
    throw error;
  }
}

const itemsOf = (answer) => (Array.isArray(answer) ? answer : (answer && answer.items) || []);

async function loadMe() {
  const answer = await optional("/api/v1/me", "me");
  if (answer && answer.presence !== undefined) state.presence = answer.presence;
  renderPresence();
}

async function loadOffers() {
  const answer = await optional("/api/v1/offers", "offers");
  state.offers = new Map(itemsOf(answer).map((o) => [String(o.id), o]));
  renderOffers();
}

async function loadChats() {
  const answer = await get(`/api/v1/conversations${query({ assigned: "me", status: "active", limit: 100 })}`);
  const chats = itemsOf(answer).filter(isMine);
  state.chats = new Map(chats.map((c) => [String(c.id), c]));
  for (const c of chats) if (c.customer_typing) markTyping(c.id, Date.now() + 15000);
  renderChats();
}

async function loadOverview() {
  const answer = await optional("/api/v1/queues/overview", "overview");
  state.overview = new Map(itemsOf(answer).map((row) => [row.queue, row]));
  state.overviewAt = Date.now();
  renderOverview();
  if (state.waitingQueue) showWaiting(state.waitingQueue, false);
}

async function loadAll() {
  const results = await Promise.allSettled([loadMe(), loadOffers(), loadChats(), loadOverview()]);
  for (const r of results) if (r.status === "rejected") console.warn(r.reason);
  if (state.current) await openConversation(state.current.id, { keepFocus: true });
}

// A conversation is mine when it is assigned to me; a server without assignments yet
// shows every active conversation the token may see.
function isMine(conversation) {
  if (conversation.status && conversation.status !== "active") return false;
  if (!("assigned_agent" in conversation)) return true;
  const assigned = conversation.assigned_agent;
  const login = assigned && typeof assigned === "object" ? assigned.login : assigned;
  return login === me.login;
}

// --------------------------------------------------------------------------- presence

function renderPresence() {
  const button = $("presence-toggle");
  const ready = state.presence === "ready";
  button.setAttribute("aria-pressed", String(ready));
  button.classList.toggle("ready", ready);
  button.classList.toggle("not-ready", state.presence === "not_ready");
  button.querySelector(".label").textContent =
    state.presence === null ? "Status unknown" : ready ? "Ready" : "Not ready";
  button.title = ready ? "Ready for chats: press to take a break" : "Not ready: press to take chats";
}

async function togglePresence() {
  const next = state.presence === "ready" ? "not_ready" : "ready";
  try {
    await put("/api/v1/me/presence", { state: next });
    state.presence = next;
    renderPresence();
  } catch (error) {
    flashStatus(`The status could not be changed: ${error.message}`);
  }
}

// --------------------------------------------------------------------------- offers

function oldestOffer() {
  return [...state.offers.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : 1))[0];
}

function renderOffers() {
  const list = $("offers");
  const offers = [...state.offers.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
  replace(
    list,
    offers.map((offer, index) =>
      h(
        "li",
        { class: "offer", dataset: { offerId: String(offer.id) } },
        h(
          "p",
          { class: "offer-head" },
          h("strong", {}, customerLabel(offer) || `Conversation #${offer.conversation_id}`),
          " ",
          h("span", { class: "channel" }, offer.channel || ""),
        ),
        h("p", { class: "offer-queue" }, `Queue ${offer.queue}`),
        offer.preview ? h("p", { class: "offer-preview" }, offer.preview) : null,
        h("p", { class: "countdown", dataset: { expires: offer.expires_at || "" } }),
        h(
          "div",
          { class: "offer-actions" },
          h(
            "button",
            { type: "button", class: "primary", onclick: () => acceptOffer(offer.id) },
            "Accept",
            index === 0 ? h("span", { class: "hint" }, " (Alt+A)") : null,
          ),
          h(
            "button",
            { type: "button", onclick: () => rejectOffer(offer.id) },
            "Reject",
            index === 0 ? h("span", { class: "hint" }, " (Alt+R)") : null,
          ),
        ),
      ),
    ),
  );
  $("offers-empty").hidden = offers.length > 0;
  $("offers-empty").textContent = state.missing.has("offers")
    ? "Offers are not available on this server."
    : "No offer for you right now.";
  $("offers-count").textContent = offers.length ? `(${offers.length})` : "";
  tick();
}

async function acceptOffer(id) {
  const offer = state.offers.get(String(id));
  try {
    const conversation = await post(`/api/v1/offers/${id}/accept`, {});
    state.offers.delete(String(id));
    renderOffers();
    if (conversation && conversation.id) {
      state.chats.set(String(conversation.id), conversation);
      renderChats();
      await openConversation(conversation.id);
    } else if (offer) {
      await loadChats();
      await openConversation(offer.conversation_id);
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      state.offers.delete(String(id));
      renderOffers();
      flashStatus("That offer was taken by someone else or has expired.");
    } else {
      flashStatus(`The offer could not be accepted: ${error.message}`);
    }
  }
}

async function rejectOffer(id) {
  try {
    await post(`/api/v1/offers/${id}/reject`, {});
  } catch (error) {
    if (!(error instanceof ApiError && (error.status === 409 || error.status === 404))) {
      flashStatus(`The offer could not be rejected: ${error.message}`);
      return;
    }
  }
  state.offers.delete(String(id));
  renderOffers();
}

// --------------------------------------------------------------------------- chats

function markTyping(conversationId, until) {
  state.typing.set(String(conversationId), until);
}

function isTyping(conversationId) {
  const until = state.typing.get(String(conversationId));
  return until !== undefined && until > Date.now();
}

function sortedChats() {
  return [...state.chats.values()].sort((a, b) =>
    (a.last_activity_at || "") < (b.last_activity_at || "") ? 1 : -1,
  );
}

function renderChats() {
  const chats = sortedChats();
  const currentId = state.current ? String(state.current.id) : null;
  replace(
    $("chats"),
    chats.map((c) => {
      const unread = state.unread.get(String(c.id)) || 0;
      const label = customerLabel(c) || `#${c.id}`;
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: `chat${String(c.id) === currentId ? " current" : ""}${unread ? " unread" : ""}`,
            "aria-current": String(c.id) === currentId ? "true" : false,
            dataset: { conversationId: String(c.id) },
            onclick: () => openConversation(c.id),
          },
          h("span", { class: "chat-name" }, label),
          h("span", { class: "chat-meta" }, `${c.channel} · ${c.queue}`),
          isTyping(c.id) ? h("span", { class: "chat-typing" }, "typing…") : null,
          unread
            ? h("span", { class: "unread-badge" }, String(unread), h("span", { class: "visually-hidden" }, " unread"))
            : null,
        ),
      );
    }),
  );
  $("chats-empty").hidden = chats.length > 0;
  $("chats-count").textContent = chats.length ? `(${chats.length})` : "";
}

function moveChat(step) {
  const chats = sortedChats();
  if (!chats.length) return;
  const index = state.current ? chats.findIndex((c) => String(c.id) === String(state.current.id)) : -1;
  const next = chats[(index + step + chats.length) % chats.length];
  openConversation(next.id).then(() => {
    const button = document.querySelector(`.chat[data-conversation-id="${next.id}"]`);
    if (button) button.focus();
  });
}

// --------------------------------------------------------------------------- queues

function renderOverview() {
  const rows = [...state.overview.values()].sort((a, b) => (b.priority || 0) - (a.priority || 0));
  const elapsed = (Date.now() - state.overviewAt) / 1000;
  replace(
    $("queues").querySelector("tbody"),
    rows.map((row) =>
      h(
        "tr",
        { dataset: { queue: row.queue } },
        h("th", { scope: "row" }, row.queue),
        // the count opens the list of waiting conversations (a fourth column would not fit)
        h(
          "td",
          { class: row.waiting ? "busy" : "" },
          row.waiting
            ? h(
                "button",
                {
                  type: "button",
                  class: "count-button",
                  title: "Show the waiting conversations",
                  "aria-label": `Show the ${row.waiting} waiting in ${row.queue}`,
                  onclick: () => showWaiting(row.queue, true),
                },
                String(row.waiting),
              )
            : "0",
        ),
        h("td", {}, row.waiting && row.longest_wait_seconds != null ? formatSeconds(row.longest_wait_seconds + elapsed) : "—"),
        h("td", {}, `${row.agents_ready ?? 0} / ${row.agents_busy ?? 0}`),
      ),
    ),
  );
  const empty = $("queues-empty");
  empty.hidden = rows.length > 0;
  $("queues").hidden = rows.length === 0;
  empty.textContent = state.missing.has("overview")
    ? "The queue overview is not available on this server."
    : "You belong to no queue.";
  const select = $("transfer-queue");
  const chosen = select.value;
  replace(
    select,
    h("option", { value: "" }, "choose a queue"),
    rows.map((row) => h("option", { value: row.queue }, row.queue)),
  );
  select.value = chosen;
}

async function showWaiting(queue, focus) {
  state.waitingQueue = queue;
  const box = $("waiting");
  let answer;
  try {
    answer = await get(`/api/v1/queues/${encodeURIComponent(queue)}/waiting`);
  } catch (error) {
    answer = [];
    flashStatus(`The waiting list could not be loaded: ${error.message}`);
  }
  const items = itemsOf(answer);
  $("waiting-title").textContent = `Waiting in ${queue} (${items.length})`;
  replace(
    $("waiting-list"),
    items.map((c) =>
      h(
        "li",
        {},
        h("span", {}, customerLabel(c) || `#${c.id}`, " · ", c.channel || "", " · since ", formatTime(c.opened_at || c.created_at)),
        " ",
        h("button", { type: "button", class: "small", onclick: () => pick(c.id) }, "Pick", h("span", { class: "visually-hidden" }, ` ${customerLabel(c)}`)),
      ),
    ),
    h("li", {}, h("button", { type: "button", class: "link-button", onclick: hideWaiting }, "Close the list")),
  );
  box.hidden = false;
  if (focus) {
    const first = box.querySelector("button");
    if (first) first.focus();
  }
}

function hideWaiting() {
  state.waitingQueue = null;
  $("waiting").hidden = true;
}

async function pick(id) {
  try {
    const conversation = await post(`/api/v1/conversations/${id}/pick`, {});
    if (conversation && conversation.id) state.chats.set(String(conversation.id), conversation);
    renderChats();
    hideWaiting();
    await openConversation(id);
  } catch (error) {
    flashStatus(
      error instanceof ApiError && error.status === 409
        ? "Someone else took that conversation."
        : `The conversation could not be picked: ${error.message}`,
    );
  }
}

// --------------------------------------------------------------------------- conversation

async function allMessages(id) {
  const messages = [];
  let after;
  for (let page = 0; page < 50; page += 1) {
    const answer = await get(`/api/v1/conversations/${id}/messages${query({ limit: 500, after })}`);
    messages.push(...answer.items);
    if (answer.next === null || answer.next === undefined) break;
    after = answer.next;
  }
  return messages;
}

async function openConversation(id, { keepFocus = false } = {}) {
  let conversation;
  let messages;
  try {
    [conversation, messages] = await Promise.all([get(`/api/v1/conversations/${id}`), allMessages(id)]);
  } catch (error) {
    flashStatus(`Conversation #${id} could not be opened: ${error.message}`);
    return;
  }
  const switched = !state.current || String(state.current.id) !== String(conversation.id);
  state.current = conversation;
  state.messages = new Map(messages.map((m) => [String(m.id), m]));
  state.unread.set(String(id), 0);
  if (switched) {
    state.attachment = null;
    renderAttachment();
    $("reply-text").value = "";
    hideReplyError();
  }
  history.replaceState(null, "", `/?conversation=${conversation.id}`);
  renderConversation();
  renderTranscript();
  renderChats();
  // ready to type at once; the templates and earlier conversations come in behind
  const focusReply = switched && !keepFocus && !$("reply").hidden;
  if (focusReply && !$("reply-text-area").hidden) $("reply-text").focus();
  await Promise.allSettled([loadTemplates(conversation), loadHistory(conversation)]);
  if (focusReply && !$("template-picker").hidden) $("template-select").focus();
}

function canWrite(conversation) {
  return conversation && conversation.status === "active" && isMine(conversation);
}

function renderConversation() {
  const c = state.current;
  $("conv-title").textContent = c ? customerLabel(c) || `Conversation #${c.id}` : "No chat selected";
  $("conv-meta").textContent = c
    ? `${c.channel} · queue ${c.queue} · ${c.status}${c.opened_at ? ` · since ${formatDateTime(c.opened_at)}` : ""}`
    : "";
  renderWindow();
  $("reply").hidden = !canWrite(c);
  $("chat-actions").hidden = !canWrite(c);
  renderTyping();
  const details = c
    ? [
        ["Identity", c.identity || customerLabel(c)],
        ["Channel", c.channel],
        ["Queue", c.queue],
        ["Messaging service", c.service],
        ["App", c.app_id],
        ["Conversation", `#${c.id}${c.reopen_count ? ` (reopened ${c.reopen_count}×)` : ""}`],
        ["Assigned to", assignedLabel(c)],
      ].filter(([, v]) => v)
    : [];
  replace($("customer-details"), details.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function assignedLabel(c) {
  const a = c.assigned_agent;
  if (!a) return a === null ? "nobody" : "";
  return typeof a === "object" ? a.display_name || a.login : a;
}

function windowOf(conversation) {
  if (state.templates && state.templates.whatsapp_window !== undefined && state.templates.whatsapp_window !== null) {
    return state.templates.whatsapp_window;
  }
  return conversation ? conversation.whatsapp_window : null;
}

function windowOpen(conversation) {
  const w = windowOf(conversation);
  if (!w) return true;
  if (w.closes_at) return Date.parse(w.closes_at) > Date.now();
  return Boolean(w.open);
}

function renderWindow() {
  const c = state.current;
  const line = $("wa-window");
  const w = windowOf(c);
  if (!c || !w) {
    line.hidden = true;
    setTemplateMode(false);
    return;
  }
  line.hidden = false;
  const open = windowOpen(c);
  line.classList.toggle("closed", !open);
  if (open && w.closes_at) {
    const left = (Date.parse(w.closes_at) - Date.now()) / 1000;
    line.textContent = `WhatsApp window open: free text until ${formatDateTime(w.closes_at)} (${formatSeconds(left)} left).`;
  } else if (w.closes_at) {
    line.textContent = `WhatsApp window closed since ${formatDateTime(w.closes_at)}: send an approved template.`;
  } else {
    line.textContent = "WhatsApp window closed (the customer has not written): send an approved template.";
  }
  setTemplateMode(!open);
}

function renderTranscript() {
  const list = $("transcript");
  const customer = customerLabel(state.current);
  const messages = [...state.messages.values()].sort((a, b) => Number(a.id) - Number(b.id));
  replace(list, messages.map((m) => renderMessage(m, customer)));
  list.scrollTop = list.scrollHeight;
}

function addMessage(snapshot) {
  const key = String(snapshot.id);
  const message = newerSnapshot(state.messages.get(key), snapshot);
  const list = $("transcript");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const existing = list.querySelector(`[data-message-id="${CSS.escape(key)}"]`);
  state.messages.set(key, message);
  const item = renderMessage(message, customerLabel(state.current));
  if (existing) existing.replaceWith(item);
  else {
    const later = [...list.children].find((li) => Number(li.dataset.messageId) > Number(message.id));
    list.insertBefore(item, later || null);
  }
  if (nearBottom || message.direction === "outbound") list.scrollTop = list.scrollHeight;
}

function renderTyping() {
  const c = state.current;
  $("typing").textContent = c && isTyping(c.id) ? `${customerLabel(c) || "The customer"} is typing…` : "";
}

async function loadTemplates(conversation) {
  state.templates = null;
  if (conversation.channel === "WHATSAPP") {
    state.templates = await optional(`/api/v1/conversations/${conversation.id}/templates`, "templates");
  }
  fillTemplates();
  renderWindow();
}

async function loadHistory(conversation) {
  const answer = await optional(`/api/v1/conversations/${conversation.id}/history`, "history");
  const earlier = itemsOf(answer).filter((c) => String(c.id) !== String(conversation.id));
  replace(
    $("history"),
    earlier.map((c) => {
      const details = h(
        "details",
        { class: "earlier", dataset: { conversationId: String(c.id) } },
        h("summary", {}, `${formatDateTime(c.opened_at)} · ${c.channel} · ${c.queue}${c.status === "closed" ? "" : ` · ${c.status}`}`),
        h("ol", { class: "transcript small", "aria-label": `Conversation of ${formatDateTime(c.opened_at)}` }),
      );
      details.addEventListener("toggle", async () => {
        if (!details.open || details.dataset.loaded) return;
        details.dataset.loaded = "yes";
        try {
          const messages = await allMessages(c.id);
          replace(details.querySelector("ol"), messages.map((m) => renderMessage(m, customerLabel(c))));
        } catch (error) {
          replace(details.querySelector("ol"), h("li", {}, `Could not be loaded: ${error.message}`));
        }
      });
      return h("li", {}, details);
    }),
  );
  const empty = $("history-empty");
  empty.hidden = earlier.length > 0;
  empty.textContent = state.missing.has("history") ? "Not available on this server." : "None.";
}

// --------------------------------------------------------------------------- reply

function setTemplateMode(on) {
  $("template-picker").hidden = !on;
  $("reply-text-area").hidden = on;
  $("attach-area").hidden = on;
}

function templates() {
  return (state.templates && state.templates.templates) || [];
}

function fillTemplates() {
  const select = $("template-select");
  const list = templates();
  replace(
    select,
    list.length
      ? list.map((t, i) => h("option", { value: String(i) }, `${t.name} (${t.language})`))
      : h("option", { value: "" }, "No approved template for this app"),
  );
  select.disabled = !list.length;
  fillParameters();
}

function fillParameters() {
  const template = templates()[Number($("template-select").value)];
  const box = $("template-params");
  if (!template) {
    replace(box);
    $("template-preview").textContent = "";
    return;
  }
  replace(
    box,
    (template.parameters || []).map((key, i) => {
      const id = `tpl-param-${i}`;
      return h(
        "div",
        { class: "field" },
        h("label", { for: id }, key),
        h("input", { id, type: "text", dataset: { key }, oninput: previewTemplate }),
      );
    }),
  );
  previewTemplate();
}

function templateValues() {
  const values = {};
  for (const input of $("template-params").querySelectorAll("input[data-key]")) {
    values[input.dataset.key] = input.value;
  }
  return values;
}

function previewTemplate() {
  const template = templates()[Number($("template-select").value)];
  if (!template || !template.text) {
    $("template-preview").textContent = "";
    return;
  }
  const values = templateValues();
  const text = template.text.replace(/\{([^{}]+)\}/g, (all, key) => (values[key] ? values[key] : all));
  $("template-preview").textContent = `Preview: ${text}`;
}

function showReplyError(message) {
  const line = $("reply-error");
  line.textContent = message;
  line.hidden = false;
}

function hideReplyError() {
  const line = $("reply-error");
  line.hidden = true;
  line.textContent = "";
}

function problemsText(error) {
  const problems = error instanceof ApiError ? error.problems : [];
  if (!problems.length) return error.message;
  return problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join("; ");
}

async function sendBody(conversationId, body) {
  const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  const message = await api("POST", `/api/v1/conversations/${conversationId}/messages`, {
    json: body,
    headers: { "Idempotency-Key": key },
  });
  if (message && message.id && state.current && String(state.current.id) === String(conversationId)) {
    addMessage({ attachments: [], ...message });
  }
}

async function sendReply() {
  const c = state.current;
  if (!canWrite(c)) return;
  hideReplyError();
  const button = $("reply-send");
  const bodies = [];
  if (!$("template-picker").hidden) {
    const template = templates()[Number($("template-select").value)];
    if (!template) {
      showReplyError("There is no approved template to send.");
      return;
    }
    bodies.push({ template: { name: template.name, language: template.language, parameters: templateValues() } });
  } else {
    if (state.attachment) bodies.push({ attachment: state.attachment.token });
    const text = $("reply-text").value.trim();
    if (text) bodies.push({ text });
  }
  if (!bodies.length) {
    showReplyError("Write a message or attach a file first.");
    $("reply-text").focus();
    return;
  }
  button.disabled = true;
  try {
    for (const body of bodies) {
      await sendBody(c.id, body);
      if (body.attachment) {
        state.attachment = null;
        renderAttachment();
      }
      if (body.text) $("reply-text").value = "";
      if (body.template) fillParameters();
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.body.whatsapp_window) {
      state.templates = { whatsapp_window: error.body.whatsapp_window, templates: error.body.templates || templates() };
      fillTemplates();
      renderWindow();
    }
    showReplyError(`Not sent: ${problemsText(error)}`);
  } finally {
    button.disabled = false;
  }
}

function renderAttachment() {
  const chip = $("reply-attachment");
  const a = state.attachment;
  if (!a) {
    chip.hidden = true;
    replace(chip);
    return;
  }
  chip.hidden = false;
  replace(
    chip,
    a.uploading ? `Uploading ${a.filename}…` : `Attached: ${a.filename}`,
    a.uploading
      ? null
      : h(
          "button",
          {
            type: "button",
            class: "small",
            "aria-label": `Remove the attachment ${a.filename}`,
            onclick: () => {
              state.attachment = null;
              renderAttachment();
              $("reply-file").focus();
            },
          },
          "Remove",
        ),
  );
}

async function upload(file) {
  const c = state.current;
  if (!c || !file) return;
  hideReplyError();
  state.attachment = { filename: file.name, uploading: true };
  renderAttachment();
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const answer = await api("POST", `/api/v1/conversations/${c.id}/attachments`, { body: form });
    state.attachment = { filename: file.name, ...answer, uploading: false };
  } catch (error) {
    state.attachment = null;
    const reason =
      error instanceof ApiError && error.status === 413
        ? `the file is too large (${error.message})`
        : error instanceof ApiError && error.status === 415
          ? `this type of file is not allowed (${error.message})`
          : error.message;
    showReplyError(`${file.name} was not attached: ${reason}`);
  }
  renderAttachment();
  $("reply-file").value = "";
}

// --------------------------------------------------------------------------- transfer, end

async function transfer(event) {
  event.preventDefault();
  const c = state.current;
  if (!c) return;
  const queue = $("transfer-queue").value;
  const agent = $("transfer-agent").value.trim();
  if (!queue && !agent) {
    flashStatus("Choose a queue or give an agent's login.");
    $("transfer-queue").focus();
    return;
  }
  const body = agent ? { agent } : { queue };
  try {
    await post(`/api/v1/conversations/${c.id}/transfer`, body);
    $("transfer-agent").value = "";
    await afterLeaving(c.id);
    // after leaving: the chat's actions may be hidden now, and the line with them
    flashStatus(`Transferred to ${agent || `queue ${queue}`}.`);
  } catch (error) {
    flashStatus(`Not transferred: ${problemsText(error)}`);
  }
}

async function endChat(event) {
  event.preventDefault();
  const c = state.current;
  if (!c) return;
  const code = $("wrapup").value.trim();
  try {
    await post(`/api/v1/conversations/${c.id}/end`, code ? { wrapup_code: code } : {});
    $("wrapup").value = "";
    await afterLeaving(c.id);
    flashStatus("The chat is ended.");
  } catch (error) {
    flashStatus(`Not ended: ${problemsText(error)}`);
  }
}

async function afterLeaving(id) {
  state.chats.delete(String(id));
  renderChats();
  await openConversation(id, { keepFocus: true });
  const next = sortedChats()[0];
  const target = next ? document.querySelector(`.chat[data-conversation-id="${next.id}"]`) : $("offers-title");
  if (target) target.focus();
}

// --------------------------------------------------------------------------- live events

function onEvent(event) {
  switch (event.type) {
    case "message.created": {
      const id = String(event.conversation_id);
      const message = event.message;
      if (state.current && String(state.current.id) === id) {
        addMessage(message);
        if (message && message.direction === "inbound") {
          announce(`${customerLabel(state.current) || "The customer"} wrote: ${message.text || message.kind}`);
        }
      } else if (message && message.direction === "inbound" && state.chats.has(id)) {
        state.unread.set(id, (state.unread.get(id) || 0) + 1);
      }
      if (message && message.direction === "inbound") state.typing.delete(id);
      const chat = state.chats.get(id);
      if (chat && message) chat.last_activity_at = message.created_at;
      renderChats();
      if (state.current && String(state.current.id) === id) renderTyping();
      break;
    }
    case "message.status": {
      if (!state.current || String(state.current.id) !== String(event.conversation_id)) break;
      const message = state.messages.get(String(event.message_id));
      if (!message) break;
      message.status = event.status;
      if ("failure_text" in event) message.failure_text = event.failure_text;
      if (event.status === "FAILED") {
        announce(`Your message was not delivered: ${message.failure_text || "no reason given"}`);
      }
      const item = $("transcript").querySelector(`[data-message-id="${CSS.escape(String(event.message_id))}"]`);
      if (item) updateStatus(item, message);
      break;
    }
    case "conversation.updated": {
      const c = event.conversation;
      if (!c) break;
      const id = String(c.id);
      if (isMine(c)) state.chats.set(id, { ...(state.chats.get(id) || {}), ...c });
      else state.chats.delete(id);
      renderChats();
      if (state.current && String(state.current.id) === id) {
        state.current = { ...state.current, ...c };
        renderConversation();
      }
      break;
    }
    case "offer.created":
      if (event.offer) {
        state.offers.set(String(event.offer.id), event.offer);
        renderOffers();
        const who = customerLabel(event.offer) || "a customer";
        announce(`New offer: ${who} in queue ${event.offer.queue}. Alt+A accepts.`);
      }
      break;
    case "offer.closed":
      state.offers.delete(String(event.offer_id));
      renderOffers();
      break;
    case "queue.updated":
      if (event.queue) {
        state.overview.set(event.queue, { ...event });
        renderOverview();
      }
      break;
    case "presence.updated":
      if (event.agent === me.login) {
        state.presence = event.state;
        renderPresence();
      }
      break;
    case "typing":
      markTyping(event.conversation_id, event.until ? Date.parse(event.until) : Date.now() + 15000);
      renderChats();
      renderTyping();
      break;
    default:
      break;
  }
}

// --------------------------------------------------------------------------- clock

function tick() {
  const now = Date.now();
  for (const line of document.querySelectorAll(".offer .countdown")) {
    const expires = Date.parse(line.dataset.expires);
    if (Number.isNaN(expires)) {
      line.textContent = "";
      continue;
    }
    const left = (expires - now) / 1000;
    line.textContent = left > 0 ? `Expires in ${formatSeconds(left)}` : "Expired";
    line.classList.toggle("urgent", left <= 15);
    line.closest(".offer").classList.toggle("expired", left <= 0);
  }
  for (const [id, until] of state.typing) {
    if (until <= now) {
      state.typing.delete(id);
      renderChats();
      renderTyping();
    }
  }
}

let statusTimer = null;
function flashStatus(message) {
  const line = $("actions-status").closest("section").hidden ? $("live-state") : $("actions-status");
  line.textContent = message;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => {
    if (line.id === "live-state") renderLive();
    else line.textContent = "";
  }, 8000);
}

let live = { state: "connecting", delay: 0 };
function renderLive() {
  const line = $("live-state");
  line.classList.toggle("down", live.state === "down");
  line.textContent =
    live.state === "live"
      ? "Live"
      : live.state === "down"
        ? `Live updates off, retrying in ${live.delay} s`
        : "Connecting…";
}

// --------------------------------------------------------------------------- keyboard

function inField(target) {
  return target.closest("input, textarea, select, [contenteditable]");
}

function onKey(event) {
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter" && event.target.closest("#reply")) {
    event.preventDefault();
    sendReply();
    return;
  }
  if (event.altKey && !event.ctrlKey && !event.metaKey) {
    const actions = {
      KeyA: () => oldestOffer() && acceptOffer(oldestOffer().id),
      KeyR: () => oldestOffer() && rejectOffer(oldestOffer().id),
      KeyS: togglePresence,
      KeyM: () => !$("reply").hidden && ($("template-picker").hidden ? $("reply-text") : $("template-select")).focus(),
      KeyT: () => !$("chat-actions").hidden && $("transfer-queue").focus(),
      KeyE: () => !$("chat-actions").hidden && $("wrapup").focus(),
      ArrowDown: () => moveChat(1),
      ArrowUp: () => moveChat(-1),
    };
    const action = actions[event.code] || actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
    return;
  }
  if (event.key === "?" && !inField(event.target)) {
    event.preventDefault();
    $("shortcuts").showModal();
  }
}

// --------------------------------------------------------------------------- start

function start() {
  renderPresence();
  renderOffers();
  renderChats();
  $("presence-toggle").addEventListener("click", togglePresence);
  $("reply").addEventListener("submit", (event) => {
    event.preventDefault();
    sendReply();
  });
  $("reply-file").addEventListener("change", (event) => upload(event.target.files[0]));
  $("template-select").addEventListener("change", fillParameters);
  $("transfer-form").addEventListener("submit", transfer);
  $("end-form").addEventListener("submit", endChat);
  $("shortcuts-open").addEventListener("click", () => $("shortcuts").showModal());
  document.addEventListener("keydown", onKey);
  setInterval(tick, 1000);
  setInterval(() => {
    renderOverview();
    if (state.current) renderWindow();
  }, 15000);
  // keeps the session alive while the desktop is open, and the presence right
  setInterval(() => loadMe().catch(() => {}), 4 * 60 * 1000);

  const wanted = new URLSearchParams(location.search).get("conversation");
  loadAll().then(() => {
    if (wanted && !state.current) openConversation(wanted, { keepFocus: true });
  });
  let firstOpen = true;
  const stream = new LiveStream("/api/v1/stream", {
    onEvent,
    onOpen: () => {
      // the first connection follows the initial load; later ones catch up on what was missed
      if (firstOpen) firstOpen = false;
      else loadAll();
    },
    onDown: () => {
      if (!firstOpen) loadAll().catch(() => {});
      firstOpen = false;
    },
    onStatus: (s, delay) => {
      live = { state: s, delay };
      renderLive();
    },
  });
  stream.start();
  root.dataset.ready = "yes"; // for tests and scripts: the handlers are in place
}

start();
