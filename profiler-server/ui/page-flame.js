// The flame graph page (`#/flamegraph`) and its diff twin (`#/diff`): time range(s), label
// filter, search, a top-functions table beside the flame graph, zoom, and the span view
// (`span_id`/`trace_id` parameters) that the trace waterfall links to.

import { api } from './api.js';
import { FlameGraph } from './flamegraph.js';
import { formatSelector, labelFilter, serviceOf } from './labels.js';
import { href, setParams } from './router.js';
import { rangeOf, timeRangePicker } from './timerange.js';
import {
  debounce, emptyBox, errorBox, fmtCpu, fmtInt, fmtMs, fmtPct, h, loadingBox, setChildren,
} from './util.js';

/** A difference of two shares in percentage points: "+2.5 pp". */
const fmtPoints = (delta) => (delta === 0 ? '0' : `${delta > 0 ? '+' : '−'}${fmtPct(Math.abs(delta)).replace('%', '')} pp`);

/** The diff's base range; by default the hour before the comparison's default hour. */
const baseRangeOf = (p) => ({ from: p.get('base_from') || 'now-2h', until: p.get('base_until') || 'now-1h' });

const VIEWS = [['table', 'Table'], ['both', 'Both'], ['flamegraph', 'Flame graph']];
const TOP_LIMIT = 500;

/** The parameters that select the data; the others (view, search, zoom, sort) only redraw. */
function dataKey(route, diff) {
  const p = route.params;
  const keys = diff
    ? ['from', 'until', 'base_from', 'base_until', 'query', 'base_query']
    : ['from', 'until', 'query', 'span_id', 'trace_id'];
  return `${route.page}|${keys.map((k) => p.get(k) || '').join('|')}`;
}

export class FlamePage {
  constructor({ diff }) {
    this.diff = diff;
    this.el = h('section', { class: `page flame-page${diff ? ' diff' : ''}` });
    this.toolbar = h('div', { class: 'toolbar' });
    this.searchInput = h('input', {
      type: 'search',
      name: 'search',
      class: 'search-input',
      placeholder: 'Search functions…',
      'aria-label': 'Search functions',
      oninput: debounce(() => setParams({ search: this.searchInput.value }, { replace: true }), 150),
    });
    this.matchSummary = h('span', { class: 'match-summary', 'aria-live': 'polite' });
    this.resetButton = h('button', { type: 'button', onclick: () => setParams({ focus: '' }) }, 'Reset zoom');
    this.viewTabs = h('span', { class: 'tabs', role: 'group', 'aria-label': 'View' });
    this.links = h('span', { class: 'links' });
    this.subbar = h('div', { class: 'toolbar' }, this.viewTabs, this.searchInput, this.matchSummary,
      this.resetButton, this.links);
    this.summary = h('div', { class: 'summary' });
    this.tableBox = h('div', { class: 'table-box' });
    this.graph = new FlameGraph({
      tooltip: document.getElementById('tooltip'),
      onZoom: (path) => setParams({ focus: path }),
    });
    this.legend = h('div', { class: 'legend' });
    this.graphBox = h('div', { class: 'graph-box' }, this.legend, this.graph.el);
    this.content = h('div', { class: 'flame-content' }, this.tableBox, this.graphBox);
    this.body = h('div', { class: 'page-body' });
    this.el.append(this.toolbar, this.subbar, this.summary, this.body);
  }

  update(route) {
    this.route = route;
    const key = dataKey(route, this.diff);
    if (key !== this.key) {
      this.key = key;
      this.buildToolbar(route);
      this.load(route);
    }
    this.redraw();
  }

  buildToolbar(route) {
    const p = route.params;
    const range = rangeOf(p);
    const spanId = p.get('span_id');
    this.toolbar.replaceChildren();
    if (spanId) {
      this.toolbar.append(h('span', { class: 'span-banner' }, 'Profile of span ',
        h('code', {}, spanId), p.get('trace_id') && [' in trace ', h('code', {}, p.get('trace_id'))], ' · ',
        p.get('trace_id') && h('a', { href: href('trace', { span: spanId, from: p.get('from'), until: p.get('until') }, p.get('trace_id')) }, '← back to the trace'),
        ' · ', h('a', { href: href('flamegraph', { from: p.get('from'), until: p.get('until') }) }, 'all profiles of this range')));
    } else if (this.diff) {
      this.toolbar.append(
        h('span', { class: 'diff-side base' }, timeRangePicker({
          range: baseRangeOf(p), label: 'Base', name: 'base-range',
          onChange: (from, until) => setParams({ base_from: from, base_until: until, focus: '' }),
        })),
        h('span', { class: 'diff-side comparison' }, timeRangePicker({
          range, label: 'Comparison', name: 'range',
          onChange: (from, until) => setParams({ from, until, focus: '' }),
        })),
      );
    } else {
      this.toolbar.append(timeRangePicker({
        range, onChange: (from, until) => setParams({ from, until, focus: '' }),
      }));
    }
    if (!spanId) {
      this.toolbar.append(labelFilter({
        query: p.get('query') || '',
        range,
        onChange: (query) => setParams({ query, focus: '' }),
      }));
    }
    const baseQuery = p.get('base_query');
    if (this.diff && baseQuery && baseQuery !== (p.get('query') || '')) {
      this.toolbar.append(h('span', { class: 'chip', title: 'The base uses its own selector' }, `base: ${baseQuery}`,
        h('button', {
          type: 'button', class: 'chip-remove', 'aria-label': 'Use the same selector for the base',
          onclick: () => setParams({ base_query: '', focus: '' }),
        }, '×')));
    }
    this.toolbar.append(h('button', { type: 'button', class: 'ghost', title: 'Reload', onclick: () => this.reload() }, '↻ Refresh'));

    const query = p.get('query') || '';
    const service = serviceOf(query);
    setChildren(this.links,
      this.diff
        ? h('a', { href: href('flamegraph', { from: p.get('from'), until: p.get('until'), query }) }, 'Single view')
        : !spanId && h('a', { href: href('diff', { from: p.get('from'), until: p.get('until'), query }) }, 'Compare…'),
      !spanId && h('a', {
        class: 'traces-link',
        href: href('traces', { from: range.from, until: range.until, service }),
        title: service ? `Traces of ${service} in this time range` : 'Traces in this time range',
      }, 'Traces in this range →'),
    );
  }

