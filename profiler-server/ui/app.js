// Entry point: mounts the page the URL names and keeps the navigation in step with it.
// Start reading at router.js (URL state) and api.js (requests, auth), then a page-*.js.

import { getToken, signOut } from './api.js';
import { FlamePage } from './page-flame.js';
import { ServicesPage } from './page-services.js';
import { TracePage, TracesPage } from './page-traces.js';
import { currentRoute, href, onRouteChange } from './router.js';
import { emptyBox, h, setChildren } from './util.js';

const PAGES = {
  flamegraph: { title: 'Flame graph', nav: 'flamegraph', create: () => new FlamePage({ diff: false }) },
  diff: { title: 'Diff', nav: 'diff', create: () => new FlamePage({ diff: true }) },
  services: { title: 'Services', nav: 'services', create: () => new ServicesPage() },
  traces: { title: 'Traces', nav: 'traces', create: () => new TracesPage() },
  trace: { title: 'Trace', nav: 'traces', create: () => new TracePage() },
};
const NAV = ['flamegraph', 'diff', 'services', 'traces'];

const app = document.getElementById('app');
const nav = document.getElementById('nav');
let current = { page: null, view: null };

function renderNav(route) {
  // The time range follows the user from page to page.
  const range = { from: route.params.get('from'), until: route.params.get('until') };
  const active = PAGES[route.page]?.nav;
  setChildren(nav, NAV.map((page) => h('a', {
    href: href(page, range),
    class: page === active ? 'active' : '',
    'aria-current': page === active ? 'page' : false,
  }, PAGES[page].title)),
  getToken() && h('button', {
    type: 'button',
    class: 'ghost sign-out',
    onclick: () => {
      signOut();
      location.reload();
    },
  }, 'Sign out'));
}

function render(route) {
  const spec = PAGES[route.page];
  document.getElementById('tooltip').hidden = true;
  renderNav(route);
  if (!spec) {
    current = { page: null, view: null };
    app.replaceChildren(emptyBox(`No page "${route.page}"`, 'Pick one from the navigation above.'));
    return;
  }
  if (current.page !== route.page) {
    current = { page: route.page, view: spec.create() };
    app.replaceChildren(current.view.el);
  }
  document.title = `${spec.title} · profiler`;
  current.view.update(route);
}

onRouteChange(render);
window.addEventListener('profiler:signed-in', () => renderNav(currentRoute()));
render(currentRoute());
