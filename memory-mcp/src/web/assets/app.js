// The web view of `memory serve`: reads /api/* and posts its actions with the page's CSRF
// value. Everything the memory holds is shown as text (never as HTML): task texts, steps and
// reflections come from agents.
'use strict';

const csrf = document.querySelector('meta[name="memory-csrf"]').content;
const $ = (id) => document.getElementById(id);
const state = { namespace: null, offset: 0, limit: 25, more: false, episode: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function showError(message) {
  const e = $('error');
  e.textContent = message || '';
  e.hidden = !message;
}

function notice(message) {
  $('notice').textContent = message || '';
}

async function call(method, path, params, body) {
  const url = new URL(path, window.location.origin);
  const merged = Object.assign({ namespace: state.namespace }, params || {});
  for (const [k, v] of Object.entries(merged)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.headers['x-memory-csrf'] = csrf;
    init.body = JSON.stringify(Object.assign({ namespace: state.namespace }, body));
  }
  const response = await fetch(url, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : { message: response.statusText };
    throw new Error(error.message + (error.hint ? ' (' + error.hint + ')' : ''));
  }
  return data;
}

const get = (path, params) => call('GET', path, params);
const post = (path, body) => call('POST', path, {}, body);

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toISOString().replace('T', ' ').slice(0, 16);
}

function pct(x) {
  return x === null || x === undefined ? '–' : Math.round(x * 100) + '%';
}

function contextText(c) {
  if (!c) return '';
  return [c.domain, c.language, c.framework].filter(Boolean).join(' / ');
}

// ---- tabs ----------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll('nav button')) {
    b.classList.toggle('active', b.dataset.tab === name);
  }
  for (const s of document.querySelectorAll('main > section')) {
    s.hidden = s.id !== 'tab-' + name;
  }
  if (name === 'learned') loadLearned();
  if (name === 'curve') loadCurve();
}

// ---- counts --------------------------------------------------------------------------------

async function loadCounts() {
  const stats = await get('/api/stats');
  const c = stats.counts || {};
  const n = (count, one, many) => `${count ?? 0} ${count === 1 ? one : many}`;
  $('counts').textContent =
    `${n(c.episodes, 'episode', 'episodes')} · ${n(c.active_patterns, 'pattern', 'patterns')} · ` +
    `${n(c.active_heuristics, 'heuristic', 'heuristics')} · ${n(c.lessons, 'lesson', 'lessons')}` +
    (stats.success_rate === null || stats.success_rate === undefined ? '' : ` · success ${pct(stats.success_rate)}`);
  $('counts').dataset.episodes = String(c.episodes ?? 0);
}

// ---- episodes ------------------------------------------------------------------------------

async function loadEpisodes() {
  const page = await get('/api/episodes', {
    q: $('search').value.trim(),
    status: $('status').value,
    domain: $('domain').value.trim(),
    language: $('language').value.trim(),
    limit: state.limit,
    offset: state.offset,
  });
  state.more = page.more;
  const rows = page.episodes.map((hit) => {
    const e = hit.episode;
    const outcome = e.outcome || (e.completed_at ? '' : 'in progress');
    return el('tr', { 'data-id': e.id, onclick: guarded(() => openEpisode(e.id)) },
      el('td', {}, e.task_description),
      el('td', {}, e.task_type),
      el('td', {}, contextText(e.context)),
      el('td', {}, e.step_count),
      el('td', { class: 'outcome-' + (e.outcome || 'none') }, outcome),
      el('td', {}, e.reward === null || e.reward === undefined ? '' : e.reward.toFixed(2)),
      el('td', {}, when(e.started_at)));
  });
  const filtered = $('search').value.trim() || $('status').value || $('domain').value.trim() || $('language').value.trim();
  const empty = el('tr', {}, el('td', { colspan: 7, class: 'empty' },
    filtered ? 'No episode matches.' : 'No episodes yet: agents record them through the MCP tools or the CLI.'));
  $('episodes').replaceChildren(...(rows.length ? rows : [empty]));
  $('page-info').textContent = page.episodes.length
    ? `${state.offset + 1}–${state.offset + page.episodes.length}`
    : '';
  $('prev').disabled = state.offset === 0;
  $('next').disabled = !state.more;
}

