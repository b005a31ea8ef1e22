// Traces: the filtered list (`#/traces`, from `/api/v1/traces`) and one trace's waterfall
// (`#/trace/<id>`, from `/api/v1/traces/{id}`), where every span that has CPU samples links to
// the flame graph of exactly that span.

import { api } from './api.js';
import { scatterChart } from './charts.js';
import { href, navigate, setParams } from './router.js';
import { rangeOf, resolveRange, timeRangePicker } from './timerange.js';
import {
  emptyBox, errorBox, fmtInt, fmtMs, fmtTime, h, hashString, loadingBox, nanosToMs,
} from './util.js';

const FILTERS = ['service', 'route', 'status', 'min_duration_ms', 'from', 'until', 'limit'];
/** Profiles cover whole collection intervals (tens of seconds), so a span's samples can sit in a
 * profile that started well before the span: its flame graph asks for this much around it. */
const SPAN_PROFILE_MARGIN_SEC = 300;

const serviceColor = (service) => `hsl(${hashString(service || '') % 360}, 55%, 55%)`;

export class TracesPage {
  constructor() {
    this.toolbar = h('div', { class: 'toolbar' });
    this.body = h('div', { class: 'page-body' });
    this.el = h('section', { class: 'page traces-page' }, this.toolbar, this.body);
  }

  update(route) {
    this.route = route;
    const p = route.params;
    const key = FILTERS.map((k) => p.get(k) || '').join('|');
    if (key !== this.key) {
      this.key = key;
      this.buildToolbar(p);
      this.load(p);
    } else if (this.traces) {
      this.render();
    }
  }

  buildToolbar(p) {
    const range = rangeOf(p);
    const service = p.get('service') || '';
    const serviceSelect = h('select', {
      name: 'service', 'aria-label': 'Service', onchange: () => setParams({ service: serviceSelect.value }),
    }, h('option', { value: service }, service || 'All services'));
    api('services', range).then((body) => {
      const names = body.services.map((s) => s.name);
      if (service && !names.includes(service)) names.unshift(service);
      serviceSelect.replaceChildren(h('option', { value: '' }, 'All services'),
        ...names.map((n) => h('option', { value: n, selected: n === service }, n)));
    }, () => {});
    const text = (name, placeholder, attrs = {}) => {
      const input = h('input', {
        name, placeholder, value: p.get(name) || '', 'aria-label': placeholder, ...attrs,
        onchange: () => setParams({ [name]: input.value.trim() }),
      });
      return input;
    };
    const status = h('select', { name: 'status', 'aria-label': 'Status', onchange: () => setParams({ status: status.value }) },
      [['', 'Any status'], ['ok', 'OK'], ['error', 'Error']].map(([v, t]) => h('option', { value: v, selected: (p.get('status') || '') === v }, t)));
    const sort = h('select', { name: 'sort', 'aria-label': 'Sort', onchange: () => setParams({ sort: sort.value }, { replace: true }) },
      [['', 'Newest first'], ['duration', 'Slowest first']].map(([v, t]) => h('option', { value: v, selected: (p.get('sort') || '') === v }, t)));
    this.toolbar.replaceChildren(
      timeRangePicker({ range, onChange: (from, until) => setParams({ from, until }) }),
      h('span', { class: 'field-label' }, 'Service'), serviceSelect,
      text('route', 'Route', { class: 'mono' }),
      status,
      text('min_duration_ms', 'Min duration (ms)', { type: 'number', min: 0, step: 'any', class: 'narrow-input' }),
      sort,
      h('button', { type: 'button', class: 'ghost', onclick: () => { this.key = null; this.update(this.route); } }, '↻ Refresh'),
    );
  }

  async load(p) {
    const generation = (this.generation = (this.generation || 0) + 1);
    this.traces = null;
    this.body.replaceChildren(loadingBox());
    const range = rangeOf(p);
    this.domain = resolveRange(range);
    const params = Object.fromEntries(FILTERS.map((k) => [k, p.get(k) || '']));
    Object.assign(params, range);
    try {
      const body = await api('traces', params);
      if (generation !== this.generation) return;
      this.traces = body.traces || [];
      this.render();
    } catch (err) {
      if (generation !== this.generation) return;
      this.body.replaceChildren(errorBox(err, () => { this.key = null; this.update(this.route); }));
    }
  }

