// The services overview (`#/services`): every service with its RED charts per route from
// `/api/v1/red`. A click on a chart (or a drag across it) opens the slowest traces of that
// window: the first step of the incident path "latency spike → slow requests → span profile".

import { api } from './api.js';
import { lineChart, timeAxis } from './charts.js';
import { withService } from './labels.js';
import { href, navigate, setParams } from './router.js';
import { rangeOf, resolveRange, timeRangePicker } from './timerange.js';
import {
  emptyBox, errorBox, fmtInt, fmtMs, fmtPct, fmtRate, h, loadingBox,
} from './util.js';

const COLORS = { rate: '#2f6fdf', errors: '#d8363a', p50: '#3a9d5d', p95: '#e08a1e', p99: '#c2185b' };

export class ServicesPage {
  constructor() {
    this.toolbar = h('div', { class: 'toolbar' });
    this.body = h('div', { class: 'page-body' });
    this.el = h('section', { class: 'page services-page' }, this.toolbar, this.body);
  }

  update(route) {
    this.route = route;
    const range = rangeOf(route.params);
    const key = `${range.from}|${range.until}`;
    if (key === this.key) return;
    this.key = key;
    this.toolbar.replaceChildren(
      timeRangePicker({ range, onChange: (from, until) => setParams({ from, until }) }),
      h('button', { type: 'button', class: 'ghost', onclick: () => { this.key = null; this.update(this.route); } }, '↻ Refresh'),
      h('span', { class: 'muted hint' }, 'Click a chart for the slowest traces of that moment, or drag across it for a range.'),
    );
    this.load(range);
  }

  async load(range) {
    const generation = (this.generation = (this.generation || 0) + 1);
    this.body.replaceChildren(loadingBox());
    const domain = resolveRange(range);
    try {
      const [services, red] = await Promise.all([api('services', range), api('red', range)]);
      if (generation !== this.generation) return;
      this.render(range, [domain.from, domain.until], services.services || [], red);
    } catch (err) {
      if (generation !== this.generation) return;
      this.body.replaceChildren(errorBox(err, () => { this.key = null; this.update(this.route); }));
    }
  }

  render(range, xDomain, services, red) {
    const series = red.series || [];
    const names = [...new Set([...services.map((s) => s.name), ...series.map((s) => s.service)])].sort();
    if (!names.length) {
      this.body.replaceChildren(emptyBox('No services in this range',
        'Services appear when profiles (POST /ingest, /api/v1/profiles) or OTLP spans and metrics arrive. Try a wider time range.'));
      return;
    }
    const step = red.step_seconds || Math.max(10, (xDomain[1] - xDomain[0]) / 60);
    const tooltip = document.getElementById('tooltip');
    const cards = names.map((name) => {
      const info = services.find((s) => s.name === name);
      const own = series.filter((s) => s.service === name);
      const openTraces = (route) => (from, until) => navigate('traces', {
        service: name, route, from: String(from), until: String(until), sort: 'duration',
      });
      const rows = own.map((s) => {
        const points = s.points || [];
        const pick = (key) => points.map((p) => ({ t: p.t, v: p[key] }));
        const common = { xDomain, step, tooltip, onSelect: openTraces(s.route) };
        return h('div', { class: 'red-row' },
          h('div', { class: 'red-route' }, h('span', { class: 'route mono' }, s.route || '(no route)'),
            s.kind && h('span', { class: 'badge' }, s.kind),
            h('a', { href: href('traces', { service: name, route: s.route, ...range, sort: 'duration' }) }, 'traces')),
          lineChart({ ...common, title: 'Rate', format: fmtRate, lines: [{ label: 'req/s', color: COLORS.rate, values: pick('rate') }] }),
          lineChart({ ...common, title: 'Errors', format: fmtPct, yMin: 0.01, lines: [{ label: 'error ratio', color: COLORS.errors, values: pick('error_ratio') }] }),
          lineChart({
            ...common,
            title: 'Duration',
            format: (v) => fmtMs(v * 1000),
            lines: ['p50', 'p95', 'p99'].map((q) => ({ label: q, color: COLORS[q], values: pick(q) })),
          }));
      });
      return h('article', { class: 'service-card', dataset: { service: name } },
        h('header', {},
          h('h2', {}, name),
          info && h('span', { class: 'badge' }, `${fmtInt(info.profile_samples || 0)} profile samples`),
          info && h('span', { class: 'badge' }, `${fmtInt(info.spans || 0)} spans`),
          h('span', { class: 'links' },
            h('a', { href: href('flamegraph', { ...range, query: withService('', name) }) }, 'Flame graph'),
            h('a', { href: href('traces', { ...range, service: name }) }, 'Traces'))),
        rows.length
          ? [rows, h('div', { class: 'red-row axis-row' }, h('div'), timeAxis(xDomain), timeAxis(xDomain), timeAxis(xDomain))]
          : h('p', { class: 'muted' }, 'No request metrics for this service in this range (the agent exports them as OTLP http.server.request.duration histograms).'));
    });
    this.body.replaceChildren(...cards);
  }
}
