// The System Configurator forms: messaging services, queues, agents, chat settings.
//
// A form is sent to the admin API as the resource in the config-file shape; the API runs
// the configurator over the whole configuration and answers 422 with every problem as
// {path, message}, the path relative to the resource ("addresses[1]") or, for problems the
// change causes elsewhere, the full path ("queues[0].addresses[1]"). Each problem is shown
// next to the field whose data-path is the problem's path or its nearest ancestor, and all
// of them in the summary at the top. A message ending in "use VALUE" offers a button that
// puts VALUE in the field.
//
// Secrets are never in the page: a blank secret field of a stored entry is sent as the
// mask "********", which tells the API to keep the stored secret.

import { api, ApiError } from "./api.js";
import { h, replace, uid } from "./dom.js";

const MASK = "********";
const CORRECTION = /\buse (\S+?)\.?$/;

// --------------------------------------------------------------------------- values

const text = (root, name) => {
  const el = root.querySelector(`[name="${name}"]`);
  return el ? el.value.trim() : "";
};

function integer(value) {
  const v = value.trim();
  if (v === "") return undefined;
  return /^-?\d+$/.test(v) ? Number(v) : v; // anything else goes as is: the API names it
}

const items = (value, separator = /[\n,]+/) =>
  value.split(separator).map((s) => s.trim()).filter(Boolean);

const checked = (root, name) =>
  [...root.querySelectorAll(`input[name="${name}"]:checked`)].map((el) => el.value);

function setOptional(body, key, value) {
  if (value !== undefined && value !== "") body[key] = value;
}

function rows(form, kind) {
  const list = form.querySelector(`fieldset[data-rows="${kind}"] > .row-list`);
  return list ? [...list.children].filter((el) => el.classList.contains("row")) : [];
}

function secret(input, stored) {
  if (input.value !== "") return input.value;
  return stored ? MASK : "";
}

// --------------------------------------------------------------------------- bodies

function serviceBody(form) {
  const body = {
    name: text(form, "name"),
    type: "sinchconversation",
    service_connection: text(form, "service_connection"),
  };
  setOptional(body, "region", form.querySelector('[name="region"]').value);
  const authentication = rows(form, "outbound").map((row) => ({
    auth_id: text(row, "auth_id"),
    password: secret(row.querySelector('[name="password"]'), row.dataset.stored === "yes"),
  }));
  const hook = form.querySelector('[name="webhook_password"]');
  authentication.push({
    auth_id: "webhook",
    password: secret(hook, hook.dataset.stored === "yes"),
    triggers: checked(form, "trigger"),
  });
  body.authentication = authentication;
  const templates = rows(form, "templates").map((row) => {
    const template = {
      app_id: text(row, "app_id"),
      name: text(row, "tpl_name"),
      language: text(row, "language"),
      parameters: items(row.querySelector('[name="parameters"]').value),
    };
    setOptional(template, "text", row.querySelector('[name="text"]').value.trim());
    return template;
  });
  if (templates.length) body.whatsapp_templates = templates;
  return body;
}

function queueBody(form) {
  const body = {
    name: text(form, "name"),
    type: "chat",
    addresses: rows(form, "addresses").map((row) => text(row, "address")),
  };
  setOptional(body, "sms_sender_id", text(form, "sms_sender_id"));
  setOptional(body, "priority", integer(text(form, "priority")));
  setOptional(body, "max_size", integer(text(form, "max_size")));
  setOptional(body, "offer_timeout_seconds", integer(text(form, "offer_timeout_seconds")));
  if (form.querySelector('[name="hours_enabled"]').checked) {
    const weekly = {};
    for (const input of form.querySelectorAll("input[data-day]")) {
      const ranges = items(input.value, /,/);
      if (ranges.length) weekly[input.dataset.day] = ranges;
    }
    const hours = { timezone: text(form, "timezone"), weekly };
    const closed = items(text(form, "closed_dates"), /[\s,]+/);
    if (closed.length) hours.closed_dates = closed;
    body.business_hours = hours;
  }
  return body;
}

function agentBody(form) {
  const body = {
    login: text(form, "login"),
    display_name: text(form, "display_name"),
    role: form.querySelector('[name="role"]').value,
    queues: checked(form, "queue"),
  };
  setOptional(body, "max_chats", integer(text(form, "max_chats")));
  const password = form.querySelector('[name="password"]').value;
  if (password !== "") body.password = password; // blank keeps the current one
  return body;
}

function chatSettingsBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("input[data-int]")) {
    setOptional(body, input.name, integer(input.value));
  }
  body.attachment_types = items(form.querySelector('[name="attachment_types"]').value, /\n+/);
  setOptional(body, "attachment_base_url", text(form, "attachment_base_url"));
  body.whatsapp_opt_in_required = form.querySelector('[name="whatsapp_opt_in_required"]').checked;
  const prompts = {};
  for (const area of form.querySelectorAll("textarea[data-prompt]")) {
    if (area.value.trim()) prompts[area.dataset.prompt] = area.value.trim();
  }
  if (Object.keys(prompts).length) body.prompts = prompts;
  return body;
}

const BODIES = {
  service: serviceBody,
  queue: queueBody,
  agent: agentBody,
  "chat-settings": chatSettingsBody,
};

const NOUNS = {
  service: "messaging service",
  queue: "queue",
  agent: "agent",
  "chat-settings": "chat settings",
};

// --------------------------------------------------------------------------- rows

// Paths of repeated rows follow their position: row i of a list answers to
// "addresses[i]"; the webhook entry comes after the outbound keys in `authentication`.
function renumber(form) {
  for (const list of form.querySelectorAll("fieldset.rows")) {
    rows(form, list.dataset.rows).forEach((row, index) => {
      for (const el of row.querySelectorAll("[data-path-template]")) {
        el.dataset.path = el.dataset.pathTemplate.replaceAll("#", String(index));
      }
      for (const label of row.querySelectorAll("[data-label-template]")) {
        label.textContent = label.dataset.labelTemplate.replaceAll("#", String(index + 1));
      }
    });
  }
  const webhook = form.querySelector("fieldset.webhook");
  if (webhook) {
    const index = String(rows(form, "outbound").length);
    for (const el of [webhook, ...webhook.querySelectorAll("[data-path-template]")]) {
      el.dataset.path = el.dataset.pathTemplate.replaceAll("#", index);
    }
  }
}

function addRow(fieldset) {
  const template = fieldset.querySelector(":scope > template");
  const row = template.content.firstElementChild.cloneNode(true);
  const suffix = uid("r");
  for (const el of row.querySelectorAll("[id]")) el.id = el.id.replace("NEW", suffix);
  for (const el of row.querySelectorAll("label[for]")) {
    el.htmlFor = el.htmlFor.replace("NEW", suffix);
  }
  fieldset.querySelector(":scope > .row-list").appendChild(row);
  renumber(fieldset.form || fieldset.closest("form"));
  const first = row.querySelector("input, textarea, select");
  if (first) first.focus();
}

function removeRow(button) {
  const row = button.closest(".row");
  const fieldset = row.closest("fieldset.rows");
  const sibling = row.previousElementSibling || row.nextElementSibling;
  row.remove();
  renumber(fieldset.closest("form"));
  const target = sibling
    ? sibling.querySelector("input, textarea, select")
    : fieldset.querySelector('[data-action="add-row"]');
  if (target) target.focus();
}

// --------------------------------------------------------------------------- problems

function parentPath(path) {
  const match = path.match(/^(.*?)(?:\.[^.[\]]+|\[\d+\])$/);
  return match ? match[1] : "";
}

// The stored-secret check names a credential by its auth id:
// "authentication.KEY@APPID.password" or "authentication.webhook.password".
function credentialPath(form, path) {
  const match = path.match(/^authentication\.(.+)\.password$/);
  if (!match) return path;
  if (match[1] === "webhook") return `authentication[${rows(form, "outbound").length}].password`;
  const index = rows(form, "outbound").findIndex(
    (row) => text(row, "auth_id").toUpperCase() === match[1].toUpperCase(),
  );
  return index >= 0 ? `authentication[${index}].password` : path;
}

function fieldFor(form, path) {
  let current = credentialPath(form, path);
  while (current) {
    const field = form.querySelector(`[data-path="${CSS.escape(current)}"]`);
    if (field) return field;
    current = parentPath(current);
  }
  return null;
}

function controlsOf(field) {
  return [...field.querySelectorAll("input:not([type=hidden]), select, textarea")];
}

function labelOf(field) {
  const label = field.querySelector(":scope > label, :scope > legend");
  return label ? label.textContent.trim() : "";
}

function clearProblems(form) {
  const summary = form.querySelector(".error-summary");
  summary.hidden = true;
  replace(summary.querySelector("ul"));
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    replace(el);
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".has-error")) el.classList.remove("has-error");
}

function describe(control, errorId) {
  const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
  if (!ids.includes(errorId)) control.setAttribute("aria-describedby", [...ids, errorId].join(" "));
}

