// The flame graph (icicle layout, root on top, as Pyroscope draws it) of a `/api/v1/flamegraph`
// or `/api/v1/diff` tree, rendered as absolutely positioned DOM boxes: with at most `max_nodes`
// (2048) nodes that is fast, and every frame stays inspectable and testable.
//
// Click a frame to zoom into it (the page keeps the zoom in the URL), hover for a tooltip, and
// `search` highlights matching frames. Kernel frames get blue tones, user frames warm ones; in
// diff mode frames are red when their share grew and green when it shrank.

import { escapeHtml, fmtCpu, fmtInt, fmtPct, hashString } from './util.js';

const ROW_PX = 20;
const MIN_BOX_PX = 0.5;
const MIN_LABEL_PX = 24;

/** Flattens the tree: parents before children, children in the server's (name) order. */
function flatten(root) {
  const nodes = [];
  const stack = [[root, -1, 0]];
  while (stack.length) {
    const [n, parent, depth] = stack.pop();
    const index = nodes.length;
    const node = {
      name: String(n.name ?? ''),
      value: Number(n.value) || 0,
      self: Number(n.self) || 0,
      baseValue: Number(n.base_value) || 0,
      baseSelf: Number(n.base_self) || 0,
      kernel: Boolean(n.kernel),
      parent,
      depth,
      children: [],
    };
    nodes.push(node);
    if (parent >= 0) nodes[parent].children.push(index);
    const kids = Array.isArray(n.children) ? n.children : [];
    // Pushed in reverse so they pop, and are appended to `children`, in the server's order.
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], index, depth + 1]);
  }
  return nodes;
}

/** The colour of a frame outside diff mode. */
function frameColor(node, index) {
  if (index === 0) return 'hsl(220, 8%, 78%)';
  const hash = hashString(node.name);
  if (node.kernel) return `hsl(${200 + (hash % 25)}, 60%, ${66 + ((hash >>> 8) % 10)}%)`;
  if (node.name.startsWith('[')) return 'hsl(0, 0%, 80%)'; // [unknown], [stack lost: ...]
  return `hsl(${(hash % 50) + 5}, ${78 + ((hash >>> 8) % 15)}%, ${60 + ((hash >>> 16) % 10)}%)`;
}

/** Relative change of a frame's share between base and comparison, clamped to -1..1. */
export function shareChange(node, total, baseTotal) {
  const share = total ? node.value / total : 0;
  const baseShare = baseTotal ? node.baseValue / baseTotal : 0;
  if (baseShare === 0) return share > 0 ? 1 : 0;
  return Math.max(-1, Math.min(1, (share - baseShare) / baseShare));
}

function diffColor(change) {
  const intensity = Math.min(1, Math.abs(change));
  if (intensity < 0.02) return 'hsl(220, 8%, 82%)';
  const lightness = 88 - 36 * intensity;
  return change > 0 ? `hsl(0, 78%, ${lightness}%)` : `hsl(130, 50%, ${lightness}%)`;
}

export class FlameGraph {
  /** `onZoom(path)` is called with the clicked frame's path ("" for the root). */
  constructor({ onZoom, tooltip }) {
    this.onZoom = onZoom;
    this.tooltip = tooltip;
    this.el = document.createElement('div');
    this.el.className = 'flamegraph';
    this.el.addEventListener('click', (event) => {
      const i = this.indexAt(event);
      if (i !== null) this.onZoom(this.pathOf(i));
    });
    this.el.addEventListener('mousemove', (event) => this.showTooltip(event));
    this.el.addEventListener('mouseleave', () => this.hideTooltip());
    this.lastWidth = 0;
    new ResizeObserver(() => {
      const width = this.el.clientWidth;
      if (width && Math.abs(width - this.lastWidth) > 1) this.render();
    }).observe(this.el);
  }

  /** Sets the tree. `diff`: the response of `/diff` (nodes carry base_value/base_self). */
  setData(data, { diff = false } = {}) {
    this.data = data;
    this.diff = diff;
    this.total = Number(data.total) || 0;
    this.baseTotal = Number(data.base_total) || 0;
    this.nodes = flatten(data.root || { name: 'total', value: 0 });
    for (const node of this.nodes) {
      node.weight = diff
        ? (this.total ? node.value / this.total : 0) + (this.baseTotal ? node.baseValue / this.baseTotal : 0)
        : node.value;
    }
    this.focus = 0;
    this.search = '';
  }

  /** The frame path from the root, folded-stack style: "main;work;burn". */
  pathOf(index) {
    const names = [];
    for (let i = index; i > 0; i = this.nodes[i].parent) names.push(this.nodes[i].name);
    return names.reverse().join(';');
  }

  /** Zooms to the frame at `path`; returns false (and shows the root) when there is none. */
  setFocus(path) {
    this.focus = 0;
    if (!path) return true;
    for (const name of path.split(';')) {
      const next = this.nodes[this.focus].children.find((c) => this.nodes[c].name === name);
      if (next === undefined) {
        this.focus = 0;
        return false;
      }
      this.focus = next;
    }
    return true;
  }

  /**
   * Highlights frames whose name contains `term` (case-insensitive). Returns the matched share:
   * the samples of matching frames not below another match, over the total (and the base's).
   */
  setSearch(term) {
    this.search = (term || '').toLowerCase();
    const result = { frames: 0, value: 0, baseValue: 0 };
    if (!this.search) return null;
    const matched = new Uint8Array(this.nodes.length);
    this.nodes.forEach((node, i) => {
      if (i > 0 && node.name.toLowerCase().includes(this.search)) {
        matched[i] = 1;
        result.frames++;
        let covered = false;
        for (let p = node.parent; p > 0; p = this.nodes[p].parent) if (matched[p]) covered = true;
        if (!covered) {
          result.value += node.value;
          result.baseValue += node.baseValue;
        }
      }
    });
    this.matched = matched;
    result.share = this.total ? result.value / this.total : 0;
    result.baseShare = this.baseTotal ? result.baseValue / this.baseTotal : 0;
    return result;
  }

