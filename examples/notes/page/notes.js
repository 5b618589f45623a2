// The notes page: plain DOM calls on the notes API and Bastion's account routes.
//
// The session lives in Bastion's __Host- cookie (HttpOnly: this script never sees it). When the
// browser refuses that cookie (no secure context, cookies blocked), log-in asks for the session
// token instead (X-Bastion-Fallback), keeps it in localStorage and sends it in the
// X-Bastion-Session header, as Appwrite's web SDK does. The footer says which mode is in use.
"use strict";

const TOKEN_KEY = "bastion-notes-session";
const HEADER = "X-Bastion-Session";

// Bastion's error types as a person would put them; anything else shows the server's message.
const MESSAGES = {
  password_in_dictionary: "This password is too common: choose a less guessable one.",
  password_personal_data: "This password contains your name, email or phone number.",
  password_recently_used: "You used this password recently: choose a new one.",
  password_too_short: "This password is too short: use at least 8 characters.",
  password_too_long: "This password is too long.",
  user_already_exists: "An account with this email already exists: log in instead.",
  user_invalid_credentials: "The email or the password is wrong.",
  user_blocked: "This account is disabled.",
  user_session_invalid: "Your session has ended (logged out elsewhere, or replaced by newer log-ins). Log in again.",
  general_rate_limit_exceeded: "Too many attempts: wait a while, then try again.",
  general_access_forbidden: "You are not allowed to do that.",
  general_not_found: "This note does not exist, or you are not allowed to see it.",
  general_cross_site_request: "Refused: the request came from another site.",
  user_reauthentication_required: "Confirm your password first.",
  service_unavailable: "The service is unavailable right now; try again in a moment.",
};

const $ = (id) => document.getElementById(id);
let me = null;
let pendingReauth = null;

function storedToken() {
  try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
}
function storeToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
  } catch { /* no storage: the token lives until the page closes */ }
  memoryToken = token;
}
let memoryToken = storedToken();

class ApiError extends Error {
  constructor(status, body) {
    super((body && (MESSAGES[body.type] || body.message)) || `Error ${status}`);
    this.status = status;
    this.type = body && body.type;
  }
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  if (memoryToken) headers[HEADER] = memoryToken;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && me && ["user_session_invalid", "user_unauthorized"].includes(error.type) && !path.includes("/share")) {
      signedOut(error.message);  // the session ended: evicted, revoked or expired
    }
    throw error;
  }
  return { data, response };
}

