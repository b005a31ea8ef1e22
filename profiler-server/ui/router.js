// URL state: the page and all its parameters live in the hash (`#/traces?service=api&from=now-1h`),
// so every view is a shareable link and the back button walks through views, zooms and filters.

let listener = () => {};

/** The current route: `{page, arg, params}`; `#/trace/abc?x=1` → page "trace", arg "abc". */
export function currentRoute() {
  const hash = location.hash.replace(/^#/, '');
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return {
    page: parts[0] || 'flamegraph',
    arg: parts[1] || '',
    params: new URLSearchParams(q < 0 ? '' : hash.slice(q + 1)),
  };
}

/** The link to a page; `params` is an object or URLSearchParams, empty values are dropped. */
export function href(page, params = {}, arg = '') {
  const search = new URLSearchParams();
  const entries = params instanceof URLSearchParams ? params.entries() : Object.entries(params);
  for (const [key, value] of entries) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const qs = search.toString();
  return `#/${page}${arg ? `/${encodeURIComponent(arg)}` : ''}${qs ? `?${qs}` : ''}`;
}

/**
 * Goes to a page. `replace` rewrites the current history entry instead of adding one (for
 * typing in a search box, where every keystroke must not become a back-button step).
 */
export function navigate(page, params, { replace = false, arg = '' } = {}) {
  const target = href(page, params, arg);
  if (target === location.hash) return;
  if (replace) {
    history.replaceState(history.state, '', target);
    listener(currentRoute());
  } else {
    location.hash = target;
  }
}

/** Changes some parameters of the current page, keeping the others. */
export function setParams(changes, options = {}) {
  const route = currentRoute();
  for (const [key, value] of Object.entries(changes)) {
    if (value === undefined || value === null || value === '') route.params.delete(key);
    else route.params.set(key, value);
  }
  navigate(route.page, route.params, { ...options, arg: route.arg });
}

export function onRouteChange(fn) {
  listener = fn;
  window.addEventListener('hashchange', () => fn(currentRoute()));
}