  /** Draws the current zoom and search. */
  render() {
    const width = this.el.clientWidth;
    this.lastWidth = width;
    if (!this.nodes || !width) return;
    const nodes = this.nodes;
    const focus = nodes[this.focus];
    const parts = [];
    let maxDepth = 0;
    const emit = (i, x, w, ancestor) => {
      const node = nodes[i];
      const px = w * width;
      const classes = ['fn'];
      if (node.kernel) classes.push('kernel');
      if (ancestor) classes.push('ancestor');
      if (i === this.focus && i !== 0) classes.push('focused');
      let background = this.diff ? diffColor(shareChange(node, this.total, this.baseTotal)) : frameColor(node, i);
      if (this.search && i > 0) {
        if (this.matched[i]) classes.push('match');
        else classes.push('dim');
        background = '';
      }
      if (px < MIN_LABEL_PX) classes.push('narrow');
      const label = i === 0 ? `total · ${fmtInt(this.total)} samples` : node.name;
      parts.push(`<div class="${classes.join(' ')}" data-i="${i}" data-name="${escapeHtml(node.name)}" style="left:${(x * 100).toFixed(4)}%;width:${(w * 100).toFixed(4)}%;top:${node.depth * ROW_PX}px${background ? `;background:${background}` : ''}">${px >= MIN_LABEL_PX ? escapeHtml(label) : ''}</div>`);
      if (node.depth > maxDepth) maxDepth = node.depth;
    };
    // Ancestors of the zoomed frame span the full width, as in Pyroscope.
    const ancestors = [];
    for (let p = focus.parent; p >= 0; p = nodes[p].parent) ancestors.push(p);
    for (const a of ancestors.reverse()) emit(a, 0, 1, true);
    const stack = [[this.focus, 0, 1]];
    while (stack.length) {
      const [i, x, w] = stack.pop();
      emit(i, x, w, false);
      const scale = nodes[i].weight ? w / nodes[i].weight : 0;
      let cx = x;
      for (const c of nodes[i].children) {
        const cw = nodes[c].weight * scale;
        if (cw * width >= MIN_BOX_PX) stack.push([c, cx, cw]);
        cx += cw;
      }
    }
    this.el.style.height = `${(maxDepth + 1) * ROW_PX}px`;
    this.el.innerHTML = parts.join('');
  }

  indexAt(event) {
    const box = event.target.closest('.fn');
    return box ? Number(box.dataset.i) : null;
  }

  showTooltip(event) {
    const i = this.indexAt(event);
    if (i === null) return this.hideTooltip();
    const node = this.nodes[i];
    const period = this.data.period_ns;
    const rows = [];
    if (this.diff) {
      const change = this.baseTotal && node.baseValue
        ? (node.value / this.total - node.baseValue / this.baseTotal) / (node.baseValue / this.baseTotal)
        : (node.value ? Infinity : 0);
      rows.push(['Base', `${fmtInt(node.baseValue)} samples (${fmtPct(this.baseTotal ? node.baseValue / this.baseTotal : 0)}), self ${fmtInt(node.baseSelf)}`]);
      rows.push(['Comparison', `${fmtInt(node.value)} samples (${fmtPct(this.total ? node.value / this.total : 0)}), self ${fmtInt(node.self)}`]);
      rows.push(['Change', change === Infinity ? 'new' : `${change > 0 ? '+' : ''}${fmtPct(change)}`]);
    } else {
      rows.push(['Samples', `${fmtInt(node.value)} (${fmtPct(this.total ? node.value / this.total : 0)} of total)`]);
      rows.push(['Self', `${fmtInt(node.self)} (${fmtPct(this.total ? node.self / this.total : 0)})`]);
      rows.push(['CPU time', fmtCpu(node.value, period)]);
      if (this.focus !== 0 && this.inFocus(i)) {
        rows.push(['Of zoomed', fmtPct(this.nodes[this.focus].value ? node.value / this.nodes[this.focus].value : 0)]);
      }
    }
    if (node.kernel) rows.push(['Frame', 'kernel']);
    this.tooltip.innerHTML = `<div class="tt-title">${escapeHtml(i === 0 ? 'total' : node.name)}</div><table>${rows
      .map(([k, v]) => `<tr><th>${k}</th><td>${escapeHtml(v)}</td></tr>`)
      .join('')}</table>`;
    this.tooltip.hidden = false;
    const pad = 14;
    const rect = this.tooltip.getBoundingClientRect();
    let left = event.clientX + pad;
    let top = event.clientY + pad;
    if (left + rect.width > window.innerWidth - 4) left = event.clientX - rect.width - pad;
    if (top + rect.height > window.innerHeight - 4) top = event.clientY - rect.height - pad;
    this.tooltip.style.left = `${Math.max(4, left)}px`;
    this.tooltip.style.top = `${Math.max(4, top)}px`;
  }

  /** Whether frame `i` is the zoomed frame or below it. */
  inFocus(i) {
    for (let p = i; p >= 0; p = this.nodes[p].parent) if (p === this.focus) return true;
    return false;
  }

  hideTooltip() {
    this.tooltip.hidden = true;
  }
}

