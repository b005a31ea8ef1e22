// Label selectors (`{service_name="api",comm=~"ng.*"}`) and the filter bar that builds them from
// the service list and the label/value pickers.

import { api } from './api.js';
import { h } from './util.js';

const OPS = ['=', '!=', '=~', '!~'];

/** Parses a selector into matchers `{name, op, value}`; null when it is not one we can edit. */
export function parseSelector(query) {
  const s = (query || '').trim();
  if (s === '' || s === '{}') return [];
  let i = 0;
  const ws = () => { while (i < s.length && /\s/.test(s[i])) i++; };
  ws();
  if (s[i++] !== '{') return null;
  const matchers = [];
  for (;;) {
    ws();
    if (s[i] === '}') { i++; break; }
    const name = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(s.slice(i));
    if (!name) return null;
    i += name[0].length;
    ws();
    const op = OPS.slice().sort((a, b) => b.length - a.length).find((o) => s.startsWith(o, i));
    if (!op) return null;
    i += op.length;
    ws();
    const quote = s[i];
    if (quote !== '"' && quote !== "'") return null;
    i++;
    let value = '';
    while (i < s.length && s[i] !== quote) {
      if (s[i] === '\\' && i + 1 < s.length) {
        const next = s[i + 1];
        value += next === 'n' ? '\n' : next === 't' ? '\t' : next;
        i += 2;
      } else {
        value += s[i++];
      }
    }
    if (s[i++] !== quote) return null;
    matchers.push({ name: name[0], op, value });
    ws();
    if (s[i] === ',') i++;
    else if (s[i] === '}') { i++; break; }
    else return null;
  }
  ws();
  return i === s.length ? matchers : null;
}

const quote = (v) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;

export function formatSelector(matchers) {
  if (!matchers.length) return '';
  return `{${matchers.map((m) => `${m.name}${m.op}${quote(m.value)}`).join(',')}}`;
}

/** The service a selector pins with `service_name="..."`, if any. */
export function serviceOf(query) {
  const matchers = parseSelector(query) || [];
  return matchers.find((m) => m.name === 'service_name' && m.op === '=')?.value || '';
}

/** The selector with `service_name` set to `service` (or removed when empty). */
export function withService(query, service) {
  const matchers = (parseSelector(query) || []).filter((m) => !(m.name === 'service_name' && m.op === '='));
  if (service) matchers.unshift({ name: 'service_name', op: '=', value: service });
  return formatSelector(matchers);
}

function fillSelect(select, values, current, emptyText) {
  select.replaceChildren(
    h('option', { value: '' }, emptyText),
    ...values.map((v) => h('option', { value: v, selected: v === current }, v)),
  );
  if (current && !values.includes(current)) {
    select.append(h('option', { value: current, selected: true }, `${current} (no data in range)`));
  }
}

/**
 * The filter bar: service picker, one chip per other matcher, an "add filter" editor with label
 * and value pickers, and the raw selector. `onChange(query)` gets the new selector.
 */
export function labelFilter({ query, range, onChange }) {
  const matchers = parseSelector(query);
  const service = serviceOf(query);
  const bar = h('span', { class: 'labelfilter' });

  const serviceSelect = h('select', {
    'aria-label': 'Service',
    name: 'service',
    onchange: () => onChange(withService(query, serviceSelect.value)),
  }, h('option', { value: service }, service || 'All services'));
  api('services', range).then(
    (body) => fillSelect(serviceSelect, body.services.map((s) => s.name), service, 'All services'),
    (err) => { serviceSelect.title = `cannot load services: ${err.message}`; },
  );
  bar.append(h('span', { class: 'field-label' }, 'Service'), serviceSelect);

  if (matchers) {
    matchers.forEach((m, index) => {
      if (m.name === 'service_name' && m.op === '=') return;
      bar.append(h('span', { class: 'chip' }, `${m.name} ${m.op} "${m.value}"`,
        h('button', {
          type: 'button',
          class: 'chip-remove',
          title: 'Remove this filter',
          'aria-label': `Remove filter ${m.name}`,
          onclick: () => onChange(formatSelector(matchers.filter((_, i) => i !== index))),
        }, '×')));
    });
    bar.append(addFilterEditor({ query, matchers, range, onChange }));
  }

  const raw = h('input', {
    type: 'text',
    class: 'query-input mono',
    name: 'query',
    value: query,
    placeholder: '{service_name="api",comm="nginx"}',
    spellcheck: 'false',
    'aria-label': 'Label selector',
    title: 'Label selector: =, !=, =~, !~ (press Enter to apply)',
    onkeydown: (event) => {
      if (event.key === 'Enter') onChange(raw.value.trim());
    },
  });
  bar.append(raw);
  return bar;
}

function addFilterEditor({ query, matchers, range, onChange }) {
  const labelSelect = h('select', { 'aria-label': 'Label name', name: 'label' }, h('option', { value: '' }, 'label…'));
  const opSelect = h('select', { 'aria-label': 'Operator' }, OPS.map((op) => h('option', { value: op }, op)));
  const listId = `label-values-${Math.random().toString(36).slice(2)}`;
  const values = h('datalist', { id: listId });
  const valueInput = h('input', {
    type: 'text', name: 'label-value', list: listId, placeholder: 'value', 'aria-label': 'Label value',
  });
  const add = () => {
    if (!labelSelect.value) return;
    onChange(formatSelector([...matchers, { name: labelSelect.value, op: opSelect.value, value: valueInput.value }]));
  };
  valueInput.addEventListener('keydown', (event) => { if (event.key === 'Enter') add(); });
  labelSelect.addEventListener('change', () => {
    values.replaceChildren();
    valueInput.value = '';
    if (!labelSelect.value) return;
    api(`labels/${encodeURIComponent(labelSelect.value)}/values`, { ...range, query }).then(
      (body) => values.replaceChildren(...body.values.map((v) => h('option', { value: v }))),
      () => {},
    );
    valueInput.focus();
  });
  const editor = h('span', { class: 'add-filter', hidden: true },
    labelSelect, opSelect, valueInput, values, h('button', { type: 'button', onclick: add }, 'Add'));
  let loaded = false;
  const open = h('button', {
    type: 'button',
    class: 'ghost',
    onclick: () => {
      editor.hidden = !editor.hidden;
      if (loaded || editor.hidden) return;
      loaded = true;
      api('labels', { ...range, query }).then(
        (body) => fillSelect(labelSelect, body.labels.filter((l) => l !== 'service_name'), '', 'label…'),
        (err) => { labelSelect.title = `cannot load labels: ${err.message}`; },
      );
    },
  }, '+ Filter');
  return h('span', {}, open, editor);
}