  reload() {
    this.key = null;
    this.update(this.route);
  }

  async load(route) {
    const p = route.params;
    const generation = (this.generation = (this.generation || 0) + 1);
    this.abort?.abort();
    this.abort = new AbortController();
    const signal = this.abort.signal;
    this.data = null;
    this.top = null;
    this.summary.replaceChildren();
    this.body.replaceChildren(loadingBox());
    const range = rangeOf(p);
    const query = p.get('query') || '';
    const spanId = p.get('span_id');
    const traceId = p.get('trace_id') || '';
    try {
      let graph;
      let top = null;
      if (this.diff) {
        const base = baseRangeOf(p);
        graph = await api('diff', {
          ...range,
          base_from: base.from,
          base_until: base.until,
          query,
          base_query: p.get('base_query') || query,
        }, { signal });
      } else if (spanId) {
        // The span's own samples; the table narrows /top to the same ids with a label selector.
        const ids = formatSelector([
          { name: 'span_id', op: '=', value: spanId },
          ...(traceId ? [{ name: 'trace_id', op: '=', value: traceId }] : []),
        ]);
        [graph, top] = await Promise.all([
          api(`spans/${encodeURIComponent(spanId)}/flamegraph`, { trace_id: traceId, ...range }, { signal }),
          api('top', { ...range, query: ids, limit: TOP_LIMIT }, { signal }),
        ]);
      } else {
        [graph, top] = await Promise.all([
          api('flamegraph', { ...range, query }, { signal }),
          api('top', { ...range, query, limit: TOP_LIMIT }, { signal }),
        ]);
      }
      if (generation !== this.generation) return;
      this.data = graph;
      this.top = top;
      this.graph.setData(graph, { diff: this.diff });
      this.renderSummary();
      this.body.replaceChildren(this.isEmpty() ? this.emptyState() : this.content);
      this.redraw();
    } catch (err) {
      if (err.name === 'AbortError' || generation !== this.generation) return;
      this.body.replaceChildren(errorBox(err, () => this.reload()));
    }
  }

  isEmpty() {
    return this.diff ? !this.data.total && !this.data.base_total : !this.data.total;
  }

  emptyState() {
    if (this.route.params.get('span_id')) {
      return emptyBox('No CPU samples were taken while this span ran',
        'A span shorter than the sampling period (about 10 ms at 99 Hz), or one that waited rather than ran on CPU, often has none.');
    }
    return emptyBox(this.diff ? 'No profiling data in either range' : 'No profiling data in this range',
      'Widen the time range or remove filters. Profiles arrive from `profiler-agent run`, POST /ingest or POST /api/v1/profiles.');
  }

  renderSummary() {
    const d = this.data;
    const parts = this.diff
      ? [`Base: ${fmtInt(d.base_total || 0)} samples`, `Comparison: ${fmtInt(d.total || 0)} samples`]
      : [`${fmtInt(d.total || 0)} samples`, `${fmtCpu(d.total || 0, d.period_ns)} of CPU`];
    if (d.period_ns) parts.push(`1 sample = ${fmtMs(d.period_ns / 1e6)}`);
    this.summary.replaceChildren(parts.join(' · '));
  }

