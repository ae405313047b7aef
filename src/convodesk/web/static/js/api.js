// The JSON API as the pages use it: same-origin, the session cookie, and the CSRF token of
// the page (<meta name="csrf-token">) on every unsafe request.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error && body.error.message ? body.error.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body || {};
  }

  get code() {
    return this.body.error ? this.body.error.code : undefined;
  }

  // [{path, message, severity}] of a 422 answer; [] otherwise
  get problems() {
    return Array.isArray(this.body.errors) ? this.body.errors : [];
  }
}

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}

export async function api(method, path, { json, body, headers = {}, signal } = {}) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", ...headers },
    signal,
  };
  if (UNSAFE.has(method)) init.headers["X-CSRF-Token"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  let data = null;
  const text = response.status === 204 ? "" : await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: { code: "not_json", message: text.slice(0, 200) } };
    }
  }
  if (response.status === 401) {
    toLogin();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, options) => api("GET", path, options);
export const post = (path, json, options = {}) => api("POST", path, { ...options, json });
export const put = (path, json, options = {}) => api("PUT", path, { ...options, json });
export const del = (path, options) => api("DELETE", path, options);

// "?a=1&b=2" from an object, leaving out empty values
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(key, v));
    else search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
