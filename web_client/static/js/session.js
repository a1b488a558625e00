// Sign-in, token refresh and sign-out.
// The access token lives in this module's memory only; the refresh token (rotated on every
// use) in sessionStorage, so a reload of the tab resumes and closing the tab forgets it.

const REFRESH_KEY = "teleconsult.refresh";
const TOKEN_URL = "api/auth/token";

let accessToken = null;
let refreshTimer = null;
let refreshing = null;
const endListeners = new Set();

export class AuthError extends Error {}

export function hasAccessToken() {
  return accessToken !== null;
}

export function currentAccessToken() {
  return accessToken;
}

/** Called with "expired" or "logout" when the session ends. */
export function onSessionEnd(listener) {
  endListeners.add(listener);
}

async function grant(fields) {
  const response = await fetch(TOKEN_URL, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields),
    credentials: "omit",
    cache: "no-store",
  });
  if (response.status === 401) throw new AuthError("unauthenticated");
  if (!response.ok) throw new Error(`sign-in failed (${response.status})`);
  const body = await response.json();
  accessToken = body.access_token;
  sessionStorage.setItem(REFRESH_KEY, body.refresh_token);
  clearTimeout(refreshTimer);
  // Refresh a minute before expiry (at least after 10 s), so requests rarely meet a 401.
  const seconds = Math.max(10, Number(body.expires_in) - 60);
  refreshTimer = setTimeout(() => refresh().catch(() => end("expired")), seconds * 1000);
}

export async function login(username, password) {
  await grant({ grant_type: "password", username, password });
}

/** Resume after a reload with the refresh token of this tab; false if there is none or it is spent. */
export async function resume() {
  if (!sessionStorage.getItem(REFRESH_KEY)) return false;
  try {
    await refresh();
    return true;
  } catch {
    forget();
    return false;
  }
}

/** One refresh at a time: concurrent 401s wait for the same new token. */
export function refresh() {
  if (!refreshing) {
    const token = sessionStorage.getItem(REFRESH_KEY);
    refreshing = (token ? grant({ grant_type: "refresh_token", refresh_token: token }) : Promise.reject(new AuthError("no refresh token")))
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

function forget() {
  accessToken = null;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  sessionStorage.removeItem(REFRESH_KEY);
}

function end(reason) {
  const wasSignedIn = accessToken !== null;
  forget();
  if (wasSignedIn) for (const listener of endListeners) listener(reason);
}

export function logout() {
  end("logout");
}

/** The session is over (the server refused a fresh token). */
export function expire() {
  end("expired");
}

/**
 * fetch() with the bearer token, same origin only. A 401 refreshes once and retries;
 * a second 401 ends the session.
 */
export async function authFetch(url, options = {}) {
  const target = new URL(url, document.baseURI);
  if (target.origin !== location.origin) throw new Error("the token is only sent to this server");
  const attempt = () => {
    if (!accessToken) throw new AuthError("not signed in");
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", `Bearer ${accessToken}`);
    return fetch(target, { ...options, headers, credentials: "omit", cache: "no-store" });
  };
  let response = await attempt();
  if (response.status === 401) {
    try {
      await refresh();
    } catch {
      expire();
      throw new AuthError("session expired");
    }
    response = await attempt();
    if (response.status === 401) {
      expire();
      throw new AuthError("session expired");
    }
  }
  return response;
}