async function openEpisode(id) {
  const shown = await get('/api/episodes/' + encodeURIComponent(id));
  const e = shown.episode;
  state.episode = e.id;
  showTab('episodes');
  $('episode').hidden = false;
  $('episode').dataset.id = e.id;
  $('episode-title').textContent = e.task_description;
  const facts = [
    ['id', e.id],
    ['type', e.task_type],
    ['context', contextText(e.context)],
    ['started', when(e.started_at)],
    ['completed', when(e.completed_at)],
    ['outcome', e.outcome ? (e.outcome.type || e.outcome.kind || JSON.stringify(e.outcome)) : 'in progress'],
    ['verdict', e.outcome && (e.outcome.verdict || e.outcome.reason || '')],
    ['reward', e.reward ? (e.reward.total ?? e.reward.score ?? JSON.stringify(e.reward)) : ''],
    ['reflection', e.reflection ? reflectionText(e.reflection) : ''],
  ];
  $('episode-facts').replaceChildren(...facts.filter(([, v]) => v !== '' && v !== undefined && v !== null)
    .flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))]));
  const steps = (e.steps || []).map((s) => {
    const r = s.result || {};
    const status = r.status || r.type || (typeof r === 'string' ? r : '');
    const detail = r.output || r.error || r.message || '';
    return el('tr', {},
      el('td', {}, s.step_number),
      el('td', {}, s.tool),
      el('td', {}, s.action),
      el('td', {}, status),
      el('td', {}, typeof detail === 'string' ? detail : JSON.stringify(detail)));
  });
  $('episode-steps').replaceChildren(...steps);
  $('episode').scrollIntoView({ block: 'start' });
}

function reflectionText(r) {
  const parts = [];
  for (const key of ['successes', 'improvements', 'insights']) {
    if (Array.isArray(r[key]) && r[key].length) parts.push(key + ': ' + r[key].join('; '));
  }
  return parts.join('\n') || JSON.stringify(r);
}

async function forgetEpisode() {
  const id = state.episode;
  if (!id) return;
  const reason = $('forget-reason').value.trim() || 'forgotten from the web view';
  const report = await post('/api/forget', { episode_ids: [id], reason });
  $('episode').hidden = true;
  state.episode = null;
  $('forget-reason').value = '';
  const r = report.report || {};
  const removed = r.learned_removed
    ? ['patterns', 'heuristics', 'lessons'].reduce((n, k) => n + (r.learned_removed[k] || []).length, 0)
    : null;
  const changed = Array.isArray(r.learned_changed) ? r.learned_changed.reduce((a, b) => a + b, 0) : null;
  notice(report.journaled
    ? `Episode ${id} will be forgotten once the database answers (the erasure is journaled).`
    : `Forgot episode ${id}` + (removed === null ? '' : `: ${changed} learned items corrected, ${removed} removed`));
  await Promise.all([loadEpisodes(), loadCounts()]);
}

// ---- learned items -------------------------------------------------------------------------

const kindOf = { patterns: 'pattern', heuristics: 'heuristic', lessons: 'lesson' };

function evidenceOf(item) {
  return (item.recent_evidence || []).filter((ev) => ev.episode_id);
}

function statusName(status) {
  if (!status) return 'active';
  if (typeof status === 'string') return status;
  return status.state || status.status || Object.keys(status)[0] || 'active';
}

function statusReason(status) {
  return status && typeof status === 'object' && typeof status.reason === 'string' ? status.reason : '';
}

