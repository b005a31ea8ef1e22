// Small helpers shared by every page: DOM building, number/time formatting, time parsing.

/** Creates an element: `h('a', {class: 'x', href, onclick}, 'text', child, [more])`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'style' && typeof value === 'object') {
      Object.assign(el.style, value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Replaces an element's children; like `h`, skips null/false children and flattens arrays. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
/** Escapes text for use inside HTML markup or a quoted attribute. */
export const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');

/** A 0..1 ratio as a percentage with sensible precision. */
export function fmtPct(ratio) {
  if (!Number.isFinite(ratio)) return '–';
  const p = ratio * 100;
  if (p === 0) return '0%';
  if (Math.abs(p) < 0.01) return (p < 0 ? '>-' : '<') + '0.01%';
  return (Math.abs(p) >= 10 ? p.toFixed(1) : p.toFixed(2)) + '%';
}

/** A duration in milliseconds: "350 µs", "12.5 ms", "1.24 s", "2m 5s". */
export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  const a = Math.abs(ms);
  if (a === 0) return '0';
  if (a < 1) return `${(ms * 1000).toPrecision(3)} µs`;
  if (a < 1000) return `${+ms.toPrecision(3)} ms`;
  if (a < 60000) return `${+(ms / 1000).toPrecision(3)} s`;
  const s = Math.round(ms / 1000);
  return s < 3600 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** Samples as CPU time, given the nanoseconds one sample stands for. */
export const fmtCpu = (samples, periodNs) => (periodNs ? fmtMs((samples * periodNs) / 1e6) : '–');

/** A rate like "12.5/s". */
export function fmtRate(r) {
  if (!Number.isFinite(r)) return '–';
  if (r === 0) return '0/s';
  return `${r >= 100 ? Math.round(r) : +r.toPrecision(3)}/s`;
}

const pad = (n) => String(n).padStart(2, '0');
/** Unix seconds as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(unixSec, withDate = true) {
  const d = new Date(unixSec * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

/** Unix seconds as the value of an `<input type="datetime-local">`. */
export function toLocalInput(unixSec) {
  return fmtTime(unixSec).replace(' ', 'T');
}

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Parses a time the API accepts (docs/api.md "Conventions") into unix seconds: `now`,
 * `now-15m`, unix seconds/milliseconds/nanoseconds told apart by magnitude, RFC 3339.
 * Returns NaN when it cannot.
 */
export function parseTime(value, nowSec = Date.now() / 1000) {
  const s = String(value ?? '').trim();
  if (s === '' || s === 'now') return nowSec;
  const rel = /^now-(\d+(?:\.\d+)?)([smhdw])$/.exec(s);
  if (rel) return nowSec - Number(rel[1]) * UNIT_SECONDS[rel[2]];
  if (/^\d+(\.\d+)?$/.test(s)) {
    const n = Number(s);
    if (n < 1e11) return n;
    if (n < 1e14) return n / 1e3;
    if (n < 1e17) return n / 1e6;
    return n / 1e9;
  }
  const ms = Date.parse(s);
  return Number.isNaN(ms) ? NaN : ms / 1000;
}

/** Nanoseconds since the epoch, as the API's decimal string, to milliseconds (float). */
export function nanosToMs(nanos) {
  try {
    const n = BigInt(nanos);
    return Number(n / 1000n) / 1000;
  } catch {
    return Number(nanos) / 1e6;
  }
}

/** A stable 32-bit hash (FNV-1a) of a string, for colours. */
export function hashString(s) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    hash ^= s.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** The message a failed load shows: the server's own message when it sent one. */
export function errorBox(err, retry) {
  const title = err.status ? `Server error ${err.status}${err.code ? ` (${err.code})` : ''}` : 'Request failed';
  return h('div', { class: 'state error', role: 'alert' },
    h('strong', {}, title), h('p', {}, err.message || String(err)),
    retry && h('button', { type: 'button', onclick: retry }, 'Retry'));
}

/** An empty-state box: what is missing and what to try. */
export function emptyBox(title, hint) {
  return h('div', { class: 'state empty' }, h('strong', {}, title), hint && h('p', {}, hint));
}

export function loadingBox(text = 'Loading…') {
  return h('div', { class: 'state loading' }, text);
}
