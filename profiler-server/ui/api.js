// The JSON API client (docs/api.md): one `api()` call per request, the bearer token from
// sessionStorage on every call, and a sign-in prompt when the server answers 401.

const TOKEN_KEY = 'profiler.token';

/** A failed API call: HTTP status (0 when the server could not be reached), code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const getToken = () => sessionStorage.getItem(TOKEN_KEY);

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// One prompt at a time: concurrent 401s all wait for the same token.
let pendingPrompt = null;

function promptForToken(rejected) {
  if (!pendingPrompt) {
    pendingPrompt = new Promise((resolve) => {
      const dialog = document.getElementById('login');
      const form = dialog.querySelector('form');
      const input = dialog.querySelector('input[name=token]');
      dialog.querySelector('.login-message').textContent = rejected
        ? 'The server rejected the token. Enter a valid one.'
        : 'This server requires an access token (--auth-token / PROFILER_AUTH_TOKEN).';
      input.value = '';
      const done = (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        form.removeEventListener('submit', done);
        dialog.close();
        sessionStorage.setItem(TOKEN_KEY, token);
        window.dispatchEvent(new Event('profiler:signed-in'));
        pendingPrompt = null;
        resolve(token);
      };
      form.addEventListener('submit', done);
      // Escape must not leave the app without a token and without a prompt.
      dialog.addEventListener('cancel', (event) => event.preventDefault(), { once: true });
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }
  return pendingPrompt;
}

/**
 * GETs `/api/v1/<path>` with `params` (empty values dropped) and returns the parsed JSON.
 * Throws an ApiError carrying the server's `{"error": {code, message}}` on failure.
 */
export async function api(path, params = {}, { signal } = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const qs = search.toString();
  const url = `api/v1/${path}${qs ? `?${qs}` : ''}`;
  for (let attempt = 0; ; attempt++) {
    const token = getToken();
    let response;
    try {
      response = await fetch(url, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        signal,
      });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'unreachable', `cannot reach the server: ${err.message}`);
    }
    if (response.status === 401 && attempt < 5) {
      if (token) signOut();
      await promptForToken(Boolean(token));
      continue;
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: a proxy's error page, or a server bug; show its text.
    }
    if (!response.ok) {
      const error = body && body.error;
      throw new ApiError(
        response.status,
        error?.code || '',
        error?.message || text.slice(0, 300) || response.statusText,
      );
    }
    if (body === null) throw new ApiError(response.status, 'internal', 'the server sent no JSON');
    return body;
  }
}