  render() {
    const p = this.route.params;
    if (!this.traces.length) {
      this.body.replaceChildren(emptyBox('No traces match these filters',
        'Widen the time range, lower the minimum duration or clear the service/route filters. Spans arrive through OTLP on port 4317.'));
      return;
    }
    const traces = this.traces.slice();
    if (p.get('sort') === 'duration') traces.sort((a, b) => b.duration_ms - a.duration_ms);
    const maxMs = Math.max(...traces.map((t) => t.duration_ms));
    const linkParams = { from: p.get('from'), until: p.get('until') };
    const open = (id) => navigate('trace', linkParams, { arg: id });
    const chart = scatterChart({
      title: 'Duration over time (click a dot to open the trace, drag to narrow the range)',
      xDomain: [this.domain.from, this.domain.until],
      points: traces.map((t) => ({
        t: nanosToMs(t.start_unix_nano) / 1000, v: t.duration_ms, error: t.status === 'error', id: t.trace_id, label: t.name,
      })),
      format: fmtMs,
      onPick: open,
      onSelect: (from, until) => setParams({ from: String(from), until: String(until) }),
    });
    const rows = traces.map((t) => h('tr', { class: t.status === 'error' ? 'error' : '', dataset: { traceId: t.trace_id }, onclick: () => open(t.trace_id) },
      h('td', { class: 'nowrap' }, fmtTime(nanosToMs(t.start_unix_nano) / 1000)),
      h('td', {}, h('span', { class: 'swatch', style: { background: serviceColor(t.service) } }), t.service),
      h('td', {}, h('a', { href: href('trace', linkParams, t.trace_id), class: 'trace-link' }, t.name || '(unnamed)')),
      h('td', { class: 'num duration' }, h('span', { class: 'bar', style: { width: `${maxMs ? (t.duration_ms / maxMs) * 100 : 0}%` } }),
        h('span', { class: 'num-text' }, fmtMs(t.duration_ms))),
      h('td', {}, h('span', { class: `status ${t.status}` }, t.status)),
      h('td', { class: 'num' }, fmtInt(t.span_count)),
      h('td', {}, t.has_profile ? h('span', { class: 'badge profile', title: 'CPU samples were taken inside this trace' }, 'profile') : '')));
    this.body.replaceChildren(chart, h('table', { class: 'traces-table' },
      h('thead', {}, h('tr', {}, [['Start'], ['Service'], ['Name'], ['Duration', 'num'], ['Status'], ['Spans', 'num'], ['']].map(([c, cls]) => h('th', { class: cls }, c)))),
      h('tbody', {}, rows)),
    h('p', { class: 'muted' }, `${traces.length} ${traces.length === 1 ? 'trace' : 'traces'}${traces.length >= Number(p.get('limit') || 100) ? ' (the limit; narrow the filters to see others)' : ''}`));
  }
}

/** Orders spans depth-first under their parents (spans whose parent is missing become roots). */
export function spanTree(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_span_id && byId.has(s.parent_span_id) && s.parent_span_id !== s.span_id) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    } else {
      roots.push(s);
    }
  }
  // Exact nanoseconds: spans of one request often start within the same microsecond.
  const start = (s) => {
    try {
      return BigInt(s.start_unix_nano);
    } catch {
      return 0n;
    }
  };
  const order = (list) => list.sort((a, b) => {
    const d = start(a) - start(b);
    return d < 0n ? -1 : d > 0n ? 1 : 0;
  });
  const out = [];
  const seen = new Set();
  const stack = order(roots).reverse().map((s) => [s, 0]);
  while (stack.length) {
    const [s, depth] = stack.pop();
    if (seen.has(s.span_id)) continue;
    seen.add(s.span_id);
    const kids = order(children.get(s.span_id) || []);
    out.push({ span: s, depth, childCount: kids.length });
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  return out;
}

/** A span's duration, right of its bar when there is room, else inside it, else left of it. */
function durationLabel(left, width, text) {
  if (left + width < 85) return h('span', { class: 'span-duration', style: { left: `${left + width}%` } }, text);
  if (width > 12) return h('span', { class: 'span-duration inside', style: { right: `${100 - left - width}%` } }, text);
  return h('span', { class: 'span-duration before', style: { right: `${100 - left}%` } }, text);
}

export class TracePage {
  constructor() {
    this.body = h('div', { class: 'page-body' });
    this.el = h('section', { class: 'page trace-page' }, this.body);
    this.collapsed = new Set();
  }

  update(route) {
    this.route = route;
    if (route.arg !== this.traceId) {
      this.traceId = route.arg;
      this.collapsed.clear();
      this.load();
    } else if (this.trace) {
      this.render();
    }
  }

  async load() {
    const generation = (this.generation = (this.generation || 0) + 1);
    this.trace = null;
    this.body.replaceChildren(loadingBox());
    try {
      const trace = await api(`traces/${encodeURIComponent(this.traceId)}`);
      if (generation !== this.generation) return;
      this.trace = trace;
      this.render();
    } catch (err) {
      if (generation !== this.generation) return;
      this.body.replaceChildren(this.backLink(), err.status === 404
        ? emptyBox(`Trace ${this.traceId} not found`, 'It may be older than the retention period, or its spans have not arrived yet.')
        : errorBox(err, () => this.load()));
    }
  }

  backLink() {
    const p = this.route.params;
    return h('a', { class: 'back', href: href('traces', { from: p.get('from'), until: p.get('until') }) }, '← Traces');
  }