function correctionButton(field, value) {
  const control = controlsOf(field).find((el) => el.tagName !== "SELECT" && el.type !== "checkbox");
  if (!control) return null;
  return h(
    "button",
    {
      type: "button",
      class: "use-correction",
      onclick: () => {
        control.value = value;
        control.removeAttribute("aria-invalid");
        field.classList.remove("has-error");
        const error = field.querySelector(":scope > .field-error");
        if (error) error.hidden = true;
        control.focus();
      },
    },
    `Use ${value}`,
  );
}

function showProblems(form, problems, message) {
  const summary = form.querySelector(".error-summary");
  const list = summary.querySelector("ul");
  let firstControl = null;
  for (const problem of problems) {
    const field = fieldFor(form, problem.path || "");
    const warning = problem.severity === "warning";
    const words = `${warning ? "Warning: " : ""}${problem.message}`;
    let target = null;
    if (field) {
      field.classList.add("has-error");
      const error = field.querySelector(":scope > .field-error");
      const correction = problem.message.match(CORRECTION);
      if (error) {
        error.hidden = false;
        error.appendChild(h("span", { class: "problem" }, words));
        if (correction && !warning) {
          const button = correctionButton(field, correction[1]);
          if (button) error.appendChild(button);
        }
        const controls = controlsOf(field);
        for (const control of controls) {
          if (!warning) control.setAttribute("aria-invalid", "true");
          describe(control, error.id || (error.id = uid("err")));
        }
        target = controls[0] || null;
        if (!firstControl && target) firstControl = target;
      }
    }
    const where = field ? labelOf(field) : "";
    const name = where || problem.path || "The configuration";
    const link = target ? h("a", { href: `#${target.id}` }, name) : h("strong", {}, name);
    const path = where && problem.path ? [" (", h("code", {}, problem.path), ")"] : null;
    list.appendChild(h("li", {}, link, path, ": ", words));
  }
  if (!problems.length) list.appendChild(h("li", {}, message));
  summary.querySelector(".error-summary-title").textContent = problems.length
    ? `The change was not saved: ${problems.length} problem${problems.length > 1 ? "s" : ""}`
    : "The change was not saved";
  summary.hidden = false;
  summary.focus();
  return firstControl;
}

function explain(error) {
  if (!(error instanceof ApiError)) return `The server could not be reached (${error.message}).`;
  if (error.status === 403) {
    return `${error.message}. If the page was open for long, reload it and try again.`;
  }
  return error.message;
}

// --------------------------------------------------------------------------- wiring

function setBusy(form, busy, status = "") {
  for (const button of form.querySelectorAll(".form-actions button")) button.disabled = busy;
  const line = form.querySelector(".form-status");
  if (line) line.textContent = status;
}

async function submit(form) {
  clearProblems(form);
  renumber(form);
  const kind = form.dataset.kind;
  const body = BODIES[kind](form);
  setBusy(form, true, "Saving…");
  try {
    await api(form.dataset.method, form.dataset.action, { json: body });
  } catch (error) {
    setBusy(form, false);
    showProblems(form, error instanceof ApiError ? error.problems : [], explain(error));
    return;
  }
  const key = kind === "chat-settings" ? "1" : body.name || body.login;
  location.assign(`${form.dataset.list}?saved=${encodeURIComponent(key)}`);
}

async function remove(form) {
  const noun = NOUNS[form.dataset.kind];
  const key = form.dataset.key;
  if (!window.confirm(`Delete the ${noun} ${key}? This cannot be undone.`)) return;
  clearProblems(form);
  setBusy(form, true, "Deleting…");
  try {
    await api("DELETE", form.dataset.action);
  } catch (error) {
    setBusy(form, false);
    showProblems(form, error instanceof ApiError ? error.problems : [], explain(error));
    return;
  }
  location.assign(`${form.dataset.list}?deleted=${encodeURIComponent(key)}`);
}

function wire(form) {
  renumber(form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form);
  });
  form.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "add-row") addRow(button.closest("fieldset.rows"));
    else if (action === "remove-row") removeRow(button);
    else if (action === "delete") remove(form);
  });
  const hours = form.querySelector('[name="hours_enabled"]');
  if (hours) {
    const section = form.querySelector(".hours-fields");
    const sync = () => {
      section.hidden = !hours.checked;
    };
    hours.addEventListener("change", sync);
    sync();
  }
}

for (const form of document.querySelectorAll("form.config-form")) wire(form);