async function loadLearned() {
  const kind = $('kind').value;
  const list = await get('/api/learned', { kind, include_inactive: $('inactive').checked, limit: 50 });
  const cards = list.items.map((entry) => {
    const item = entry.pattern || entry.heuristic || entry.lesson || {};
    const text = entry.description || entry.text || '';
    const status = statusName(item.status);
    const pinned = item.pinned;
    const reason = el('input', { class: 'reason', placeholder: 'reason', 'aria-label': 'reason' });
    const act = (action) => async () => {
      try {
        await post('/api/correct', {
          kind: kindOf[kind], id: item.id, action,
          reason: reason.value.trim() || undefined,
        });
        notice(`${action === 'retract' ? 'Retracted' : action === 'pin' ? 'Pinned' : 'Unpinned'} ${kindOf[kind]} ${item.id}`);
        await Promise.all([loadLearned(), loadCounts()]);
      } catch (err) {
        showError(err.message);
      }
    };
    const actions = status === 'active'
      ? [
        reason,
        el('button', { type: 'button', class: 'retract', onclick: act('retract') }, 'Retract'),
        pinned
          ? el('button', { type: 'button', class: 'unpin quiet', onclick: act('unpin') }, 'Unpin')
          : el('button', { type: 'button', class: 'pin quiet', onclick: act('pin') }, 'Pin'),
      ]
      : [];
    // Episode ids are time-ordered (their first digits are alike): each link shows when the
    // episode was seen and the end of its id.
    const evidence = evidenceOf(item).map((ev) =>
      el('a', { class: 'episode-link', 'data-id': ev.episode_id, title: ev.episode_id, onclick: guarded(() => openEpisode(ev.episode_id)) },
        `${when(ev.at)} …${ev.episode_id.slice(-6)}`));
    const facts = [];
    if (entry.confidence !== undefined) facts.push('confidence ' + pct(entry.confidence));
    if (entry.success_rate !== undefined) facts.push('success ' + pct(entry.success_rate));
    if (item.occurrences !== undefined) facts.push(item.occurrences + ' occurrences');
    return el('div', { class: 'item' + (pinned ? ' pinned' : ''), 'data-id': item.id, 'data-status': status },
      el('div', {}, text,
        pinned ? el('span', { class: 'badge pin' }, 'pinned' + (pinned.reason ? ': ' + pinned.reason : '')) : null,
        status !== 'active'
          ? el('span', { class: 'badge retracted' }, status + (statusReason(item.status) ? ': ' + statusReason(item.status) : ''))
          : null),
      el('div', { class: 'meta' }, facts.join(' · ')),
      el('div', { class: 'meta' }, evidence.length ? 'evidence: ' : 'no recent evidence', ...evidence),
      actions.length ? el('div', { class: 'actions' }, ...actions) : null);
  });
  $('learned').replaceChildren(...(cards.length ? cards : [el('p', {}, 'Nothing learned of this kind yet.')]));
}