  /** Applies view, zoom, search and sort from the URL to the loaded data. */
  redraw() {
    const p = this.route.params;
    const view = VIEWS.some(([v]) => v === p.get('view')) ? p.get('view') : 'both';
    this.viewTabs.replaceChildren(...VIEWS.map(([value, text]) => h('button', {
      type: 'button',
      class: value === view ? 'tab active' : 'tab',
      'aria-pressed': String(value === view),
      onclick: () => setParams({ view: value === 'both' ? '' : value }, { replace: true }),
    }, text)));
    this.content.dataset.view = view;
    const search = p.get('search') || '';
    if (document.activeElement !== this.searchInput) this.searchInput.value = search;
    const focus = p.get('focus') || '';
    this.resetButton.hidden = !focus;
    if (!this.data) return;
    if (!this.graph.setFocus(focus)) this.resetButton.hidden = true;
    this.renderMatch(this.graph.setSearch(search));
    this.renderLegend(Boolean(search));
    this.graph.render();
    this.renderTable(search);
  }

  renderMatch(match) {
    if (!match) {
      this.matchSummary.replaceChildren();
      return;
    }
    if (!match.frames) {
      this.matchSummary.replaceChildren(h('span', { class: 'muted' }, 'no matching function'));
      return;
    }
    const text = this.diff
      ? `matches ${fmtPct(match.baseShare)} of base → ${fmtPct(match.share)} of comparison`
      : `matches ${fmtPct(match.share)} of total (${fmtInt(match.value)} samples)`;
    this.matchSummary.replaceChildren(h('span', { class: 'swatch match' }), text);
  }

  renderLegend(searching) {
    const item = (cls, text) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${cls}` }), text);
    setChildren(this.legend, (this.diff
      ? [item('grew', 'share grew'), item('shrank', 'share shrank'), item('same', 'unchanged')]
      : [item('user', 'user frame'), item('kernel', 'kernel frame')]),
    searching && item('match', 'search match'),
    h('span', { class: 'muted' }, 'click a frame to zoom'));
  }

  /** Rows for the table: /top's functions, or self shares summed from the diff tree. */
  tableRows() {
    if (!this.diff) return (this.top?.functions || []).map((f) => ({ name: f.name, self: f.self, total: f.total }));
    const byName = new Map();
    for (const node of this.graph.nodes.slice(1)) {
      const row = byName.get(node.name) || { name: node.name, self: 0, baseSelf: 0 };
      row.self += node.self;
      row.baseSelf += node.baseSelf;
      byName.set(node.name, row);
    }
    const total = this.data.total || 0;
    const baseTotal = this.data.base_total || 0;
    return [...byName.values()].map((r) => ({
      ...r,
      share: total ? r.self / total : 0,
      baseShare: baseTotal ? r.baseSelf / baseTotal : 0,
      change: (total ? r.self / total : 0) - (baseTotal ? r.baseSelf / baseTotal : 0),
    }));
  }

  renderTable(search) {
    const p = this.route.params;
    const columns = this.diff
      ? [['name', 'Function'], ['baseShare', 'Base self'], ['share', 'Comparison self'], ['change', 'Change']]
      : [['name', 'Function'], ['self', 'Self'], ['total', 'Total']];
    const defaultSort = this.diff ? 'change' : 'self';
    const sort = columns.some(([k]) => k === p.get('sort')) ? p.get('sort') : defaultSort;
    const rows = this.tableRows();
    const magnitude = (r) => (sort === 'change' ? Math.abs(r.change) : r[sort]);
    rows.sort((a, b) => (sort === 'name' ? a.name.localeCompare(b.name) : magnitude(b) - magnitude(a)));
    const total = this.diff ? 1 : this.top?.total || this.data.total || 0;
    const term = search.toLowerCase();
    const cell = (value, ratio, cls = '') => h('td', { class: `num ${cls}` },
      h('span', { class: 'bar', style: { width: `${Math.min(100, Math.abs(ratio) * 100)}%` } }),
      h('span', { class: 'num-text' }, value));
    const body = rows.map((r) => h('tr', {
      class: term && r.name.toLowerCase().includes(term) ? 'match' : '',
      title: 'Click to search for this function',
      onclick: () => setParams({ search: r.name }),
    },
    h('td', { class: 'fn-name' }, r.name),
    this.diff
      ? [cell(fmtPct(r.baseShare), 0), cell(fmtPct(r.share), 0),
        cell(fmtPoints(r.change), r.change * 5, r.change > 0 ? 'grew' : r.change < 0 ? 'shrank' : '')]
      : [cell(`${fmtInt(r.self)} · ${fmtPct(total ? r.self / total : 0)}`, total ? r.self / total : 0),
        cell(`${fmtInt(r.total)} · ${fmtPct(total ? r.total / total : 0)}`, total ? r.total / total : 0)]));
    this.tableBox.replaceChildren(h('table', { class: 'top-table' },
      h('thead', {}, h('tr', {}, columns.map(([key, text]) => h('th', {
        class: key === 'name' ? '' : 'num',
        'aria-sort': key === sort ? (key === 'name' ? 'ascending' : 'descending') : 'none',
        title: key === 'change' ? 'Comparison self share minus base self share, in percentage points' : undefined,
      }, h('button', {
        type: 'button', class: 'sort', onclick: () => setParams({ sort: key }, { replace: true }),
      }, text, key === sort ? (key === 'name' ? ' ▲' : ' ▼') : ''))))),
      h('tbody', {}, body.length ? body : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'No functions')))));
  }
}