function say(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

function showMode() {
  $("mode").textContent = memoryToken
    ? "Session mode: header. This browser refused the session cookie, so the token is kept in localStorage and sent in the X-Bastion-Session header."
    : "Session mode: cookie. The session is kept in a secure, HttpOnly __Host- cookie this page cannot read.";
  $("mode").dataset.mode = memoryToken ? "header" : "cookie";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

// -- signing in and out --------------------------------------------------------------------

function cookiesLikelyRefused() {
  // A __Host- cookie needs a secure context (https, or localhost) and cookies allowed.
  return !window.isSecureContext || !navigator.cookieEnabled;
}

async function logIn(email, password) {
  storeToken(null);
  if (!cookiesLikelyRefused()) {
    await api("POST", "/account/sessions", { email, password });
    try {
      await api("GET", "/account");
      return;
    } catch (error) {
      if (error.status !== 401) throw error;
      // The browser dropped the cookie after all: log in again for a token.
    }
  }
  const { response } = await api("POST", "/account/sessions", { email, password }, { "X-Bastion-Fallback": "true" });
  storeToken(response.headers.get(HEADER));
}

async function loadAccount() {
  try {
    me = (await api("GET", "/account")).data;
  } catch (error) {
    if (error.status === 401) {
      storeToken(null);
      return signedOut(error.type === "user_session_invalid" ? error.message : "");
    }
    throw error;
  }
  await Promise.all([loadNotes(), loadSessions()]);
  $("who").textContent = `Signed in as ${me.email} · your id: ${me.id}`;
  $("who").dataset.userId = me.id;
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  showMode();
}

function signedOut(text) {
  me = null;
  storeToken(null);
  $("who").textContent = "Not signed in.";
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  $("jwt-claims").hidden = true;
  showMode();
  say(text || "");
}

// -- notes ------------------------------------------------------------------------------------

async function loadNotes() {
  const { data } = await api("GET", "/notes");
  const list = $("notes");
  list.replaceChildren(...data.notes.map(noteItem));
  $("no-notes").hidden = data.notes.length > 0;
}

function noteItem(note) {
  const mine = me && note.owner === me.id;
  const item = el("li", { className: "note" });
  item.dataset.id = note.id;
  const owner = el("span", { className: "muted", textContent: mine ? "yours" : `shared by ${note.owner}` });
  const edit = el("button", { type: "button", textContent: "Edit" });
  const share = el("button", { type: "button", textContent: "Share" });
  const remove = el("button", { type: "button", className: "danger", textContent: "Delete" });
  item.append(
    el("h3", { textContent: note.title }),
    ...(note.body ? [el("p", { textContent: note.body })] : []),
    owner,
    el("div", { className: "row" }, edit, share, remove),
  );
  edit.onclick = () => editForm(item, note);
  share.onclick = () => shareForm(item, note);
  remove.onclick = () => act(async () => {
    await api("DELETE", `/notes/${note.id}`);
    await loadNotes();
    say("Note deleted.", true);
  });
  return item;
}

function editForm(item, note) {
  const form = el("form", { className: "edit" },
    el("label", {}, "Title", el("input", { name: "title", value: note.title, required: true, maxLength: 200 })),
    el("label", {}, "Note", el("textarea", { name: "body", value: note.body, rows: 3, maxLength: 10000 })),
    el("div", { className: "row" }, el("button", { type: "submit", textContent: "Save" }),
      el("button", { type: "button", textContent: "Cancel", onclick: () => loadNotes() })));
  form.onsubmit = (event) => act(async () => {
    event.preventDefault();
    const fields = new FormData(form);
    await api("PATCH", `/notes/${note.id}`, { title: fields.get("title"), body: fields.get("body") });
    await loadNotes();
    say("Note saved.", true);
  });
  item.replaceChildren(form);
}

function shareForm(item, note) {
  const checks = ["read", "update", "delete"].map((action) =>
    el("label", {}, el("input", { type: "checkbox", name: "actions", value: action, checked: action === "read" }), action));
  const form = el("form", { className: "share" },
    el("label", {}, "Share with (user:ID of a person, or a role you hold such as users)",
      el("input", { name: "role", placeholder: "user:…", required: true })),
    el("div", { className: "checks" }, ...checks),
    el("div", { className: "row" }, el("button", { type: "submit", textContent: "Share" }),
      el("button", { type: "button", textContent: "Cancel", onclick: () => loadNotes() })));
  form.onsubmit = (event) => act(async () => {
    event.preventDefault();
    const fields = new FormData(form);
    const actions = fields.getAll("actions");
    await api("POST", `/notes/${note.id}/share`, { role: fields.get("role").trim(), actions });
    await loadNotes();
    say(`Shared “${note.title}” with ${fields.get("role").trim()} (${actions.join(", ")}).`, true);
  });
  item.append(form);
}

// -- sessions ---------------------------------------------------------------------------------

function when(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

async function loadSessions() {
  const { data } = await api("GET", "/account/sessions");
  const list = $("sessions");
  list.replaceChildren(...data.sessions.map((session) => {
    const item = el("li", { className: session.current ? "session current" : "session" });
    const title = el("h3", { textContent: session.userAgent || "Unknown browser" });
    if (session.current) title.append(el("span", { className: "tag", textContent: "this browser" }));
    item.append(title, el("span", {
      className: "muted",
      textContent: `${session.ip} · started ${when(session.created)} · last seen ${when(session.lastSeen)}`,
    }));
    if (!session.current) {
      item.append(el("div", { className: "row" }, el("button", {
        type: "button", textContent: "End this session",
        onclick: () => endSessions([session.id]),
      })));
    }
    return item;
  }));
  list.dataset.count = String(data.sessions.length);
}

async function endSessions(ids, password) {
  await act(async () => {
    try {
      for (const id of ids) {
        await api("DELETE", `/account/sessions/${id}`, password ? { password } : undefined);
      }
    } catch (error) {
      if (error.type === "user_reauthentication_required" || (password && error.type === "user_invalid_credentials")) {
        pendingReauth = ids;
        $("reauth-form").hidden = false;
      }
      throw error;
    }
    pendingReauth = null;
    $("reauth-form").hidden = true;
    await loadSessions();
    say(ids.length === 1 ? "Session ended." : `${ids.length} sessions ended.`, true);
  });
}

// -- JWT --------------------------------------------------------------------------------------

function claimsOf(jwt) {
  const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - payload.length % 4) % 4), "=")));
  for (const name of ["iat", "nbf", "exp"]) {
    if (name in claims) claims[name] = `${claims[name]} (${new Date(claims[name] * 1000).toISOString()})`;
  }
  return claims;
}

// -- wiring -----------------------------------------------------------------------------------

async function act(work) {
  try {
    say("");
    await work();
  } catch (error) {
    say(error instanceof ApiError ? error.message : "Something went wrong: " + error.message);
  }
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").onsubmit = (event) => act(async () => {
    event.preventDefault();
    const { email, password } = formData(event.target);
    await logIn(email, password);
    event.target.reset();
    await loadAccount();
  });
  $("signup-form").onsubmit = (event) => act(async () => {
    event.preventDefault();
    const fields = formData(event.target);
    const body = { email: fields.email, password: fields.password };
    if (fields.name) body.name = fields.name;
    await api("POST", "/account", body);
    await logIn(fields.email, fields.password);
    event.target.reset();
    await loadAccount();
    say("Welcome! Your account is ready.", true);
  });
  $("note-form").onsubmit = (event) => act(async () => {
    event.preventDefault();
    const { title, body } = formData(event.target);
    await api("POST", "/notes", { title, body });
    event.target.reset();
    await loadNotes();
  });
  $("logout").onclick = () => act(async () => {
    try {
      await api("DELETE", "/account/sessions/current");
    } finally {
      signedOut("You are logged out.");
      $("message").className = "ok";
    }
  });
  $("end-others").onclick = async () => {
    const { data } = await api("GET", "/account/sessions");
    const others = data.sessions.filter((s) => !s.current).map((s) => s.id);
    if (others.length) await endSessions(others); else say("There are no other sessions.", true);
  };
  $("reauth-form").onsubmit = (event) => {
    event.preventDefault();
    const { password } = formData(event.target);
    event.target.reset();
    if (pendingReauth) endSessions(pendingReauth, password);
  };
  $("jwt").onclick = () => act(async () => {
    const { data } = await api("POST", "/account/jwts");
    const box = $("jwt-claims");
    box.textContent = "Claims of your new JWT:\n" + JSON.stringify(claimsOf(data.jwt), null, 2);
    box.hidden = false;
  });
  act(loadAccount);
});
