// Small inline SVG charts (no chart library): line charts for RED series and a scatter plot of
// trace durations. Hover shows the values under the cursor; a click selects one step of time, a
// drag selects a range, both reported through `onSelect(fromSec, untilSec)`.

import { escapeHtml, fmtTime } from './util.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 300;
const H = 70;
const PAD_TOP = 6;
const PAD_BOTTOM = 14;

function svgEl(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** A round dot that stays round in the stretched (preserveAspectRatio="none") plot. */
function dot(x, y, attrs) {
  const d = x.toFixed(2);
  const e = y.toFixed(2);
  return svgEl('line', { x1: d, x2: d, y1: e, y2: e, class: 'dot', ...attrs });
}

const niceMax = (max) => {
  if (!(max > 0)) return 1;
  const pow = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 2.5, 5, 10].map((m) => m * pow).find((m) => m >= max) || max;
};

/**
 * Adds hover and click/drag selection over the plot area of `svg`. `describe(t)` returns the
 * tooltip HTML for time `t` (and may return null), `snap(t)` the window a click selects (null:
 * none).
 */
function interact({ wrap, svg, xDomain, describe, snap, onSelect, tooltip }) {
  const [t0, t1] = xDomain;
  const plotHeight = H - PAD_BOTTOM;
  const guide = svgEl('line', { class: 'guide', y1: 0, y2: plotHeight, visibility: 'hidden' });
  const brush = svgEl('rect', { class: 'brush', y: 0, height: plotHeight, visibility: 'hidden' });
  svg.append(guide, brush);
  const timeAt = (event) => {
    const rect = svg.getBoundingClientRect();
    const fx = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    return { fx, t: t0 + fx * (t1 - t0) };
  };
  let dragStart = null;
  svg.addEventListener('mousedown', (event) => {
    event.preventDefault();
    dragStart = timeAt(event);
  });
  svg.addEventListener('mousemove', (event) => {
    const { fx, t } = timeAt(event);
    guide.setAttribute('x1', fx * W);
    guide.setAttribute('x2', fx * W);
    guide.setAttribute('visibility', 'visible');
    if (dragStart) {
      const a = Math.min(dragStart.fx, fx);
      brush.setAttribute('x', a * W);
      brush.setAttribute('width', Math.abs(fx - dragStart.fx) * W);
      brush.setAttribute('visibility', 'visible');
    }
    const html = describe(t);
    if (!html || !tooltip) return;
    tooltip.innerHTML = html;
    tooltip.hidden = false;
    const rect = tooltip.getBoundingClientRect();
    const left = event.clientX + 14 + rect.width > window.innerWidth ? event.clientX - rect.width - 14 : event.clientX + 14;
    tooltip.style.left = `${Math.max(4, left)}px`;
    tooltip.style.top = `${Math.max(4, event.clientY + 14)}px`;
  });
  const reset = () => {
    guide.setAttribute('visibility', 'hidden');
    brush.setAttribute('visibility', 'hidden');
    if (tooltip) tooltip.hidden = true;
  };
  svg.addEventListener('mouseleave', () => {
    dragStart = null;
    reset();
  });
  svg.addEventListener('mouseup', (event) => {
    if (!dragStart) return;
    const end = timeAt(event);
    const start = dragStart;
    dragStart = null;
    reset();
    if (!onSelect) return;
    if (Math.abs(end.fx - start.fx) > 0.02) {
      onSelect(Math.floor(Math.min(start.t, end.t)), Math.ceil(Math.max(start.t, end.t)));
    } else {
      const picked = snap(end.t);
      if (picked) onSelect(Math.floor(picked[0]), Math.ceil(picked[1]));
    }
  });
  wrap.classList.toggle('selectable', Boolean(onSelect));
}

/**
 * A line chart. `lines`: `[{label, color, values: [{t, v}]}]` sharing one x axis (unix
 * seconds, `xDomain`); points further apart than 1.5 steps leave a gap.
 */
