// The playground's browser client: an OIDC-native Matrix client running in the page (MSC3861):
// discovery through the homeserver (MSC2965), dynamic registration (MSC2966), authorization
// code with PKCE S256 (MSC2964, WebCrypto), Matrix scopes (MSC2967), whoami, refresh, revoke,
// and RP-initiated logout. Each step shows the request it sent and the response it got. State
// lives in this tab's session storage, so it survives the trip to the provider's pages.
"use strict";

(() => {
  const root = document.getElementById("client");
  if (!root) return;
  const config = root.dataset;
  const $ = (id) => document.getElementById(id);
  const KEY = "playground.client";

  let state;
  try {
    state = JSON.parse(sessionStorage.getItem(KEY)) || {};
  } catch {
    state = {};
  }
  state.steps = state.steps || [];
  const save = () => sessionStorage.setItem(KEY, JSON.stringify(state));

  // ---- showing things ----

  function el(tag, attrs = {}, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function column(title, text) {
    const div = el("div");
    div.append(el("h4", {}, title), el("pre", {}, text));
    return div;
  }

  function stepElement(step) {
    const kind = step.ok === null ? "note" : step.ok ? "ok" : "failed";
    const section = el("section", { class: "step " + kind });
    const exchange = el("div", { class: "exchange" });
    exchange.append(column("Request", step.request), column("Response", step.response));
    section.append(el("h3", {}, step.title), exchange);
    return section;
  }

  // Scrolling to the newest step is instant for those who ask for less motion.
  const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");

  function record(title, request, response, ok) {
    state.steps.push({ title, request, response, ok });
    save();
    render();
    $("steps").lastElementChild?.scrollIntoView({
      behavior: reducedMotion.matches ? "auto" : "smooth",
      block: "nearest",
    });
  }

  const short = (token) => (token ? token.slice(0, 12) + "…" : "—");

  function render() {
    $("steps").replaceChildren(...state.steps.map(stepElement));
    const m = state.metadata;
    const c = state.client;
    const t = state.tokens;
    const facts = [
      ["Homeserver", state.homeserver],
      ["Issuer", m?.issuer],
      ["client_id", c?.client_id],
      ["redirect_uri", c?.redirect_uri],
      ["Device ID", state.pending?.device_id],
      ["Access token", t && short(t.access_token) + (state.revoked ? " (revoked)" : "")],
      ["Refresh token", t && short(t.refresh_token)],
      ["Granted scope", t?.scope],
    ];
    $("state").replaceChildren(
      ...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value || "—")]),
    );
    const enabled = {
      register: Boolean(m?.registration_endpoint),
      "use-demo": Boolean(m),
      authorize: Boolean(m && c),
      token: Boolean(state.code),
      whoami: Boolean(t),
      refresh: Boolean(t?.refresh_token),
      revoke: Boolean(t && m?.revocation_endpoint),
      logout: Boolean(m?.end_session_endpoint && c),
    };
    for (const [id, on] of Object.entries(enabled)) $(id).disabled = !on;
  }

  // ---- HTTP, shown ----

  function describe(method, url, headers = {}, body) {
    let text = `${method} ${url}\n`;
    for (const [k, v] of Object.entries(headers)) text += `${k}: ${v}\n`;
    if (body instanceof URLSearchParams) {
      text += "\n" + [...body].map(([k, v]) => `${k}=${v}`).join("\n");
    } else if (body !== undefined) {
      text += "\n" + body;
    }
    return text;
  }

  async function call(title, method, url, { headers = {}, body } = {}) {
    const request = describe(method, url, headers, body);
    let response;
    try {
      response = await fetch(url, { method, headers, body, credentials: "omit", cache: "no-store" });
    } catch (e) {
      record(
        title,
        request,
        `(no answer: ${e.message})\n\nIn a browser this is often CORS (the server did not allow ` +
          "this page's origin) or a certificate the browser does not trust.",
        false,
      );
      return null;
    }
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    const headerLines = ["content-type", "cache-control"]
      .filter((h) => response.headers.get(h))
      .map((h) => `${h}: ${response.headers.get(h)}\n`)
      .join("");
    const shown = json === null ? text : JSON.stringify(json, null, 2);
    record(
      title,
      request,
      `HTTP ${response.status} ${response.statusText}\n${headerLines}\n${shown}`,
      response.ok,
    );
    return { status: response.status, ok: response.ok, json };
  }

  const form = { "Content-Type": "application/x-www-form-urlencoded" };

  // ---- helpers ----

  const b64url = (bytes) =>
    btoa(String.fromCharCode(...new Uint8Array(bytes)))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
  const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
  const s256 = async (text) =>
    b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));

  function deviceId() {
    const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    return Array.from(crypto.getRandomValues(new Uint8Array(10)), (x) => letters[x % 26]).join("");
  }

  function claims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return null;
    }
  }

  // What this page registers as: on https, a web client on this origin; on plain http (which
  // MSC2966 allows only for native clients, on loopback), a native client with port-less
  // loopback redirect URIs, any port accepted at sign-in (RFC 8252 §7.3).
  function registration() {
    const origin = location.origin;
    const back = { redirect_uri: origin + "/callback", post_logout_redirect_uri: origin + "/client" };
    if (location.protocol === "https:") {
      return {
        ...back,
        metadata: {
          application_type: "web",
          client_uri: origin + "/",
          redirect_uris: [back.redirect_uri],
          post_logout_redirect_uris: [back.post_logout_redirect_uri],
        },
      };
    }
    const host = location.hostname;
    return {
      ...back,
      metadata: {
        application_type: "native",
        client_uri: "https://" + (host === "[::1]" ? "localhost" : host) + "/",
        redirect_uris: [`http://${host}/callback`],
        post_logout_redirect_uris: [`http://${host}/client`],
      },
    };
  }

  function keepTokens(json) {
    state.tokens = {
      access_token: json.access_token,
      refresh_token: json.refresh_token,
      id_token: json.id_token || state.tokens?.id_token,
      scope: json.scope,
    };
    state.revoked = false;
  }

  // ---- the steps ----

  async function discover() {
    let homeserver = $("homeserver").value.trim();
    if (!homeserver.endsWith("/")) homeserver += "/";
    state = { steps: state.steps, homeserver };
    save();
    render();
    await call(
      "Spec versions (OAuth-aware clients look for v1.15)",
      "GET",
      homeserver + "_matrix/client/versions",
    );
    const answer = await call(
      "The provider's metadata, through the homeserver (MSC2965)",
      "GET",
      homeserver + "_matrix/client/v1/auth_metadata",
    );
    if (answer?.ok && answer.json?.issuer) {
      state.metadata = answer.json;
      save();
      render();
    }
  }

  async function register() {
    const reg = registration();
    const body = JSON.stringify(
      {
        client_name: "Playground browser client",
        ...reg.metadata,
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
      },
      null,
      2,
    );
    const answer = await call(
      "Dynamic client registration (RFC 7591, MSC2966)",
      "POST",
      state.metadata.registration_endpoint,
      { headers: { "Content-Type": "application/json" }, body },
    );
    if (answer?.ok && answer.json?.client_id) {
      state.client = {
        client_id: answer.json.client_id,
        redirect_uri: reg.redirect_uri,
        post_logout_redirect_uri: reg.post_logout_redirect_uri,
      };
      save();
      render();
    }
  }

  function useDemo() {
    state.client = {
      client_id: config.demoClient,
      redirect_uri: config.demoRedirect,
      post_logout_redirect_uri: config.demoPostLogout,
    };
    let note = `client_id=${config.demoClient}\nredirect_uri=${config.demoRedirect}`;
    const home = new URL(config.demoRedirect).origin;
    if (home !== location.origin) {
      note +=
        `\n\nThis page is open at ${location.origin}, but the demo client comes back to ${home}: ` +
        `open the dashboard there, or register dynamically.`;
    }
    record("Using the demo client (from the provider's configuration)", "(no request)", note, null);
  }

  async function authorize() {
    if (!crypto.subtle) {
      throw new Error(
        "WebCrypto (for the PKCE challenge) needs a secure context: open the dashboard at " +
          "http://127.0.0.1 or http://localhost, or run the playground with --tls",
      );
    }
    const verifier = random(32);
    const pending = { verifier, state: random(16), nonce: random(16), device_id: deviceId() };
    const scope = [$("scope").value.trim(), "urn:matrix:client:device:" + pending.device_id]
      .filter(Boolean)
      .join(" ");
    const params = new URLSearchParams({
      response_type: "code",
      response_mode: "query",
      client_id: state.client.client_id,
      redirect_uri: state.client.redirect_uri,
      scope,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: await s256(verifier),
      code_challenge_method: "S256",
    });
    if ($("prompt").value) params.set("prompt", $("prompt").value);
    const url = state.metadata.authorization_endpoint + "?" + params;
    state.pending = pending;
    record(
      "Authorization request: the browser goes to the provider",
      `GET ${url}\n\n` + [...params].map(([k, v]) => `${k}=${v}`).join("\n") +
        `\n\n(PKCE code_verifier, kept in this tab: ${verifier})`,
      `(the provider's pages: sign in, consent; then back to ${state.client.redirect_uri})`,
      null,
    );
    location.assign(url);
  }

  function cameBack() {
    const params = new URLSearchParams(location.search);
    if (location.pathname === "/callback" && (params.has("code") || params.has("error"))) {
      const shown = [...params].map(([k, v]) => `${k}=${v}`).join("\n");
      const problems = [];
      if (!state.pending || params.get("state") !== state.pending.state) {
        problems.push("The state is not the one this tab sent: the answer is ignored.");
      }
      if (params.has("iss") && state.metadata && params.get("iss") !== state.metadata.issuer) {
        problems.push("The iss parameter is not the issuer (RFC 9207): the answer is ignored.");
      }
      const ok = params.has("code") && problems.length === 0;
      record(
        "Authorization response: the browser came back",
        `GET ${location.origin}${location.pathname}?…`,
        shown + (problems.length ? "\n\n" + problems.join("\n") : ""),
        ok,
      );
      if (ok) state.code = params.get("code");
      save();
      history.replaceState(null, "", "/client");
    } else if (params.has("state") && state.logout && params.get("state") === state.logout) {
      record(
        "Back from the provider's logout",
        `GET ${location.href}`,
        "The provider ended the browser session and the sessions started from it: whoami now " +
          "fails with this access token.",
        true,
      );
      delete state.logout;
      save();
      history.replaceState(null, "", "/client");
    }
  }

  async function token() {
    const body = new URLSearchParams({
      grant_type: "authorization_code",
      code: state.code,
      redirect_uri: state.client.redirect_uri,
      client_id: state.client.client_id,
      code_verifier: state.pending.verifier,
    });
    delete state.code;
    const answer = await call(
      "Token request: the code and the PKCE verifier",
      "POST",
      state.metadata.token_endpoint,
      { headers: form, body },
    );
    if (answer?.ok && answer.json?.access_token) {
      keepTokens(answer.json);
      const idClaims = answer.json.id_token && claims(answer.json.id_token);
      if (idClaims) {
        record(
          "The ID token's claims (decoded here, not verified)",
          "(no request)",
          JSON.stringify(idClaims, null, 2),
          null,
        );
      }
    }
    save();
    render();
  }

  async function whoami() {
    await call(
      "whoami on the homeserver (it introspects the token at the provider)",
      "GET",
      state.homeserver + "_matrix/client/v3/account/whoami",
      { headers: { Authorization: "Bearer " + state.tokens.access_token } },
    );
  }

  async function refresh() {
    const body = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: state.tokens.refresh_token,
      client_id: state.client.client_id,
    });
    const answer = await call(
      "Refresh: a new pair, the old refresh token is used up",
      "POST",
      state.metadata.token_endpoint,
      { headers: form, body },
    );
    if (answer?.ok && answer.json?.access_token) keepTokens(answer.json);
    save();
    render();
  }

  async function revoke() {
    const t = state.tokens;
    const body = new URLSearchParams({
      token: t.refresh_token || t.access_token,
      token_type_hint: t.refresh_token ? "refresh_token" : "access_token",
      client_id: state.client.client_id,
    });
    const answer = await call(
      "Revocation (RFC 7009): ends the session and deletes its device",
      "POST",
      state.metadata.revocation_endpoint,
      { headers: form, body },
    );
    if (answer?.ok) state.revoked = true;
    save();
    render();
  }

  function logout() {
    const params = new URLSearchParams({
      client_id: state.client.client_id,
      post_logout_redirect_uri: state.client.post_logout_redirect_uri,
      state: random(12),
    });
    if (state.tokens?.id_token) params.set("id_token_hint", state.tokens.id_token);
    state.logout = params.get("state");
    const url = state.metadata.end_session_endpoint + "?" + params;
    record(
      "RP-initiated logout: the browser goes to the provider",
      `GET ${url}`,
      `(the provider asks to confirm, then comes back to ${state.client.post_logout_redirect_uri})`,
      null,
    );
    location.assign(url);
  }

  function reset() {
    state = { steps: [] };
    save();
    render();
  }

  // ---- wiring ----

  const actions = {
    discover,
    register,
    "use-demo": useDemo,
    authorize,
    token,
    whoami,
    refresh,
    revoke,
    logout,
    reset,
  };
  for (const [id, action] of Object.entries(actions)) {
    $(id).addEventListener("click", async () => {
      try {
        await action();
      } catch (e) {
        record(`${id} failed in the page`, "(no request)", String(e), false);
      }
    });
  }
  $("homeserver").value = state.homeserver || config.homeserver;
  cameBack();
  render();
})();