  render() {
    const spans = this.trace.spans || [];
    if (!spans.length) {
      this.body.replaceChildren(this.backLink(), emptyBox('This trace has no spans'));
      return;
    }
    const selected = this.route.params.get('span') || '';
    const t0 = Math.min(...spans.map((s) => nanosToMs(s.start_unix_nano)));
    const t1 = Math.max(...spans.map((s) => nanosToMs(s.end_unix_nano)));
    const total = Math.max(t1 - t0, 1e-6);
    const tree = spanTree(spans);
    const root = tree[0].span;
    const services = [...new Set(spans.map((s) => s.service))];
    const profileRange = {
      from: String(Math.floor(t0 / 1000) - SPAN_PROFILE_MARGIN_SEC),
      until: String(Math.ceil(t1 / 1000) + SPAN_PROFILE_MARGIN_SEC),
    };

    const rows = [];
    const hiddenBelow = [];
    for (const { span, depth, childCount } of tree) {
      while (hiddenBelow.length && hiddenBelow[hiddenBelow.length - 1] >= depth) hiddenBelow.pop();
      if (hiddenBelow.length) continue;
      const collapsed = this.collapsed.has(span.span_id);
      if (collapsed) hiddenBelow.push(depth);
      const start = nanosToMs(span.start_unix_nano) - t0;
      const duration = span.duration_ms ?? nanosToMs(span.end_unix_nano) - nanosToMs(span.start_unix_nano);
      const left = (start / total) * 100;
      const width = Math.max((duration / total) * 100, 0.15);
      const isSelected = span.span_id === selected;
      const profile = span.profile_samples > 0 && h('a', {
        class: 'profile-link',
        href: href('flamegraph', { span_id: span.span_id, trace_id: this.trace.trace_id, ...profileRange }),
        title: `Flame graph of the ${fmtInt(span.profile_samples)} CPU samples taken inside this span`,
        onclick: (event) => event.stopPropagation(),
      }, `profile (${fmtInt(span.profile_samples)})`);
      rows.push(h('div', {
        class: `span-row${isSelected ? ' selected' : ''}${span.status === 'error' ? ' error' : ''}`,
        dataset: { spanId: span.span_id },
        onclick: () => setParams({ span: isSelected ? '' : span.span_id }, { replace: true }),
      },
      h('div', { class: 'span-label', style: { paddingLeft: `${depth * 14 + 4}px` } },
        childCount
          ? h('button', {
            type: 'button', class: 'toggle', 'aria-expanded': String(!collapsed), title: collapsed ? 'Expand' : 'Collapse',
            onclick: (event) => {
              event.stopPropagation();
              if (collapsed) this.collapsed.delete(span.span_id);
              else this.collapsed.add(span.span_id);
              this.render();
            },
          }, collapsed ? '▸' : '▾')
          : h('span', { class: 'toggle-space' }),
        h('span', { class: 'swatch', style: { background: serviceColor(span.service) } }),
        h('span', { class: 'span-service' }, span.service), ' ',
        h('span', { class: 'span-name' }, span.name),
        collapsed && h('span', { class: 'muted' }, ` (+${childCount})`),
        profile),
      h('div', { class: 'span-timeline' },
        h('div', {
          class: 'span-bar',
          style: { left: `${left}%`, width: `${width}%`, background: span.status === 'error' ? '' : serviceColor(span.service) },
        }),
        durationLabel(left, width, fmtMs(duration)))));
      if (isSelected) rows.push(this.details(span, start, profile && profile.cloneNode(true)));
    }

    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { class: 'tick', style: { left: `${f * 100}%` } }, fmtMs(f * total)));
    this.body.replaceChildren(
      this.backLink(),
      h('header', { class: 'trace-header' },
        h('h2', {}, root.name || '(unnamed)'),
        h('div', { class: 'trace-meta' },
          h('span', {}, 'Trace ', h('code', {}, this.trace.trace_id)),
          h('span', {}, fmtTime(t0 / 1000)),
          h('span', {}, `${fmtMs(total)}`),
          h('span', {}, `${spans.length} spans`),
          h('span', {}, services.map((s) => [h('span', { class: 'swatch', style: { background: serviceColor(s) } }), s, ' '])))),
      h('div', { class: 'waterfall' },
        h('div', { class: 'span-row ruler' }, h('div', { class: 'span-label muted' }, 'Service · span'), h('div', { class: 'span-timeline' }, ticks)),
        rows));
  }

  details(span, startMs, profileLink) {
    const attributes = Object.entries(span.attributes || {});
    const row = (k, v) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, v));
    return h('div', { class: 'span-details' },
      h('table', {},
        row('span_id', span.span_id),
        row('parent', span.parent_span_id || '(root)'),
        row('kind', span.kind || ''),
        row('status', span.status || ''),
        row('start', `+${fmtMs(startMs)}`),
        row('duration', fmtMs(span.duration_ms)),
        row('CPU samples', fmtInt(span.profile_samples || 0)),
        attributes.map(([k, v]) => row(k, typeof v === 'string' ? v : JSON.stringify(v)))),
      profileLink || h('p', { class: 'muted' }, 'No CPU samples were taken inside this span.'));
  }
}
