// cinemesh dashboard: polls dashboard/state every 2 s and renders it. No framework, no build step.
// Everything from the network goes into the page as text (textContent), never as HTML.
'use strict';
(() => {
  const POLL_MS = 2000;
  const STALE_SECS = 180;
  const SEVERITY = { late: 0, refused: 1, behind: 2, waiting: 3, fetching: 4, idle: 5, complete: 6 };
  const LABELS = {
    late: '⚠ late', 'will-miss-deadline': '⚠ will miss deadline', refused: '⛔ refused',
    behind: '▼ behind', waiting: '… waiting', fetching: '↓ fetching', 'on-track': '↓ on track',
    complete: '✓ complete', seeding: '✓ seeding', idle: '– idle', 'not-targeted': '– not targeted',
    ok: '✓ ok', failed: '✗ failed', retrying: '↻ retrying', running: '… running', stale: '⌛ stale',
  };

  const view = { sort: 'state', dir: 1, filter: '', state: '', page: 0, pageSize: 50, detail: null };
  let current = null;
  let paused = false;
  let timer = null;
  let lastRenderMs = null;
  let online = null;
  let token = sessionStorage.getItem('cinemesh-token');

  const $ = (id) => document.getElementById(id);
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'title' || k === 'scope') e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const td = (content, cls) => el('td', { class: cls }, content);
  const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };

  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }
  const fmtRate = (r) => (r === null || r === undefined ? '—' : fmtBytes(r) + '/s');
  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return '—';
    s = Math.max(0, Math.round(s));
    if (s < 90) return s + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }
  const fmtTime = (unix) => (unix ? new Date(unix * 1000).toISOString().replace('T', ' ').slice(0, 16) : '—');
  const pct = (f) => (Math.floor(f * 1000) / 10).toFixed(1) + '%';

  function badge(state) {
    return el('span', { class: 'badge s-' + state, text: LABELS[state] || state });
  }
  function progressCell(fraction, label) {
    return el('td', {},
      el('progress', { max: 1, value: fraction, 'aria-label': label }),
      ' ', el('span', { class: 'pct', text: pct(fraction) }));
  }

  // ---- node summary -------------------------------------------------------------------------------
  function renderNode(s) {
    const n = s.node;
    setText($('node-title'), '· ' + n.role + (n.name && n.name !== n.role ? ': ' + n.name : ''));
    const fields = [
      ['Role', n.role], ['Name', n.name || '—'], ['Peer id', n.peer_id], ['ISP', n.isp || '—'],
      ['Disk free', fmtBytes(n.disk_free)], ['Peers', n.peers], ['Films', n.films],
      ['Down', fmtRate(s.node_rates && s.node_rates.down)], ['Up', fmtRate(s.node_rates && s.node_rates.up)],
      ['Updated', fmtTime(s.generated_at).slice(11) + ' UTC'],
    ];
    // On a cinema or superseeder, the node itself comes first; the fleet follows.
    const main = document.querySelector('main');
    if (n.role !== 'distributor' && main.firstElementChild !== $('local')) main.prepend($('local'));
    $('node-summary').replaceChildren(...fields.map(([k, v]) =>
      el('div', {}, el('dt', { text: k }), el('dd', { text: String(v) }))));
  }

  // ---- films --------------------------------------------------------------------------------------
  function renderFilms(s) {
    const rows = s.films.map((f) => el('tr', { 'data-content': f.content_id },
      el('th', { scope: 'row', text: f.title, title: f.content_id }),
      td(f.targets),
      td(f.deadline ? fmtTime(f.deadline) + ' UTC' : 'none'),
      td(fmtBytes(f.size), 'num'),
      td(f.reporting, 'num'),
      td(f.complete, 'num'),
      td(f.behind ? el('span', { class: 'badge s-behind', text: '▼ ' + f.behind }) : '0', 'num'),
      td(f.late ? el('span', { class: 'badge s-late', text: '⚠ ' + f.late }) : '0', 'num'),
      td(f.refused ? el('span', { class: 'badge s-refused', text: '⛔ ' + f.refused }) : '0', 'num'),
      td(el('code', { text: f.withdraw_command }))));
    $('films-table').tBodies[0].replaceChildren(...rows);
    $('films-empty').hidden = s.films.length > 0;
  }

  // ---- cinemas ------------------------------------------------------------------------------------
  const sortKeys = {
    name: (c) => (c.name || c.peer_id).toLowerCase(),
    isp: (c) => (c.isp || '').toLowerCase(),
    state: (c) => SEVERITY[c.state] ?? 9,
    progress: (c) => c.progress,
    rate: (c) => c.rate,
    eta: (c) => (c.eta_secs === null ? Infinity : c.eta_secs),
    late: (c) => (c.late ? 0 : 1),
    reachability: (c) => c.reachability || '~',
    disk: (c) => (c.disk_free === null ? -1 : c.disk_free),
    age: (c) => c.report_age_secs,
    hook: (c) => c.hook || '~',
  };

  function visibleCinemas(s) {
    const q = view.filter.trim().toLowerCase();
    let list = s.cinemas.filter((c) => (!view.state || c.state === view.state) &&
      (!q || [c.name, c.peer_id, c.isp].some((t) => t && t.toLowerCase().includes(q))));
    const key = sortKeys[view.sort];
    const name = sortKeys.name;
    // Names sort naturally ("Cinema 9" before "Cinema 10"); ties go by name, ascending.
    const cmp = (a, b) => (typeof a === 'string' ? collator.compare(a, b) : a < b ? -1 : a > b ? 1 : 0);
    list = list.map((c) => [key(c), name(c), c]);
    list.sort((a, b) => view.dir * cmp(a[0], b[0]) || cmp(a[1], b[1]));
    return list.map((x) => x[2]);
  }

  function cinemaRow(c) {
    const label = c.name || c.peer_id.slice(0, 16) + '…';
    const stale = c.report_age_secs > STALE_SECS;
    return el('tr', { 'data-peer': c.peer_id, 'data-state': c.state, 'data-late': String(c.late) },
      el('th', { scope: 'row' },
        el('button', { type: 'button', class: 'link', 'data-key': c.peer_id, text: label,
          title: c.peer_id, 'aria-label': 'Details of ' + label }),
        c.role !== 'cinema' ? el('span', { class: 'muted', text: ' (' + c.role + ')' }) : null),
      td(c.isp || '—'),
      td(badge(c.state)),
      c.state === 'idle' ? td('— nothing targeted', 'muted') : progressCell(c.progress, 'Progress of ' + label),
      td(fmtRate(c.rate), 'num'),
      td(fmtDuration(c.eta_secs), 'num'),
      td(c.late ? badge('late') : 'no'),
      td(c.reachability || '—'),
      td(fmtBytes(c.disk_free), 'num'),
      td(stale ? el('span', { class: 'badge s-stale', text: '⌛ ' + fmtDuration(c.report_age_secs) })
        : fmtDuration(c.report_age_secs), 'num'),
      td(c.hook || '—'));
  }

  function renderCinemas(s) {
    const list = visibleCinemas(s);
    const pages = Math.max(1, Math.ceil(list.length / view.pageSize));
    view.page = Math.min(view.page, pages - 1);
    const start = view.page * view.pageSize;
    const shown = list.slice(start, start + view.pageSize);
    const tbody = $('cinemas-table').tBodies[0];
    const focused = tbody.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    tbody.replaceChildren(...shown.map(cinemaRow));
    if (focused) {
      const again = tbody.querySelector('button[data-key="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
    setText($('cinema-count'), list.length + ' of ' + s.cinemas.length + ' nodes shown');
    setText($('page-info'), 'Page ' + (view.page + 1) + ' of ' + pages);
    $('prev-page').disabled = view.page === 0;
    $('next-page').disabled = view.page >= pages - 1;
    for (const th of document.querySelectorAll('#cinemas-table th[data-sort]')) {
      const sorted = th.dataset.sort === view.sort;
      if (sorted) th.setAttribute('aria-sort', view.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  function renderDetail(s) {
    const box = $('detail');
    const c = view.detail && s.cinemas.find((x) => x.peer_id === view.detail);
    if (!c) { box.hidden = true; return; }
    box.hidden = false;
    setText($('detail-h'), (c.name || c.peer_id) + ' — details');
    const fields = [
      ['Peer id', c.peer_id], ['Role', c.role], ['ISP', c.isp || '—'], ['State', LABELS[c.state] || c.state],
      ['Progress', pct(c.progress)], ['Rate', fmtRate(c.rate)], ['ETA', fmtDuration(c.eta_secs)],
      ['Late', c.late ? 'yes' : 'no'], ['Reachability', c.reachability || '—'],
      ['Disk free', fmtBytes(c.disk_free)], ['Report age', fmtDuration(c.report_age_secs)], ['Hook', c.hook || '—'],
    ];
    $('detail-fields').replaceChildren(...fields.map(([k, v]) =>
      el('div', {}, el('dt', { text: k }), el('dd', { text: String(v) }))));
    $('detail-films').tBodies[0].replaceChildren(...c.films.map((f) => el('tr', {},
      el('th', { scope: 'row', text: f.title, title: f.content_id }),
      td(badge(f.state)),
      progressCell(f.have / Math.max(1, f.total), 'Progress of ' + f.title),
      td(fmtRate(f.rate), 'num'),
      td(fmtDuration(f.eta_secs), 'num'))));
    setText($('detail-revoke'), c.revoke_command);
  }

  // ---- mesh ---------------------------------------------------------------------------------------
  function renderMesh(s) {
    const m = s.mesh;
    const total = m.inside_bytes + m.inter_bytes;
    setText($('mesh-split'), total === 0 ? 'No content bytes reported yet.'
      : 'Inside one ISP: ' + fmtBytes(m.inside_bytes) + ' (' + pct(m.inside_bytes / total) + ') · between ISPs: '
        + fmtBytes(m.inter_bytes) + ' (' + pct(m.inter_bytes / total) + ')');
    $('pairs-table').tBodies[0].replaceChildren(...m.pairs.slice(0, 200).map((p) => el('tr', {},
      td(p.from), td(p.to), td(fmtBytes(p.bytes), 'num'),
      td(p.inside ? el('span', { class: 'badge s-ok', text: '● inside ISP' })
        : el('span', { class: 'badge s-behind', text: '⇄ inter-ISP' })))));
    renderEgress(m.egress);
  }

  function renderEgress(samples) {
    const svg = $('egress-chart');
    const ns = 'http://www.w3.org/2000/svg';
    const W = 400, H = 160;
    svg.replaceChildren();
    if (samples.length === 0) { setText($('egress-desc'), 'No sample yet (one every 5 s).'); return; }
    const t0 = samples[0].at, t1 = Math.max(t0 + 1, samples[samples.length - 1].at);
    const max = Math.max(1, ...samples.map((x) => Math.max(x.superseeders, x.distributors)));
    const line = (key, cls) => {
      const p = document.createElementNS(ns, 'polyline');
      p.setAttribute('class', cls);
      p.setAttribute('points', samples.map((x) =>
        ((x.at - t0) / (t1 - t0) * W).toFixed(1) + ',' + (H - x[key] / max * (H - 10)).toFixed(1)).join(' '));
      svg.append(p);
    };
    const axis = document.createElementNS(ns, 'line');
    for (const [k, v] of Object.entries({ x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'axis' })) axis.setAttribute(k, v);
    svg.append(axis);
    line('superseeders', 'super');
    line('distributors', 'dist');
    const last = samples[samples.length - 1];
    setText($('egress-desc'), 'Solid line: superseeders, now ' + fmtRate(last.superseeders) +
      '; dashed line: distributors, now ' + fmtRate(last.distributors) + '. Peak ' + fmtRate(max) +
      ' over the last ' + fmtDuration(t1 - t0) + '.');
  }

  // ---- catalogue log --------------------------------------------------------------------------------
  function renderLog(s) {
    $('log-table').tBodies[0].replaceChildren(...s.log.map((e) => el('tr', {},
      td(fmtTime(e.issued_at)), td(e.kind), td(e.subject), td(e.detail),
      td(el('code', { text: e.key.slice(0, 14) + '…', title: e.key })), td(e.seq, 'num'))));
  }

  // ---- this node ----------------------------------------------------------------------------------
  function renderLocal(s) {
    $('local-films').tBodies[0].replaceChildren(...s.local_films.map((f) => {
      const state = f.state.startsWith('refused') ? 'refused' : f.state;
      return el('tr', { 'data-content': f.content_id },
        el('th', { scope: 'row', text: f.title, title: f.content_id }),
        td(el('span', { class: 'badge s-' + state, text: (LABELS[state] || state) + (state === 'refused' ? ': ' + f.state.slice(9) : '') })),
        progressCell(f.have_chunks / Math.max(1, f.chunks), 'Local progress of ' + f.title),
        td(fmtBytes(f.size), 'num'), td(f.path || '—'));
    }));
    $('local-peers').tBodies[0].replaceChildren(...s.peers.map((p) => el('tr', {},
      el('th', { scope: 'row', text: p.name || p.peer_id.slice(0, 16) + '…', title: p.peer_id }),
      td(p.role || '—'), td(p.isp || '—'), td(Math.round(p.load * 100) + '%', 'num'),
      td(fmtBytes(p.bytes_up), 'num'), td(fmtBytes(p.bytes_down), 'num'), td(p.address || '—'))));
    const hooks = s.hooks.map((h) => el('tr', {},
      el('th', { scope: 'row', text: h.title }), td(badge(h.state)), td(h.attempts, 'num'),
      td(h.status || '—'), td(el('code', { text: h.output || '' }))));
    if (hooks.length === 0) {
      hooks.push(el('tr', {}, el('td', { colSpan: 5, class: 'muted', text: 'No hook run yet (hooks.on_complete).' })));
    }
    $('local-hooks').tBodies[0].replaceChildren(...hooks);
  }

  function render(s) {
    const t0 = performance.now();
    current = s;
    renderNode(s);
    renderFilms(s);
    renderCinemas(s);
    renderDetail(s);
    renderMesh(s);
    renderLog(s);
    renderLocal(s);
    lastRenderMs = performance.now() - t0;
    document.body.dataset.renderMs = lastRenderMs.toFixed(2);
    return lastRenderMs;
  }

  function setOnline(ok, text) {
    if (online === ok && ok) return;
    online = ok;
    const live = $('live');
    live.classList.toggle('error', !ok);
    setText(live, text);
  }

  async function poll() {
    timer = null;
    if (paused) return;
    try {
      const headers = token ? { Authorization: 'Bearer ' + token } : {};
      const r = await fetch('dashboard/state', { headers, cache: 'no-store' });
      if (r.status === 401) {
        $('token-form').hidden = false;
        setOnline(false, 'This API needs its token: enter it below.');
        return; // polling resumes when a token is given
      }
      if (!r.ok) throw new Error('the daemon answered ' + r.status);
      const s = await r.json();
      $('token-form').hidden = true;
      setOnline(true, 'Live: updated every 2 s.');
      if (!paused) render(s);
    } catch (e) {
      setOnline(false, 'Cannot reach the daemon (' + e.message + '); retrying every 2 s.');
    }
    if (!paused && timer === null) timer = setTimeout(poll, POLL_MS);
  }

  function rerender() { if (current) renderCinemas(current); }

  function wire() {
    $('filter').addEventListener('input', (e) => { view.filter = e.target.value; view.page = 0; rerender(); });
    $('state-filter').addEventListener('change', (e) => { view.state = e.target.value; view.page = 0; rerender(); });
    $('page-size').addEventListener('change', (e) => { view.pageSize = Number(e.target.value); view.page = 0; rerender(); });
    $('prev-page').addEventListener('click', () => { view.page = Math.max(0, view.page - 1); rerender(); });
    $('next-page').addEventListener('click', () => { view.page += 1; rerender(); });
    for (const th of document.querySelectorAll('#cinemas-table th[data-sort]')) {
      th.querySelector('button').addEventListener('click', () => {
        if (view.sort === th.dataset.sort) view.dir = -view.dir;
        else { view.sort = th.dataset.sort; view.dir = 1; }
        rerender();
      });
    }
    $('cinemas-table').tBodies[0].addEventListener('click', (e) => {
      const b = e.target.closest('button[data-key]');
      if (!b || !current) return;
      view.detail = b.dataset.key;
      renderDetail(current);
      $('detail-h').focus();
    });
    const close = () => {
      const peer = view.detail;
      view.detail = null;
      $('detail').hidden = true;
      const b = peer && document.querySelector('#cinemas-table button[data-key="' + CSS.escape(peer) + '"]');
      if (b) b.focus();
    };
    $('detail-close').addEventListener('click', close);
    $('detail').addEventListener('keydown', (e) => { if (e.key === 'Escape') close(); });
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      token = $('token-input').value.trim();
      sessionStorage.setItem('cinemesh-token', token);
      if (timer === null) poll();
    });
  }

  // For tests and the render benchmark: render a given state, stop and restart polling.
  window.cinemeshDashboard = {
    render,
    pause() { paused = true; if (timer !== null) { clearTimeout(timer); timer = null; } },
    resume() { paused = false; if (timer === null) poll(); },
    get lastRenderMs() { return lastRenderMs; },
    get state() { return current; },
  };

  wire();
  poll();
})();