// ---- learning curve ------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function loadCurve() {
  const curve = await get('/api/curve');
  const points = curve.points;
  $('curve-caption').textContent = points.length
    ? `${curve.episodes} completed episodes${curve.capped ? ' (the most recent)' : ''}, per ${curve.bucket}: ` +
      'success rate (solid), mean reward (dashed), episodes (bars).'
    : 'No completed episodes yet.';
  if (!points.length) {
    $('curve').replaceChildren();
    return;
  }
  const W = 900, H = 300, L = 40, R = 40, T = 10, B = 40;
  const n = points.length;
  const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (1 - v) * (H - T - B);
  const most = Math.max(...points.map((p) => p.episodes), 1);
  const barWidth = Math.min(40, Math.max(2, (W - L - R) / n - 2));
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'learning curve' });
  for (const [i, p] of points.entries()) {
    const h = (p.episodes / most) * (H - T - B) * 0.5;
    chart.append(svg('rect', { class: 'bar', x: x(i) - barWidth / 2, y: H - B - h, width: barWidth, height: h },
      svg('title', {}, `${when(p.start)}: ${p.episodes} episodes, success ${pct(p.success_rate)}`)));
  }
  const line = (key, cls) => {
    const d = points.map((p, i) => [p[key], i]).filter(([v]) => v !== null && v !== undefined)
      .map(([v, i], k) => `${k ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    if (d) chart.append(svg('path', { class: cls, d }));
    for (const [i, p] of points.entries()) {
      if (p[key] !== null && p[key] !== undefined) {
        chart.append(svg('circle', { cx: x(i), cy: y(p[key]), r: 3.5, class: cls + '-dot' }));
      }
    }
  };
  line('success_rate', 'rate');
  line('mean_reward', 'reward');
  chart.append(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
  chart.append(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
  for (const v of [0, 0.5, 1]) chart.append(svg('text', { x: 4, y: y(v) + 4 }, pct(v)));
  if (n === 1) {
    chart.append(svg('text', { x: x(0) - 50, y: H - 12 }, when(points[0].start)));
  } else {
    chart.append(svg('text', { x: L, y: H - 12 }, when(points[0].start)));
    chart.append(svg('text', { x: W - R - 110, y: H - 12 }, when(points[n - 1].start)));
  }
  $('curve').replaceChildren(chart);
}

// ---- advice --------------------------------------------------------------------------------

function adviceSection(title, entries, render) {
  if (!entries || !entries.length) return null;
  return el('div', { class: 'advice-section' },
    el('h3', {}, title),
    ...entries.map((entry) => el('div', { class: 'item' + (entry.item && entry.item.pinned ? ' pinned' : ''), 'data-id': entry.item ? entry.item.id : (entry.episode ? entry.episode.id : '') },
      render(entry),
      entry.why ? el('div', { class: 'why' }, 'why: ' + entry.why) : null)));
}

async function advise(event) {
  event.preventDefault();
  const task = $('task').value.trim();
  if (!task) return;
  const context = {};
  if ($('advise-domain').value.trim()) context.domain = $('advise-domain').value.trim();
  if ($('advise-language').value.trim()) context.language = $('advise-language').value.trim();
  const answer = await post('/api/recommend', Object.keys(context).length ? { task, context } : { task });
  const r = answer.recommendation;
  const estimate = r.estimate || {};
  const estimateFacts = Object.entries(estimate).filter(([k, v]) => k !== 'why' && v !== null && typeof v !== 'object')
    .map(([k, v]) => `${k.replaceAll('_', ' ')}: ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(2) : v}`);
  $('advice').replaceChildren(el('div', { class: 'advice' },
    el('p', {}, r.strong_match ? 'A close match is known.' : 'Nothing close is known: treat this advice as weak.',
      r.advice_basis ? ' Based on ' + r.advice_basis + '.' : '', r.degraded ? ' (degraded: ' + r.degraded + ')' : ''),
    adviceSection('Similar episodes', r.episodes, (e) => el('div', {},
      el('a', { class: 'episode-link', 'data-id': e.episode.id, onclick: guarded(() => openEpisode(e.episode.id)) }, e.episode.task_description),
      el('span', { class: 'meta' }, ` ${e.episode.outcome || 'in progress'} · score ${e.score.toFixed(2)}`))),
    adviceSection('Patterns', r.patterns, (a) => el('div', {}, a.description || a.item.id,
      a.item.pinned ? el('span', { class: 'badge pin' }, 'pinned') : null)),
    adviceSection('Heuristics', r.heuristics, (a) => el('div', {}, a.description || a.item.id,
      a.item.pinned ? el('span', { class: 'badge pin' }, 'pinned') : null)),
    adviceSection('Pitfalls', r.pitfalls, (a) => el('div', {}, a.description || a.item.id)),
    adviceSection('Playbook', r.playbook, (s) => el('div', {}, `${s.order}. ${s.tool}`)),
    estimateFacts.length
      ? el('div', { class: 'advice-section' }, el('h3', {}, 'Estimate'), el('div', { class: 'item' },
        estimateFacts.join(' · '), estimate.why ? el('div', { class: 'why' }, 'why: ' + estimate.why) : null))
      : null));
}

// ---- start ---------------------------------------------------------------------------------

function guarded(fn) {
  return (...args) => {
    showError('');
    return Promise.resolve(fn(...args)).catch((err) => showError(err.message));
  };
}

async function start() {
  const session = await get('/api/session', { namespace: undefined });
  state.namespace = session.default_namespace;
  $('namespace').replaceChildren(...session.namespaces.map((ns) => el('option', { value: ns }, ns)));
  $('namespace').addEventListener('change', guarded(async () => {
    state.namespace = $('namespace').value;
    state.offset = 0;
    $('episode').hidden = true;
    await Promise.all([loadCounts(), loadEpisodes()]);
  }));
  for (const b of document.querySelectorAll('nav button')) {
    b.addEventListener('click', guarded(() => showTab(b.dataset.tab)));
  }
  $('search-form').addEventListener('submit', guarded(async (e) => {
    e.preventDefault();
    state.offset = 0;
    await loadEpisodes();
  }));
  $('prev').addEventListener('click', guarded(async () => {
    state.offset = Math.max(0, state.offset - state.limit);
    await loadEpisodes();
  }));
  $('next').addEventListener('click', guarded(async () => {
    state.offset += state.limit;
    await loadEpisodes();
  }));
  $('forget').addEventListener('click', guarded(forgetEpisode));
  $('kind').addEventListener('change', guarded(loadLearned));
  $('inactive').addEventListener('change', guarded(loadLearned));
  $('advise-form').addEventListener('submit', guarded(advise));
  await Promise.all([loadCounts(), loadEpisodes()]);
  document.body.dataset.ready = 'true';
}

guarded(start)();
