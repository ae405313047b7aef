// One message of a transcript, as a list item: who, when, what (text, media, location,
// template...), and for our own messages the delivery ticks, with a failure's reason in
// plain words.

import { formatTime, h, replace } from "./dom.js";

const STATUS = {
  pending: { ticks: "…", words: "Waiting to be sent" },
  sending: { ticks: "…", words: "Sending" },
  accepted: { ticks: "✓", words: "Sent" },
  QUEUED_ON_CHANNEL: { ticks: "✓", words: "Sent to the channel" },
  DELIVERED: { ticks: "✓✓", words: "Delivered" },
  READ: { ticks: "✓✓", words: "Read" },
  FAILED: { ticks: "!", words: "Not delivered" },
};

// The order of domain/delivery.py. A message's snapshot (the reply's own answer, its
// message.created event) can reach the page after the stream's receipts for it: the later
// status wins then. Status events themselves are applied as they come, since the server
// sends them in order (and an operator's retry does move a failed message back to pending).
const ORDER = ["pending", "sending", "accepted", "QUEUED_ON_CHANNEL", "FAILED", "DELIVERED", "READ"];

export function newerSnapshot(known, incoming) {
  if (!known || ORDER.indexOf(known.status) <= ORDER.indexOf(incoming.status)) return incoming;
  return { ...incoming, status: known.status, failure_text: known.failure_text };
}

export function customerLabel(item) {
  if (!item) return "";
  const customer = item.customer;
  if (typeof customer === "string" && customer) return customer;
  if (customer && typeof customer === "object") {
    return customer.name || customer.display_name || customer.identity || "";
  }
  return item.customer_name || item.identity || "";
}

function humanSize(bytes) {
  if (typeof bytes !== "number") return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function attachmentNode(attachment) {
  const name = attachment.filename || "attachment";
  if (attachment.state === "pending" || (!attachment.url && attachment.state !== "failed")) {
    return h("p", { class: "attachment pending" }, `Fetching ${name}…`);
  }
  if (attachment.state === "failed" || !attachment.url) {
    return h("p", { class: "attachment failed" }, `${name} could not be stored.`);
  }
  const type = attachment.content_type || "";
  if (type.startsWith("image/")) {
    return h(
      "a",
      { class: "attachment image", href: attachment.url, target: "_blank", rel: "noopener" },
      h("img", { src: attachment.url, alt: attachment.filename || "Image", loading: "lazy" }),
    );
  }
  if (type.startsWith("video/")) {
    return h("video", { class: "attachment video", src: attachment.url, controls: true, preload: "metadata", "aria-label": name });
  }
  if (type.startsWith("audio/")) {
    return h("audio", { class: "attachment audio", src: attachment.url, controls: true, preload: "metadata", "aria-label": name });
  }
  const size = humanSize(attachment.size);
  return h(
    "a",
    { class: "attachment file", href: attachment.url, download: attachment.filename || "" },
    `Download ${name}`,
    size ? ` (${size})` : "",
  );
}

function locationNode(content, fallback) {
  const location = content && content.location_message;
  const coordinates = location && location.coordinates;
  if (!coordinates || typeof coordinates.latitude !== "number") return h("p", { class: "text" }, fallback);
  const { latitude, longitude } = coordinates;
  const place = [location.title, location.label].filter(Boolean).join(": ");
  const href = `https://www.openstreetmap.org/?mlat=${latitude}&mlon=${longitude}#map=16/${latitude}/${longitude}`;
  return h(
    "p",
    { class: "location" },
    h("span", { class: "kind-label" }, "Location: "),
    h("a", { href, target: "_blank", rel: "noopener noreferrer" }, place || "Location"),
    ` (${latitude.toFixed(5)}, ${longitude.toFixed(5)})`,
  );
}

function templateNode(content, fallback) {
  const template = content && content.template;
  if (!template) return h("p", { class: "text" }, fallback);
  const parameters = Object.entries(template.parameters || {});
  return h(
    "div",
    { class: "template" },
    h("p", { class: "template-name" }, `Template ${template.name} (${template.language})`),
    parameters.length
      ? h("dl", { class: "template-values" }, parameters.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
      : null,
  );
}

function bodyNodes(message) {
  const nodes = [];
  const kind = message.kind;
  const text = message.text || "";
  if (kind === "location") nodes.push(locationNode(message.content, text));
  else if (kind === "template") nodes.push(templateNode(message.content, text));
  else if (kind === "text" || !message.attachments || !message.attachments.length) {
    if (text) nodes.push(h("p", { class: "text" }, text));
  } else {
    const media = message.content && (message.content.media_message || message.content.media_card_message);
    const caption = media && media.caption;
    if (caption) nodes.push(h("p", { class: "text" }, caption));
  }
  for (const attachment of message.attachments || []) nodes.push(attachmentNode(attachment));
  if (!nodes.length) nodes.push(h("p", { class: "text muted" }, `[${kind}]`));
  return nodes;
}

export function statusNode(status) {
  const known = STATUS[status] || { ticks: "", words: status };
  return h(
    "span",
    { class: `ticks status-${status}`, title: known.words },
    h("span", { "aria-hidden": "true" }, known.ticks),
    h("span", { class: "visually-hidden" }, known.words),
  );
}

export function failureNode(message) {
  if (message.status !== "FAILED") return null;
  const words = message.failure_text || message.reason_text || "The message was not delivered.";
  return h("p", { class: "failure" }, words);
}

export function renderMessage(message, customer) {
  const outbound = message.direction === "outbound";
  const author = outbound ? message.author_name || message.author || "Agent" : customer || "Customer";
  return h(
    "li",
    { class: `message ${outbound ? "outbound" : "inbound"}`, dataset: { messageId: String(message.id) } },
    h(
      "div",
      { class: "bubble" },
      h(
        "p",
        { class: "meta" },
        h("span", { class: "author" }, author),
        " ",
        h("time", { datetime: message.created_at, title: message.created_at }, formatTime(message.created_at)),
        outbound ? [" ", statusNode(message.status)] : null,
      ),
      bodyNodes(message),
      outbound ? failureNode(message) : null,
    ),
  );
}

// apply a status change to a rendered outbound message
export function updateStatus(item, message) {
  const ticks = item.querySelector(".ticks");
  if (ticks) ticks.replaceWith(statusNode(message.status));
  const failure = item.querySelector(".failure");
  if (failure) failure.remove();
  const node = failureNode(message);
  if (node) item.querySelector(".bubble").appendChild(node);
}

export { replace };