export function lineChart({ title, lines, xDomain, step, format, onSelect, tooltip, yMin = 0 }) {
  const [t0, t1] = xDomain;
  const span = Math.max(1e-9, t1 - t0);
  const all = lines.flatMap((l) => l.values.map((p) => p.v)).filter(Number.isFinite);
  const yMax = niceMax(Math.max(yMin, ...all));
  const plotHeight = H - PAD_BOTTOM;
  const x = (t) => ((t - t0) / span) * W;
  const y = (v) => PAD_TOP + (1 - v / yMax) * (plotHeight - PAD_TOP);
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': title });
  svg.append(svgEl('line', { class: 'axis', x1: 0, x2: W, y1: plotHeight, y2: plotHeight }));
  for (const line of lines) {
    let d = '';
    let prev = null;
    for (const p of line.values) {
      if (!Number.isFinite(p.v)) { prev = null; continue; }
      const gap = prev === null || p.t - prev > step * 1.5;
      d += `${gap ? 'M' : 'L'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      prev = p.t;
    }
    // A lone point draws as a dot; a path of one M would be invisible.
    line.values.filter((p, i, a) => Number.isFinite(p.v)
      && !(i > 0 && p.t - a[i - 1].t <= step * 1.5) && !(i + 1 < a.length && a[i + 1].t - p.t <= step * 1.5))
      .forEach((p) => svg.append(dot(x(p.t), y(p.v), { stroke: line.color, 'stroke-width': 4 })));
    svg.append(svgEl('path', { d, stroke: line.color, class: 'line' }));
  }
  const wrap = document.createElement('div');
  wrap.className = 'chart';
  Object.assign(wrap.dataset, { from: t0, until: t1, step });
  const key = lines.length > 1
    ? lines.map((l) => `<span class="key" style="color:${l.color}">${escapeHtml(l.label)}</span>`).join(' ')
    : '';
  wrap.innerHTML = `<div class="chart-head"><span class="chart-title">${escapeHtml(title)} ${key}</span><span class="chart-max">max ${escapeHtml(format(Math.max(0, ...all)))}</span></div>`;
  wrap.append(svg);
  // A point stands for the step [t, t + step): the cursor is in the step of the last point at
  // or before it.
  const nearest = (values, t) => {
    let best = null;
    for (const p of values) if (p.t <= t && (!best || p.t > best.t)) best = p;
    return best && t - best.t < step ? best : null;
  };
  interact({
    wrap, svg, xDomain, tooltip, onSelect,
    snap: (t) => {
      const p = lines.map((l) => nearest(l.values, t)).find(Boolean);
      const from = p ? p.t : Math.floor(t / step) * step;
      return [from, from + step];
    },
    describe: (t) => {
      const rows = lines.map((l) => [l, nearest(l.values, t)]).filter(([, p]) => p);
      if (!rows.length) return null;
      return `<div class="tt-title">${escapeHtml(fmtTime(rows[0][1].t))}</div><table>${rows.map(([l, p]) => `<tr><th><span class="swatch" style="background:${l.color}"></span>${escapeHtml(l.label)}</th><td>${escapeHtml(format(p.v))}</td></tr>`).join('')}</table>${onSelect ? '<div class="muted">click: traces of this step · drag: a range</div>' : ''}`;
    },
  });
  return wrap;
}

/** A scatter plot of `points: [{t, v, error, id, label}]`; a click on a dot calls `onPick(id)`. */
export function scatterChart({ title, points, xDomain, format, onPick, onSelect, tooltip }) {
  const [t0, t1] = xDomain;
  const span = Math.max(1e-9, t1 - t0);
  const yMax = niceMax(Math.max(0, ...points.map((p) => p.v)));
  const plotHeight = H - PAD_BOTTOM;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': title });
  svg.append(svgEl('line', { class: 'axis', x1: 0, x2: W, y1: plotHeight, y2: plotHeight }));
  for (const p of points) {
    const mark = dot(((p.t - t0) / span) * W, PAD_TOP + (1 - p.v / yMax) * (plotHeight - PAD_TOP), {
      class: p.error ? 'dot error' : 'dot',
    });
    mark.dataset.id = p.id;
    mark.addEventListener('click', (event) => {
      event.stopPropagation();
      onPick(p.id);
    });
    mark.addEventListener('mousedown', (event) => event.stopPropagation());
    mark.append(svgEl('title'));
    mark.firstChild.textContent = `${p.label} · ${format(p.v)}`;
    svg.append(mark);
  }
  const wrap = document.createElement('div');
  wrap.className = 'chart scatter';
  wrap.innerHTML = `<div class="chart-head"><span class="chart-title">${escapeHtml(title)}</span><span class="chart-max">max ${escapeHtml(format(Math.max(0, ...points.map((p) => p.v))))}</span></div>`;
  wrap.append(svg);
  interact({
    wrap, svg, xDomain, tooltip: null, onSelect,
    snap: () => null, // a click off the dots selects nothing; a drag narrows the range
    describe: () => null,
  });
  return wrap;
}

/** The x-axis labels under a row of charts: the range's start and end. */
export function timeAxis([t0, t1]) {
  const sameDay = fmtTime(t0).slice(0, 10) === fmtTime(t1).slice(0, 10);
  const el = document.createElement('div');
  el.className = 'time-axis';
  el.innerHTML = `<span>${escapeHtml(fmtTime(t0))}</span><span>${escapeHtml(fmtTime(t1, !sameDay))}</span>`;
  return el;
}
