// Projector console: one page over the host's HTTP API (docs/openapi.yaml).
//
// No framework and no build step. Nothing inline in index.html, so the page
// works under `Content-Security-Policy: default-src 'self'`. Every text that
// comes from the server is set with textContent (through `h`), never innerHTML.
'use strict';

(function () {
  // ------------------------------------------------------------- settings
  const TOKEN_KEY = 'projector.console.token';
  const COLLECTIONS_KEY = 'projector.console.collections';
  const POLL_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const SPARK_POINTS = HISTORY_MS / POLL_MS;
  const EXAMPLE_EVENTS = JSON.stringify([
    { stream: 'user-1', type: 'UserRegistered', data: { email: 'ada@example.com', username: 'ada' }, metadata: {} },
    { stream: 'user-1', type: 'UserRenamed', data: { username: 'ada-l' }, metadata: {} },
  ], null, 2);
  const STATE_HELP = {
    'catching-up': 'reading history towards the head of $all',
    running: 'at the head, applying live events',
    faulted: 'stopped at an event the module failed on (see the fault)',
    stopped: 'not following events; queries are still answered',
    retrying: 'held up by something outside the module; retried with backoff, nothing lost',
  };

  // ------------------------------------------------------------- DOM helpers
  const $ = (selector, root) => (root || document).querySelector(selector);
  const enc = encodeURIComponent;

  /** An element: attrs (class, text, testid, mutating, on: {event: fn}, properties, attributes) and children. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else if (key === 'testid') el.dataset.testid = value;
      else if (key === 'mutating') el.dataset.mutating = '1';
      else if (key === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
      else if (['value', 'checked', 'disabled', 'hidden', 'selected'].includes(key)) el[key] = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child !== null && child !== undefined && child !== false) el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    return el;
  }

  /** Sets a text only when it changed (no needless DOM mutations while polling). */
  function setText(el, text) {
    const value = text === null || text === undefined ? '' : String(text);
    if (el.textContent !== value) el.textContent = value;
  }

  /** A labelled form field, with an optional help line tied to the control. */
  function field(label, control, help) {
    if (help) control.setAttribute('aria-describedby', control.id + '-help');
    return h('div', { class: 'field' }, h('label', { for: control.id }, label), control,
      help ? h('p', { class: 'help', id: control.id + '-help' }, help) : null);
  }

  function selectOf(id, options, value) {
    return h('select', { id, testid: id }, options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
  }

  function badge(state) {
    const el = h('span', { class: 'badge' });
    setBadge(el, state);
    return el;
  }

  function setBadge(el, state) {
    setText(el, state || 'unknown');
    const cls = 'badge state-' + (state || 'unknown');
    if (el.className !== cls) el.className = cls;
    el.title = STATE_HELP[state] || '';
  }

  function jsonBlock(value) {
    return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
  }

  // ------------------------------------------------------------- formatting
  function fmtInt(n) {
    return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return '—';
    if (s < 10) return s.toFixed(s < 1 ? 2 : 1) + ' s';
    if (s < 60) return Math.round(s) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + Math.round(s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function fmtRate(r) {
    if (r === null || r === undefined || !Number.isFinite(r)) return '—';
    return (r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1)) + ' ev/s';
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return '—';
    if (b < 1024) return b + ' B';
    if (b < 1 << 20) return (b / 1024).toFixed(1) + ' KiB';
    return (b / (1 << 20)).toFixed(1) + ' MiB';
  }

  // ------------------------------------------------------------- token
  let memoryToken = '';

  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return memoryToken; }
  }

  function storeToken(token) {
    memoryToken = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage refused: the in-memory copy serves this page */ }
  }

  /** Disables every mutating control without a token, and shows the read-only hint. */
  function applyTokenState() {
    const has = Boolean(getToken());
    document.body.classList.toggle('no-token', !has);
    $('#readonly-hint').hidden = has;
    setText($('#token-state'), has ? 'token set' : 'no token');
    document.querySelectorAll('[data-mutating]').forEach((el) => {
      if (!el.dataset.busy) el.disabled = !has;
      el.title = has ? '' : 'Needs the admin token: enter it in “Access token” at the top.';
    });
  }

  function setBusy(button, busy) {
    if (busy) button.dataset.busy = '1'; else delete button.dataset.busy;
    button.disabled = busy || (button.dataset.mutating ? !getToken() : false);
    button.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  function setupToken() {
    const input = $('#token-input');
    input.value = getToken();
    $('#token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      storeToken(input.value.trim());
      flash(getToken() ? 'Token saved for this browser tab.' : 'Token cleared: the console is read-only.');
      tokenChanged();
    });
    $('#token-clear').addEventListener('click', () => {
      input.value = '';
      storeToken('');
      flash('Token forgotten: the console is read-only.');
      tokenChanged();
    });
  }

  /** Enables or disables the controls; reloads the page only if it shows an error (a refused read), keeping typed input otherwise. */
  function tokenChanged() {
    applyTokenState();
    if ([...document.querySelectorAll('#main [data-testid="page-error"]')].some((el) => !el.hidden)) route();
  }

  // ------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, code, message, extra) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.code = code;
      this.fields = (extra && extra.fields) || null;
      this.retryAfter = (extra && extra.retryAfter) || null;
    }
  }

  function toQuery(query) {
    if (!query) return '';
    if (query instanceof URLSearchParams) return query.toString();
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== '') params.append(key, String(value));
    }
    return params.toString();
  }

  /**
   * The one way to call the host: adds the token, sends JSON (or raw bytes
   * with `contentType`), and turns an error answer `{"error": {"code",
   * "message"}}` into an ApiError carrying the server's message.
   */
  async function api(method, path, options) {
    const opts = options || {};
    const headers = { Accept: 'application/json' };
    const token = getToken();
    if (token) headers.Authorization = 'Bearer ' + token;
    let body = opts.body;
    if (body instanceof ArrayBuffer || body instanceof Blob) {
      headers['Content-Type'] = opts.contentType || 'application/octet-stream';
    } else if (body !== undefined) {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    const query = toQuery(opts.query);
    let response;
    try {
      response = await fetch(path + (query ? '?' + query : ''), { method, headers, body, cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      throw new ApiError(0, 'network', 'The host did not answer (' + (e.message || 'network error') + '). Is it running?');
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = text; }
    }
    if (!response.ok) {
      const error = data && typeof data === 'object' && data.error ? data.error : {};
      const message = error.message ? String(error.message)
        : (typeof data === 'string' && data.trim()) || response.statusText || 'request failed';
      throw new ApiError(response.status, error.code ? String(error.code) : '', message,
        { fields: error.fields, retryAfter: response.headers.get('Retry-After') });
    }
    return { status: response.status, data };
  }

  /** An error in plain words: what the host said, and what to do about a missing token. */
  function explain(err) {
    if (!(err instanceof ApiError)) return String((err && err.message) || err);
    if (err.status === 0) return err.message;
    const who = err.status >= 500 ? 'The host could not do this' : 'The host refused this';
    let text = who + ' (' + err.status + (err.code ? ' ' + err.code : '') + '): ' + err.message;
    if (!/[.!?]$/.test(text)) text += '.';
    if (err.fields) text += ' ' + Object.entries(err.fields).map(([k, v]) => k + ': ' + v).join('; ') + '.';
    if (err.status === 401) {
      text += getToken()
        ? ' The token in “Access token” was not accepted for this (changes need the admin token).'
        : ' This host needs a token: enter it in “Access token” at the top of the page (the admin token for changes; the query token or the admin token for reads).';
    }
    if (err.retryAfter) text += ' Try again in ' + err.retryAfter + ' s.';
    return text;
  }

  function showError(el, err) {
    setText(el, explain(err));
    el.hidden = false;
  }

  function errorBox(testid) {
    return h('div', { class: 'error', role: 'alert', testid: testid || 'page-error', hidden: true });
  }

  async function listProjections() {
    return (await api('GET', '/projections')).data || [];
  }

  // ------------------------------------------------------------- router, pages, polling
  let page = { alive: false, timer: null };
  let flashAt = 0;
  let closeConfirm = null;

  function flash(text) {
    setText($('#flash'), text);
    flashAt = Date.now();
  }

  /** Runs `fn` now and then every POLL_MS after it finished, while the page is shown. */
  function poll(ctx, fn) {
    const tick = async () => {
      if (!ctx.alive) return;
      if (!document.hidden) {
        try { await fn(); } catch (e) { console.error(e); }
      }
      if (ctx.alive) ctx.timer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function route() {
    page.alive = false;
    clearTimeout(page.timer);
    if (closeConfirm) closeConfirm(false);
    const ctx = (page = { alive: true, timer: null });
    if (Date.now() - flashAt > 1500) setText($('#flash'), '');
    const hash = location.hash.replace(/^#\/?/, '');
    let parts;
    try { parts = hash.split('/').map(decodeURIComponent); } catch (_) { parts = ['?']; }
    const main = $('#main');
    main.replaceChildren();
    const [section, arg] = parts;
    let nav = section || 'overview';
    if (!section) overviewPage(main, ctx);
    else if (section === 'projections' && arg) { nav = 'overview'; projectionPage(main, ctx, arg); }
    else if (section === 'deploy') deployPage(main, ctx, arg);
    else if (section === 'try') tryPage(main, ctx, arg);
    else if (section === 'explore') explorePage(main, ctx, arg);
    else main.append(h('h1', {}, 'Page not found'), h('p', {}, 'No page here. ', h('a', { href: '#/' }, 'Back to the overview.')));
    document.querySelectorAll('nav.pages a').forEach((a) => {
      if (a.dataset.route === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    document.title = (section ? section.charAt(0).toUpperCase() + section.slice(1) + (arg ? ' ' + arg : '') + ' · ' : '') + 'Projector console';
    applyTokenState();
  }

  /** The in-page confirmation dialog (buttons data-testid confirm-yes / confirm-no). */
  function confirmDialog(title, text, yesLabel) {
    const box = $('#confirm');
    const yes = $('#confirm-yes');
    const no = $('#confirm-no');
    setText($('#confirm-title'), title);
    setText($('#confirm-text'), text);
    setText(yes, yesLabel || 'Confirm');
    const before = document.activeElement;
    box.hidden = false;
    no.focus();
    return new Promise((resolve) => {
      const done = (answer) => {
        box.hidden = true;
        yes.onclick = no.onclick = null;
        closeConfirm = null;
        if (before && before.focus) before.focus();
        resolve(answer);
      };
      closeConfirm = done;
      yes.onclick = () => done(true);
      no.onclick = () => done(false);
    });
  }

  // ------------------------------------------------------------- events/s history (browser side)
  const samples = new Map(); // name -> [{t, n}], from events_processed at each poll

  function record(statuses) {
    const t = Date.now();
    for (const s of statuses) {
      let list = samples.get(s.name);
      if (!list) samples.set(s.name, (list = []));
      const last = list[list.length - 1];
      if (last && t - last.t < 500) continue;
      if (last && s.events_processed < last.n) list.length = 0; // reset or redeploy: start over
      list.push({ t, n: s.events_processed });
      while (list.length && t - list[0].t > HISTORY_MS) list.shift();
    }
  }

  function rates(name) {
    const list = samples.get(name) || [];
    const out = [];
    for (let i = 1; i < list.length; i++) {
      out.push(Math.max(0, ((list[i].n - list[i - 1].n) * 1000) / (list[i].t - list[i - 1].t)));
    }
    return out;
  }

  /** Events per second over the last five samples or so. */
  function currentRate(name) {
    const list = samples.get(name) || [];
    if (list.length < 2) return null;
    const last = list[list.length - 1];
    const first = list[Math.max(0, list.length - 6)];
    return ((last.n - first.n) * 1000) / (last.t - first.t);
  }

  function sparkline(width, height) {
    const line = svg('polyline', { class: 'spark-line', points: '' });
    const el = svg('svg', { class: 'spark', width, height, viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'events per second over the last 5 minutes' });
    el.append(svg('line', { class: 'spark-base', x1: 0, y1: height - 1, x2: width, y2: height - 1 }), line);
    return {
      el,
      update(values) {
        const peak = values.length ? Math.max(...values) : 0;
        const max = Math.max(1, peak);
        const step = width / (SPARK_POINTS - 1);
        const n = values.length;
        line.setAttribute('points', values.map((v, i) =>
          (width - (n - 1 - i) * step).toFixed(1) + ',' + (height - 2 - ((height - 4) * v) / max).toFixed(1)).join(' '));
        el.setAttribute('aria-label', 'events per second over the last 5 minutes; peak ' + fmtRate(peak));
      },
    };
  }

  // ------------------------------------------------------------- page: overview
  function overviewPage(main, ctx) {
    const error = errorBox();
    const tbody = h('tbody');
    const table = h('table', { class: 'list', testid: 'projections' },
      h('caption', { class: 'sr-only' }, 'Deployed projections'),
      h('thead', {}, h('tr', {}, ['Projection', 'State', 'Version', 'Events processed', 'Lag', 'Events/s (5 min)', 'Fault / problem', 'Dead letters', 'Rebuild', '']
        .map((label) => h('th', { scope: 'col' }, label)))),
      tbody);
    const empty = h('div', { class: 'empty', testid: 'empty', hidden: true },
      h('p', {}, 'Nothing is deployed yet.'),
      h('p', {}, h('a', { href: '#/deploy' }, 'Deploy a projection module'), ' (a .wasm file), or ', h('a', { href: '#/try' }, 'try one'), ' against recent events first.'));
    const updated = h('p', { class: 'muted small', 'aria-live': 'off' });
    main.append(h('h1', {}, 'Projections'),
      h('p', { class: 'lead' }, 'Every deployed projection, refreshed every second. Select a name for its details, its fault and the actions on it.'),
      error, h('div', { class: 'table-wrap' }, table), empty, updated);
    const rows = new Map();

    poll(ctx, async () => {
      let statuses;
      try {
        statuses = await listProjections();
      } catch (e) {
        showError(error, e);
        return;
      }
      error.hidden = true;
      record(statuses);
      const names = new Set(statuses.map((s) => s.name));
      for (const [name, row] of rows) if (!names.has(name)) { row.tr.remove(); rows.delete(name); }
      statuses.forEach((s, i) => {
        let row = rows.get(s.name);
        if (!row) rows.set(s.name, (row = overviewRow(s.name)));
        if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
        updateOverviewRow(row, s);
      });
      table.hidden = statuses.length === 0;
      empty.hidden = statuses.length !== 0;
      setText(updated, 'Updated ' + new Date().toLocaleTimeString());
    });
  }

  function overviewRow(name) {
    const td = (testid, cls) => h('td', { testid, class: cls });
    const row = {
      badge: badge(null), version: td('version'), events: td('events', 'num'), lag: td('lag', 'num'),
      rate: h('span', { class: 'rate', testid: 'rate' }), spark: sparkline(120, 24),
      fault: td('faults', 'fault-cell'), dead: td('dead-letters', 'num'), rebuild: td('rebuild'),
    };
    const link = '#/projections/' + enc(name);
    row.tr = h('tr', { testid: 'projection-row', 'data-name': name },
      h('th', { scope: 'row' }, h('a', { href: link }, name)),
      h('td', { testid: 'state' }, row.badge), row.version, row.events, row.lag,
      h('td', { class: 'spark-cell' }, row.spark.el, row.rate), row.fault, row.dead, row.rebuild,
      h('td', {}, h('a', { href: '#/explore/' + enc(name), class: 'small' }, 'Explore')));
    return row;
  }

  function updateOverviewRow(row, s) {
    setBadge(row.badge, s.state);
    setText(row.version, s.version);
    setText(row.events, fmtInt(s.events_processed));
    row.events.dataset.value = s.events_processed;
    setText(row.lag, fmtInt(s.lag_events) + ' ev · ' + fmtSeconds(s.lag_seconds));
    row.lag.dataset.events = s.lag_events;
    row.lag.dataset.seconds = s.lag_seconds;
    row.spark.update(rates(s.name));
    setText(row.rate, fmtRate(currentRate(s.name)));
    let text = '—';
    let cls = 'fault-cell';
    if (s.fault) { text = 'Faulted: ' + s.fault.reason; cls += ' bad'; }
    else if (s.problem) { text = 'Retrying: ' + s.problem; cls += ' warn'; }
    else if (s.rebuild && s.rebuild.fault) { text = 'Rebuild faulted: ' + s.rebuild.fault.reason; cls += ' bad'; }
    setText(row.fault, text);
    row.fault.title = text === '—' ? '' : text;
    if (row.fault.className !== cls) row.fault.className = cls;
    setText(row.dead, fmtInt(s.dead_letters));
    row.dead.classList.toggle('warn', s.dead_letters > 0);
    const r = s.rebuild;
    setText(row.rebuild, r ? r.version + ': ' + percent(r.position, r.total) + (r.eta_seconds != null ? ', ETA ' + fmtSeconds(r.eta_seconds) : '') : '—');
  }

  function percent(position, total) {
    if (!total) return '100%';
    return Math.min(100, (100 * position) / total).toFixed(1) + '%';
  }

  // ------------------------------------------------------------- page: projection
  const ACTIONS = [
    { id: 'stop', label: 'Stop', help: 'Stop following events. Queries are still answered.',
      ask: (n) => 'Stop “' + n + '”? It stops following events until you start it again; queries are still answered.' },
    { id: 'start', label: 'Start', help: 'Follow events again, from the checkpoint.',
      ask: (n) => 'Start “' + n + '” again from its checkpoint?' },
    { id: 'retry', label: 'Retry', help: 'Apply the event it faulted on again (once the cause outside the module is fixed).',
      ask: (n) => 'Retry “' + n + '” at the event it faulted on?' },
    { id: 'reset', label: 'Reset', danger: true, help: 'Rebuild the read model from scratch under the same version.',
      ask: (n) => 'Reset “' + n + '”? Its read model is rebuilt from the start of $all under the same version; queries see the new one at once, while it fills up.' },
    { id: 'rollback', label: 'Roll back', help: 'Return to the previous version; during a rebuild, cancel it.',
      ask: (n, s) => (s && s.rebuild ? 'Cancel the rebuild of “' + n + '” (version ' + s.rebuild.version + ') and delete its read model?'
        : s && s.previous ? 'Roll “' + n + '” back to version ' + s.previous.version + ' (read model ' + s.previous.read_model + ')?'
          : 'Roll back “' + n + '”? (The host reports no previous version, so it will probably refuse.)') },
    { id: 'delete', label: 'Delete', danger: true, help: 'Remove the projection and its read models.',
      ask: (n) => 'Delete “' + n + '” and its read models? This cannot be undone.' },
  ];

  function projectionPage(main, ctx, name) {
    let last = null;
    const error = errorBox();
    const head = badge(null);
    const dd = {};
    const item = (key, label) => [h('dt', {}, label), (dd[key] = h('dd', { testid: 'status-' + key }))];
    const spark = sparkline(240, 32);
    const rateText = h('span', { class: 'rate' });

    const problem = h('div', { class: 'card warn-card', testid: 'problem', hidden: true });
    const faultDl = h('dl', { class: 'grid' });
    const fault = h('section', { class: 'card fault', testid: 'fault', hidden: true },
      h('h2', {}, 'Faulted'), faultDl,
      h('p', { class: 'help' }, 'Nothing after this event is applied until the cause is fixed: deploy a corrected module, or Retry when the cause was outside the module. With the error policy “skip”, such an event becomes a dead letter instead.'));
    const rebuild = rebuildCard();
    const actionResult = h('div', { class: 'result', testid: 'action-result', 'aria-live': 'polite' });
    const letters = deadLetters(name);

    const refresh = async () => {
      try {
        const { data } = await api('GET', '/projections/' + enc(name));
        error.hidden = true;
        show(data);
      } catch (e) {
        showError(error, e.status === 404 ? new Error(explain(e) + ' It may have been deleted: see the overview.') : e);
      }
    };

    const actions = h('section', { class: 'card' }, h('h2', {}, 'Actions'),
      h('p', { class: 'help needs-token-text' }, 'Actions need the admin token.'),
      h('div', { class: 'actions' }, ACTIONS.map((action) => {
        const button = h('button', { type: 'button', class: action.danger ? 'danger' : '', testid: 'action-' + action.id, mutating: true,
          on: { click: () => runAction(action, button) } }, action.label);
        return h('div', { class: 'action' }, button, h('span', { class: 'help' }, action.help));
      })),
      actionResult);

    async function runAction(action, button) {
      if (!(await confirmDialog(action.label + ' ' + name, action.ask(name, last), action.label))) return;
      setBusy(button, true);
      setText(actionResult, action.label + '…');
      actionResult.className = 'result';
      try {
        if (action.id === 'delete') {
          await api('DELETE', '/projections/' + enc(name));
          ctx.alive = false;
          flash('Projection “' + name + '” was deleted with its read models.');
          location.hash = '#/';
          return;
        }
        const { data } = await api('POST', '/projections/' + enc(name) + '/' + action.id);
        setText(actionResult, action.label + ': done. “' + name + '” is now ' + data.state + ' at version ' + data.version + '.');
        actionResult.className = 'result ok';
        show(data);
      } catch (e) {
        setText(actionResult, action.label + ' failed. ' + explain(e));
        actionResult.className = 'result error';
      } finally {
        setBusy(button, false);
        if (ctx.alive) refresh();
      }
    }

    main.append(
      h('div', { class: 'title-row' }, h('h1', {}, name), head,
        h('nav', { class: 'links', 'aria-label': 'About this projection' },
          h('a', { href: '#/explore/' + enc(name) }, 'Explore its read model'),
          h('a', { href: '#/try/' + enc(name) }, 'Try its module'),
          h('a', { href: '#/deploy/' + enc(name) }, 'Deploy a new version'),
          h('a', { href: '#/' }, 'All projections'))),
      error, problem, fault, rebuild.el,
      h('section', { class: 'card' }, h('h2', {}, 'Status'),
        h('dl', { class: 'grid' },
          item('state', 'State'), item('version', 'Version'), item('checkpoint', 'Checkpoint (commit position)'),
          item('events_processed', 'Events processed'), item('lag', 'Lag'), item('on_error', 'Error policy'),
          item('dead_letters', 'Dead letters'), item('read_model', 'Read model serving queries'), item('previous', 'Previous version (rollback)'),
          item('module', 'Module'), item('toolchain', 'Built with'), item('limits', 'Limits in force'), item('host', 'Running on host')),
        h('div', { class: 'rate-row' }, h('span', { class: 'muted' }, 'Events/s, last 5 minutes: '), spark.el, rateText)),
      actions, letters.el);

    function show(s) {
      last = s;
      record([s]);
      setBadge(head, s.state);
      setText(dd.state, s.state + ' — ' + (STATE_HELP[s.state] || ''));
      setText(dd.version, s.version);
      setText(dd.checkpoint, s.checkpoint === null ? 'none yet (no batch applied)' : fmtInt(s.checkpoint));
      setText(dd.events_processed, fmtInt(s.events_processed));
      setText(dd.lag, fmtInt(s.lag_events) + ' events behind; the oldest has waited ' + fmtSeconds(s.lag_seconds));
      setText(dd.on_error, s.on_error === 'skip' ? 'skip — a failing event is recorded as a dead letter and processing goes on'
        : 'fault — the projection stops at a failing event until retried or redeployed');
      setText(dd.dead_letters, fmtInt(s.dead_letters));
      setText(dd.read_model, s.read_model);
      setText(dd.previous, s.previous ? 'version ' + s.previous.version + ' (read model ' + s.previous.read_model + ')' : 'none — nothing to roll back to');
      setText(dd.module, s.module ? fmtBytes(s.module.bytes) + ', sha256 ' + s.module.sha256.slice(0, 16) + '…' : '—');
      dd.module.title = s.module ? s.module.sha256 : '';
      setText(dd.toolchain, (s.module && s.module.toolchain) || 'not stated by the module');
      const l = s.limits || {};
      const set = Object.keys(s.limits_set || {});
      setText(dd.limits, 'memory ' + l.memory_mb + ' MiB, batch timeout ' + l.batch_timeout_ms + ' ms, document ' + fmtBytes(l.document_bytes) +
        ', batch writes ' + fmtBytes(l.batch_write_bytes) + (set.length ? ' (set by the deploy: ' + set.join(', ') + ')' : ' (host defaults)'));
      setText(dd.host, s.host || '— (named only when several hosts share PostgreSQL)');
      spark.update(rates(s.name));
      setText(rateText, fmtRate(currentRate(s.name)));
      problem.hidden = !s.problem;
      setText(problem, s.problem ? 'Retrying: ' + s.problem + ' (retried with backoff; nothing is lost or applied twice).' : '');
      fault.hidden = !s.fault;
      if (s.fault) fillFault(faultDl, s.fault);
      rebuild.show(s.rebuild);
      letters.countChanged(s.dead_letters);
    }

    poll(ctx, refresh);
  }

  function fillFault(dl, f) {
    const rows = [['Message', f.reason], ['Stream', f.stream], ['Revision', f.revision], ['Event type', f.event_type], ['Position', f.position]];
    const key = JSON.stringify(rows);
    if (dl.dataset.key === key) return;
    dl.dataset.key = key;
    dl.replaceChildren(...rows.flatMap(([label, value]) => [h('dt', {}, label),
      h('dd', { testid: 'fault-' + label.toLowerCase().replace(' ', '-') }, value === null || value === undefined ? '—' : String(value))]));
  }

  function rebuildCard() {
    const state = badge(null);
    const bar = h('progress', { testid: 'rebuild-progress', max: 1, value: 0 });
    const text = h('p', { testid: 'rebuild-text' });
    const title = h('h2', {}, 'Rebuild in progress');
    const faultDl = h('dl', { class: 'grid', hidden: true });
    const problem = h('p', { class: 'warn', hidden: true });
    const el = h('section', { class: 'card rebuild', testid: 'rebuild', hidden: true }, title, state,
      h('p', { class: 'help' }, 'The new version builds a fresh read model from the start of $all beside the serving one, which keeps answering queries. Queries switch to it once it has caught up; Roll back cancels it.'),
      h('label', { class: 'progress-label' }, 'Progress ', bar), text, problem, faultDl);
    return {
      el,
      show(r) {
        el.hidden = !r;
        if (!r) return;
        setText(title, 'Rebuild in progress: version ' + r.version);
        setBadge(state, r.state);
        bar.max = Math.max(1, r.total);
        bar.value = r.total ? Math.min(r.position, r.total) : 1;
        setText(text, fmtInt(r.position) + ' of ' + fmtInt(r.total) + ' events (' + percent(r.position, r.total) + ') · ' + fmtRate(r.rate) +
          ' · ETA ' + (r.eta_seconds === null || r.eta_seconds === undefined ? 'unknown' : fmtSeconds(r.eta_seconds)) +
          (r.checkpoint !== null && r.checkpoint !== undefined ? ' · checkpoint ' + fmtInt(r.checkpoint) : ''));
        problem.hidden = !r.problem;
        setText(problem, r.problem ? 'Retrying: ' + r.problem : '');
        faultDl.hidden = !r.fault;
        if (r.fault) fillFault(faultDl, r.fault);
      },
    };
  }

  function deadLetters(name) {
    const PAGE = 50;
    const error = errorBox('dead-letters-error');
    const tbody = h('tbody');
    const table = h('table', { class: 'list', testid: 'dead-letters' },
      h('thead', {}, h('tr', {}, ['Position', 'Stream', 'Revision', 'Event type', 'Error'].map((t) => h('th', { scope: 'col' }, t)))), tbody);
    const info = h('span', { class: 'muted' });
    const first = h('button', { type: 'button', class: 'secondary', testid: 'dead-letters-first', on: { click: () => load(null) } }, 'First page');
    const next = h('button', { type: 'button', class: 'secondary', testid: 'dead-letters-next', disabled: true, on: { click: () => load(nextAfter) } }, 'Next page');
    let nextAfter = null;
    let after = null;
    let count = null;

    async function load(from) {
      try {
        const { data } = await api('GET', '/projections/' + enc(name) + '/dead-letters', { query: { after: from, limit: PAGE } });
        error.hidden = true;
        after = from;
        nextAfter = data.next_after;
        next.disabled = nextAfter === null || nextAfter === undefined;
        tbody.replaceChildren(...data.items.map((d) => h('tr', {},
          h('td', { class: 'num' }, fmtInt(d.position)), h('td', {}, d.stream), h('td', { class: 'num' }, fmtInt(d.revision)),
          h('td', {}, d.event_type), h('td', { class: 'bad' }, d.error))));
        if (!data.items.length) tbody.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, from === null
          ? 'No dead letters. With the error policy “skip”, events the module fails on are listed here.' : 'No more dead letters.')));
        setText(info, from === null ? 'Oldest first, ' + PAGE + ' a page.' : 'After position ' + fmtInt(from) + '.');
      } catch (e) {
        showError(error, e);
      }
    }

    load(null);
    return {
      el: h('section', { class: 'card' }, h('h2', {}, 'Dead letters'), error, h('div', { class: 'table-wrap' }, table),
        h('div', { class: 'pager' }, first, next, info)),
      countChanged(n) {
        if (count !== null && n !== count && after === null) load(null);
        count = n;
      },
    };
  }

  // ------------------------------------------------------------- page: deploy
  function deployPage(main, ctx, preset) {
    let known = [];
    let policyTouched = false;
    const names = h('datalist', { id: 'deploy-names' });
    const name = h('input', { id: 'deploy-name', testid: 'deploy-name', list: 'deploy-names', autocomplete: 'off', spellcheck: 'false', value: preset || '', placeholder: 'e.g. orders' });
    const about = h('p', { class: 'help', testid: 'deploy-existing', 'aria-live': 'polite' });
    const file = h('input', { id: 'deploy-file', testid: 'deploy-file', type: 'file', accept: '.wasm,application/wasm' });
    const mode = selectOf('deploy-mode', [['continue', 'continue — the new code takes over the same read model at its checkpoint'],
      ['rebuild', 'rebuild — build a fresh read model beside the old one, switch when caught up']], 'continue');
    const onError = selectOf('deploy-on-error', [['fault', 'fault — stop at an event the module fails on'],
      ['skip', 'skip — record it as a dead letter and go on']], 'fault');
    const memory = h('input', { id: 'deploy-memory', testid: 'deploy-memory', type: 'number', min: 1, max: 4096, step: 1, placeholder: 'host default' });
    const timeout = h('input', { id: 'deploy-timeout', testid: 'deploy-timeout', type: 'number', min: 10, max: 600000, step: 1, placeholder: 'host default' });
    const submit = h('button', { type: 'submit', testid: 'deploy-submit', mutating: true }, 'Deploy');
    const result = h('div', { class: 'result', testid: 'deploy-result', 'aria-live': 'polite' });
    const error = errorBox();

    const describe = () => {
      const existing = known.find((s) => s.name === name.value.trim());
      if (!name.value.trim()) setText(about, 'Lowercase letters, digits and “-”, starting with a letter or digit (at most 63).');
      else if (existing) {
        setText(about, '“' + existing.name + '” exists (version ' + existing.version + ', ' + existing.state + ', error policy ' + existing.on_error + '): this deploy replaces its version.');
        if (!policyTouched) onError.value = existing.on_error;
      } else setText(about, 'A new projection: it reads $all from the start.');
    };
    name.addEventListener('input', describe);
    onError.addEventListener('change', () => { policyTouched = true; });

    const form = h('form', { class: 'card form', novalidate: true },
      names,
      field('Projection name', name), about,
      field('Module (.wasm)', file, 'A WebAssembly module or component built against the projection contract (see the README).'),
      field('Mode (when the name exists)', mode, 'New names ignore this. During a rebuild the old version keeps answering queries.'),
      field('Error policy', onError, 'What happens when the module fails on an event. Kept from the running version unless you change it.'),
      h('details', {}, h('summary', {}, 'Sandbox limits (optional)'),
        field('Memory (MiB, 1–4096)', memory), field('Batch timeout (ms, 10–600000)', timeout)),
      h('div', { class: 'submit-row' }, submit, h('span', { class: 'help needs-token-text' }, 'Deploying needs the admin token.')),
      result);
    main.append(h('h1', {}, 'Deploy'),
      h('p', { class: 'lead' }, 'Upload a projection module. A module is checked before anything changes; a refused module leaves the running version untouched.'),
      error, form);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      result.className = 'result';
      const projection = name.value.trim();
      const chosen = file.files && file.files[0];
      if (!projection || !chosen) {
        setText(result, !projection ? 'Enter a projection name.' : 'Choose a .wasm file to deploy.');
        result.className = 'result error';
        return;
      }
      setBusy(submit, true);
      setText(result, 'Uploading ' + chosen.name + ' (' + fmtBytes(chosen.size) + ')' + (mode.value === 'rebuild' ? ' and starting the rebuild…' : ' and deploying…'));
      try {
        const bytes = await chosen.arrayBuffer();
        const { status, data } = await api('PUT', '/projections/' + enc(projection), {
          query: { mode: mode.value, on_error: onError.value, memory_mb: memory.value, batch_timeout_ms: timeout.value },
          body: bytes, contentType: 'application/wasm',
        });
        const what = status === 201 ? 'Deployed the new projection “' + projection + '” at version ' + data.version + '.'
          : status === 202 ? 'Rebuild started: version ' + (data.rebuild ? data.rebuild.version : '?') + ' builds a fresh read model beside version ' + data.version + ', which keeps answering queries.'
            : '“' + projection + '” now runs version ' + data.version + ' on the same read model (nothing changes when the module and settings were already deployed).';
        result.replaceChildren(h('p', {}, what + ' State: ' + data.state + '.'),
          h('p', {}, h('a', { href: '#/projections/' + enc(projection) }, 'Follow it on its page →')));
        result.className = 'result ok';
        loadKnown();
      } catch (e) {
        setText(result, (e.status === 422 || e.status === 413 ? 'The module was refused. ' : 'The deploy was refused. ') + explain(e));
        result.className = 'result error';
      } finally {
        setBusy(submit, false);
      }
    });

    async function loadKnown() {
      try {
        known = await listProjections();
        names.replaceChildren(...known.map((s) => h('option', { value: s.name })));
        error.hidden = true;
      } catch (e) {
        showError(error, e);
      }
      describe();
    }
    loadKnown();
  }

  // ------------------------------------------------------------- page: try
  const seenCollections = new Map(); // projection -> Set of collections written in a try

  function tryPage(main, ctx, preset) {
    const error = errorBox();
    const projection = h('select', { id: 'try-projection', testid: 'try-projection' }, h('option', { value: '' }, 'None — use the uploaded file below'));
    const file = h('input', { id: 'try-file', testid: 'try-file', type: 'file', accept: '.wasm,application/wasm' });
    const radio = (value, label, checked) => {
      const input = h('input', { type: 'radio', name: 'try-source', id: 'try-source-' + value, testid: 'try-source-' + value, value, checked });
      return { input, label: h('label', { for: input.id, class: 'inline' }, input, ' ', label) };
    };
    const fromLast = radio('last', 'The last N events of $all', true);
    const fromPaste = radio('events', 'Events pasted as JSON', false);
    const last = h('input', { id: 'try-last', testid: 'try-last', type: 'number', min: 1, step: 1, value: '100' });
    const events = h('textarea', { id: 'try-events', testid: 'try-events', rows: 10, spellcheck: 'false', placeholder: EXAMPLE_EVENTS });
    const example = h('button', { type: 'button', class: 'secondary small', on: { click: () => { events.value = EXAMPLE_EVENTS; fromPaste.input.checked = true; } } }, 'Insert an example');
    const view = selectOf('try-view', [['empty', 'An empty read model'], ['current', 'A copy of the current read model (deployed projection only)']], 'empty');
    const submit = h('button', { type: 'submit', testid: 'try-submit', mutating: true }, 'Run the dry run');

    const summary = h('p', { testid: 'try-summary' });
    const tryError = h('div', { class: 'error', role: 'alert', testid: 'try-error', hidden: true });
    const writes = h('tbody');
    const logs = h('ul', { class: 'logs', testid: 'try-logs' });
    const results = h('section', { class: 'card', testid: 'try-result', hidden: true, 'aria-live': 'polite' },
      h('h2', {}, 'Result (nothing was committed)'), summary, tryError,
      h('h3', {}, 'Writes'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'list', testid: 'try-writes' },
        h('thead', {}, h('tr', {}, ['Collection', 'Key', 'Document'].map((t) => h('th', { scope: 'col' }, t)))), writes)),
      h('h3', {}, 'Log lines'), logs);

    const syncView = () => {
      const current = view.querySelector('option[value="current"]');
      current.disabled = !projection.value;
      if (!projection.value && view.value === 'current') view.value = 'empty';
    };
    projection.addEventListener('change', () => { if (projection.value) file.value = ''; syncView(); });
    file.addEventListener('change', () => { if (file.files.length) { projection.value = ''; syncView(); } });
    last.addEventListener('input', () => { fromLast.input.checked = true; });
    events.addEventListener('input', () => { fromPaste.input.checked = true; });

    const form = h('form', { class: 'card form', novalidate: true },
      h('fieldset', {}, h('legend', {}, '1. The module'),
        field('A deployed projection', projection, 'Runs the module it serves now.'),
        field('…or a .wasm file', file, 'A module not deployed yet: nothing is stored.')),
      h('fieldset', {}, h('legend', {}, '2. The events'),
        h('div', { class: 'radio-row' }, fromLast.label), field('Number of events', last),
        h('div', { class: 'radio-row' }, fromPaste.label),
        field('Events (JSON array)', events, 'Each event: {"stream": "...", "type": "...", "data": {...}, "metadata": {...}}; data and metadata are optional.'),
        example),
      h('fieldset', {}, h('legend', {}, '3. The read model it starts from'), field('Starting read model', view)),
      h('div', { class: 'submit-row' }, submit, h('span', { class: 'help' }, 'A dry run: the writes are shown, never committed; no checkpoint moves.'),
        h('span', { class: 'help needs-token-text' }, 'Needs the admin token.')));

    main.append(h('h1', {}, 'Try a module'),
      h('p', { class: 'lead' }, 'Run a projection module over some events and see what it would write and log — without changing any read model.'),
      error, form, results);
    syncView();

    (async () => {
      try {
        const statuses = await listProjections();
        projection.append(...statuses.map((s) => h('option', { value: s.name }, s.name + ' (version ' + s.version + ')')));
        if (preset && statuses.some((s) => s.name === preset)) projection.value = preset;
        syncView();
      } catch (e) {
        showError(error, e);
      }
    })();

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = { projection: null, module_base64: null, last: null, events: null, view: view.value };
      const fail = (message) => { results.hidden = false; setText(summary, 'Nothing was run.'); writes.replaceChildren(); logs.replaceChildren(); showError(tryError, new Error(message)); };
      try {
        if (projection.value) body.projection = projection.value;
        else if (file.files && file.files[0]) body.module_base64 = toBase64(await file.files[0].arrayBuffer());
        else return fail('Choose a deployed projection, or a .wasm file to try.');
        if (fromPaste.input.checked) body.events = parseEvents(events.value);
        else {
          const n = Number(last.value);
          if (!Number.isInteger(n) || n < 1) return fail('“Number of events” must be a whole number, 1 or more.');
          body.last = n;
        }
        if (body.view === 'current' && !body.projection) return fail('A copy of the current read model needs a deployed projection.');
      } catch (e) {
        return fail(e.message);
      }
      setBusy(submit, true);
      setText(summary, 'Running…');
      tryError.hidden = true;
      try {
        const { data } = await api('POST', '/try', { body });
        showTryResult(data, body.projection);
      } catch (e) {
        results.hidden = false;
        setText(summary, 'Nothing was run.');
        writes.replaceChildren();
        logs.replaceChildren();
        showError(tryError, e);
      } finally {
        setBusy(submit, false);
      }
    });

    function showTryResult(data, name) {
      results.hidden = false;
      const w = data.writes || [];
      const l = data.logs || [];
      setText(summary, 'Applied ' + fmtInt(data.events) + ' event' + (data.events === 1 ? '' : 's') + ': ' + w.length + ' write' + (w.length === 1 ? '' : 's') +
        ', ' + l.length + ' log line' + (l.length === 1 ? '' : 's') + '. Nothing was committed.');
      tryError.hidden = !data.error;
      setText(tryError, data.error ? 'The module failed: ' + data.error : '');
      if (name) {
        if (!seenCollections.has(name)) seenCollections.set(name, new Set());
        w.forEach((x) => seenCollections.get(name).add(x.collection));
      }
      writes.replaceChildren(...w.map((x) => h('tr', {},
        h('td', {}, x.collection), h('td', {}, x.key),
        h('td', {}, x.document === null || x.document === undefined ? h('em', { class: 'muted' }, 'deleted') : jsonBlock(x.document)))));
      if (!w.length) writes.append(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No writes.')));
      logs.replaceChildren(...l.map((x) => h('li', { class: 'log-' + x.level }, h('span', { class: 'level' }, String(x.level).toUpperCase()), ' ', x.message)));
      if (!l.length) logs.append(h('li', { class: 'muted' }, 'No log lines.'));
    }
  }

  function parseEvents(text) {
    let value;
    try { value = JSON.parse(text); } catch (e) { throw new Error('The events are not valid JSON: ' + e.message); }
    if (!Array.isArray(value)) throw new Error('The events must be a JSON array: [{"stream": "...", "type": "...", "data": {...}}].');
    if (!value.length) throw new Error('The events array is empty: give at least one event.');
    value.forEach((ev, i) => {
      const which = 'Event ' + (i + 1);
      if (!ev || typeof ev !== 'object' || Array.isArray(ev)) throw new Error(which + ' is not an object.');
      if (typeof ev.stream !== 'string' || !ev.stream) throw new Error(which + ' needs a "stream" (text).');
      if (typeof ev.type !== 'string' || !ev.type) throw new Error(which + ' needs a "type" (text).');
      if (ev.metadata !== undefined && (typeof ev.metadata !== 'object' || Array.isArray(ev.metadata))) throw new Error(which + ': "metadata" must be an object.');
    });
    return value;
  }

  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = '';
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }

  // ------------------------------------------------------------- page: explore
  function rememberedCollections(name) {
    try { return (JSON.parse(sessionStorage.getItem(COLLECTIONS_KEY) || '{}')[name]) || []; } catch (_) { return []; }
  }

  function rememberCollection(name, collection) {
    try {
      const all = JSON.parse(sessionStorage.getItem(COLLECTIONS_KEY) || '{}');
      all[name] = [collection, ...(all[name] || []).filter((c) => c !== collection)].slice(0, 20);
      sessionStorage.setItem(COLLECTIONS_KEY, JSON.stringify(all));
    } catch (_) { /* not remembered: only a convenience */ }
  }

  /** Collections the status names, if it exposes the module's description (collections or indexes). */
  function describedCollections(status) {
    const out = [];
    const add = (list) => (Array.isArray(list) ? list : []).forEach((c) => {
      const name = typeof c === 'string' ? c : c && c.collection;
      if (typeof name === 'string' && name) out.push(name);
    });
    [status, status.module, status.description, status.module && status.module.description].forEach((o) => {
      if (o && typeof o === 'object') { add(o.collections); add(o.indexes); }
    });
    return out;
  }

  function explorePage(main, ctx, name) {
    const error = errorBox();
    const pick = h('select', { id: 'explore-projection', testid: 'explore-projection' }, h('option', { value: '' }, 'Choose a projection…'));
    pick.addEventListener('change', () => { if (pick.value) location.hash = '#/explore/' + enc(pick.value); });
    main.append(h('h1', {}, name ? 'Explore “' + name + '”' : 'Explore a read model'),
      h('p', { class: 'lead' }, 'List, filter, order and count the documents a projection wrote.'),
      error, h('div', { class: 'card form compact' }, field('Projection', pick)));
    const chips = h('p', { class: 'chips', testid: 'explore-known' });
    const collections = h('datalist', { id: 'explore-collections' });
    const statusLine = h('p', { class: 'muted small', testid: 'explore-status' });

    if (!name) {
      loadStatuses();
      return;
    }

    const collection = h('input', { id: 'explore-collection', testid: 'explore-collection', list: 'explore-collections', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. users' });
    const filter = h('textarea', { id: 'explore-filter', testid: 'explore-filter', rows: 3, spellcheck: 'false', placeholder: 'quantity>=5\naddress.city=Paris' });
    const order = h('input', { id: 'explore-order', testid: 'explore-order', autocomplete: 'off', spellcheck: 'false', placeholder: '-quantity' });
    const limit = h('input', { id: 'explore-limit', testid: 'explore-limit', type: 'number', min: 1, max: 1000, step: 1, value: '20' });
    const submit = h('button', { type: 'submit', testid: 'explore-submit' }, 'List documents');
    const count = h('p', { class: 'count', testid: 'explore-count', 'aria-live': 'polite' });
    const listError = errorBox('explore-error');
    const items = h('div', { class: 'docs', testid: 'explore-items' });
    const first = h('button', { type: 'button', class: 'secondary', testid: 'explore-first', disabled: true, on: { click: () => load(null) } }, 'First page');
    const next = h('button', { type: 'button', class: 'secondary', testid: 'explore-next', disabled: true, on: { click: () => load(nextCursor) } }, 'Next page');
    const pageInfo = h('span', { class: 'muted', testid: 'explore-page' });
    const key = h('input', { id: 'explore-key', testid: 'explore-key', autocomplete: 'off', spellcheck: 'false', placeholder: 'a document key' });
    const get = h('button', { type: 'button', class: 'secondary', testid: 'explore-get' }, 'Open document');
    let query = null; // the listing as submitted: next pages keep its filters and order
    let nextCursor = null;
    let pageNumber = 0;

    const form = h('form', { class: 'card form', novalidate: true }, collections,
      field('Collection', collection), chips,
      field('Filters, one per line', filter, 'path<op>value with = != < <= > >= on dotted JSON paths, e.g. quantity>=5 or address.city=Paris; "quoted" forces text. A document must pass every filter (at most 16).'),
      h('div', { class: 'two' },
        field('Order by', order, 'A field, “-” first for descending, e.g. -quantity. Empty: key order.'),
        field('Page size (1–1000)', limit)),
      h('div', { class: 'submit-row' }, submit),
      h('div', { class: 'two' }, field('Key', key), h('div', { class: 'field end' }, get)));
    main.append(statusLine, form, h('section', { class: 'card' }, h('h2', {}, 'Documents'), count, listError, items,
      h('div', { class: 'pager' }, first, next, pageInfo)));

    loadStatuses();

    async function loadStatuses() {
      try {
        const statuses = await listProjections();
        pick.append(...statuses.map((s) => h('option', { value: s.name }, s.name)));
        if (name) pick.value = name;
        const status = statuses.find((s) => s.name === name);
        if (name && !status) showError(error, new Error('No projection named “' + name + '”.'));
        if (status) {
          setText(statusLine, 'Version ' + status.version + ', ' + status.state + ', checkpoint ' + (status.checkpoint === null ? 'none' : fmtInt(status.checkpoint)) + ', read model ' + status.read_model + '.');
          const known = [...new Set([...describedCollections(status), ...(seenCollections.get(name) || []), ...rememberedCollections(name)])];
          collections.replaceChildren(...known.map((c) => h('option', { value: c })));
          chips.replaceChildren(...(known.length ? ['Known collections: ', ...known.map((c) => h('button', { type: 'button', class: 'chip', on: { click: () => { collection.value = c; form.requestSubmit(); } } }, c))] : []));
        }
      } catch (e) {
        showError(error, e);
      }
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const c = collection.value.trim();
      if (!c) { showError(listError, new Error('Enter a collection name.')); return; }
      query = {
        collection: c,
        filters: filter.value.split('\n').map((f) => f.trim()).filter(Boolean),
        order: order.value.trim(),
        limit: limit.value.trim() || '20',
      };
      load(null);
      countDocuments();
    });

    get.addEventListener('click', async () => {
      const c = collection.value.trim();
      const k = key.value;
      if (!c || !k) { showError(listError, new Error('Enter a collection and a key to open one document.')); return; }
      try {
        const { data } = await api('GET', '/projections/' + enc(name) + '/collections/' + enc(c) + '/' + enc(k));
        listError.hidden = true;
        items.replaceChildren(docView(k, data));
        setText(count, 'One document, by key.');
        setText(pageInfo, '');
        next.disabled = first.disabled = true;
      } catch (e) {
        showError(listError, e);
      }
    });

    function params(extra) {
      const p = new URLSearchParams();
      query.filters.forEach((f) => p.append('filter', f));
      if (query.order) p.set('order_by', query.order);
      for (const [k, v] of Object.entries(extra)) p.set(k, v);
      return p;
    }

    const path = () => '/projections/' + enc(name) + '/collections/' + enc(query.collection);

    async function load(cursor) {
      setBusy(submit, true);
      try {
        const { data } = await api('GET', path(), { query: params(cursor ? { limit: query.limit, cursor } : { limit: query.limit }) });
        listError.hidden = true;
        rememberCollection(name, query.collection);
        pageNumber = cursor ? pageNumber + 1 : 1;
        nextCursor = data.next_cursor;
        items.replaceChildren(...data.items.map((item) => docView(item.key, item.doc)));
        if (!data.items.length) items.append(h('p', { class: 'muted' }, pageNumber === 1 ? 'No documents match in “' + query.collection + '”.' : 'No more documents.'));
        next.disabled = !nextCursor;
        first.disabled = pageNumber === 1;
        setText(pageInfo, 'Page ' + pageNumber + ' · ' + data.items.length + ' document' + (data.items.length === 1 ? '' : 's') + (nextCursor ? ' · more after these' : ' · the last page'));
      } catch (e) {
        showError(listError, e);
      } finally {
        setBusy(submit, false);
      }
    }

    async function countDocuments() {
      setText(count, 'Counting…');
      try {
        const { data } = await api('GET', path(), { query: params({ count: 'true' }) });
        setText(count, fmtInt(data.count) + ' document' + (data.count === 1 ? '' : 's') + (query.filters.length ? ' match these filters' : ' in “' + query.collection + '”') + '.');
      } catch (e) {
        setText(count, 'Count not available. ' + explain(e));
      }
    }
  }

  function docView(key, doc) {
    return h('article', { class: 'doc', testid: 'explore-item', 'data-key': key }, h('h3', { class: 'doc-key' }, key), jsonBlock(doc));
  }

  // ------------------------------------------------------------- start
  function start() {
    setupToken();
    window.addEventListener('hashchange', () => { route(); $('#main').focus({ preventScroll: true }); });
    document.addEventListener('keydown', (event) => { if (event.key === 'Escape' && closeConfirm) closeConfirm(false); });
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
