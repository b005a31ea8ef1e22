// The time-range picker: presets (last 5m … 7d) and a custom absolute from/until.

import { fmtTime, h, parseTime, toLocalInput } from './util.js';

export const PRESETS = [
  ['now-5m', 'Last 5 minutes'],
  ['now-15m', 'Last 15 minutes'],
  ['now-1h', 'Last 1 hour'],
  ['now-6h', 'Last 6 hours'],
  ['now-24h', 'Last 24 hours'],
  ['now-7d', 'Last 7 days'],
];

export const DEFAULT_FROM = 'now-1h';

/** `from`/`until` of a route (API defaults when missing), as the raw strings the URL holds. */
export function rangeOf(params, prefix = '') {
  return {
    from: params.get(`${prefix}from`) || DEFAULT_FROM,
    until: params.get(`${prefix}until`) || 'now',
  };
}

/** Resolves a range to unix seconds. */
export function resolveRange({ from, until }) {
  const now = Date.now() / 1000;
  return { from: parseTime(from, now), until: parseTime(until, now) };
}

/** A short human description of a range: "Last 1 hour" or "2025-11-22 10:00:00 → 10:15:00". */
export function describeRange(range) {
  const preset = PRESETS.find(([value]) => value === range.from && range.until === 'now');
  if (preset) return preset[1];
  const { from, until } = resolveRange(range);
  if (Number.isNaN(from) || Number.isNaN(until)) return `${range.from} → ${range.until}`;
  const sameDay = fmtTime(from).slice(0, 10) === fmtTime(until).slice(0, 10);
  return `${fmtTime(from)} → ${fmtTime(until, !sameDay)}`;
}

/**
 * The picker. `onChange(from, until)` gets unix seconds (as strings) for a custom range or the
 * relative preset strings.
 */
export function timeRangePicker({ range, onChange, label = 'Time range', name = 'range' }) {
  const preset = PRESETS.find(([value]) => value === range.from && range.until === 'now');
  const resolved = resolveRange(range);
  const fromInput = h('input', { type: 'datetime-local', step: 1, 'aria-label': `${label} from` });
  const untilInput = h('input', { type: 'datetime-local', step: 1, 'aria-label': `${label} until` });
  if (!Number.isNaN(resolved.from)) fromInput.value = toLocalInput(resolved.from);
  if (!Number.isNaN(resolved.until)) untilInput.value = toLocalInput(resolved.until);
  const custom = h('span', { class: 'custom-range', hidden: Boolean(preset) },
    fromInput, ' → ', untilInput,
    h('button', {
      type: 'button',
      onclick: () => {
        const from = Date.parse(fromInput.value) / 1000;
        const until = Date.parse(untilInput.value) / 1000;
        if (Number.isNaN(from) || Number.isNaN(until) || from >= until) {
          custom.classList.add('invalid');
          return;
        }
        onChange(String(Math.floor(from)), String(Math.ceil(until)));
      },
    }, 'Apply'));
  const select = h('select', {
    'aria-label': label,
    name,
    onchange: () => {
      if (select.value === 'custom') {
        custom.hidden = false;
        fromInput.focus();
      } else {
        onChange(select.value, 'now');
      }
    },
  },
  PRESETS.map(([value, text]) => h('option', { value, selected: preset && preset[0] === value }, text)),
  h('option', { value: 'custom', selected: !preset }, preset ? 'Custom range…' : describeRange(range)));
  return h('span', { class: 'timerange' }, h('span', { class: 'field-label' }, label), select, custom);
}
