// strom web console: one ES module, no framework, no build step.
//
// It reads the server's state from one Server-Sent Events stream (GET /api/v1/events, read with fetch() so it can
// send the admin token; EventSource cannot), renders five hash-routed views from it, and calls the REST API for the
// few actions (record, disconnect, upload, delete, cancel/retry). The token lives in sessionStorage only.
// Players: hls.js and mpegts.js from ./vendor/, loaded on first use (UMD: window.Hls, window.mpegts).

const TOKEN_KEY = 'strom.token';
const HISTORY_MS = 15 * 60 * 1000;   // the server's history window (sparklines)
const BITRATE_MS = 5 * 60 * 1000;    // ingest bitrate kept client-side per stream
const WATCHDOG_MS = 60 * 1000;       // no byte (event or keep-alive) for this long: reconnect

// ------------------------------------------------------------------ small DOM helpers
const $ = (sel, root = document) => root.querySelector(sel);
const SVG_NS = 'http://www.w3.org/2000/svg';

/** h('div', {class: 'x', 'data-testid': 'y', onclick: fn}, child, 'text', [more]) */
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, kids);
  return el;
}
function svg(tag, props, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  append(el, kids);
  return el;
}
function setProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'hidden' || k === 'disabled' || k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}
function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}
/** Sets textContent only when it changes (no flicker, no lost selection). */
function setText(el, text) {
  const s = text === null || text === undefined ? '' : String(text);
  if (el.textContent !== s) el.textContent = s;
}
function setAttr(el, name, value) {
  const s = value === null || value === undefined ? null : String(value);
  if (s === null) { if (el.hasAttribute(name)) el.removeAttribute(name); }
  else if (el.getAttribute(name) !== s) el.setAttribute(name, s);
}
/** Rebuilds el's children only when `sig` (a string describing them) changed. */
function fill(el, sig, build) {
  if (el._sig === sig) return;
  el._sig = sig;
  el.replaceChildren(...[build()].flat(Infinity).filter((x) => x !== null && x !== undefined && x !== false)
    .map((x) => (x instanceof Node ? x : document.createTextNode(String(x)))));
}
/** Keyed list reconciliation: keeps one element per key (focus and state survive updates). */
function keyed(parent, items, keyOf, create, update) {
  const old = new Map();
  for (const el of Array.from(parent.children)) if (el._key !== undefined) old.set(el._key, el);
  let prev = null;
  for (const it of items) {
    const k = keyOf(it);
    let el = old.get(k);
    if (el) old.delete(k);
    else { el = create(it); el._key = k; }
    update(el, it);
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (want !== el) parent.insertBefore(el, want);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}
let uidSeq = 0;
const uid = (p) => `${p}-${++uidSeq}`;

// ------------------------------------------------------------------ formatting
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
function fmtBps(bps) {
  const v = num(bps);
  if (v === null) return '–';
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} Gb/s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : v >= 1e7 ? 1 : 2)} Mb/s`;
  if (v >= 1e3) return `${Math.round(v / 1e3)} kb/s`;
  return `${Math.round(v)} b/s`;
}
function fmtMbps(bps) {
  const v = num(bps);
  return v === null ? '–' : `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 1)} Mb/s`;
}
function fmtBytes(b) {
  const v = num(b);
  if (v === null) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0, x = v;
  while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; }
  return `${x.toFixed(i === 0 || x >= 100 ? 0 : 1)} ${u[i]}`;
}
function fmtDur(secs) {
  const v = num(secs);
  if (v === null) return '–';
  const s = Math.max(0, Math.floor(v));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${String(mm).padStart(2, '0')}m`;
  if (mm) return `${mm}m ${String(ss).padStart(2, '0')}s`;
  return `${ss}s`;
}
function fmtClock(secs) {
  const v = num(secs);
  if (v === null) return '–';
  const s = Math.max(0, Math.round(v));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return (hh ? `${hh}:${String(mm).padStart(2, '0')}` : `${mm}`) + `:${String(ss).padStart(2, '0')}`;
}
const fmtPct = (r) => (num(r) === null ? '–' : `${Math.round(r * 100)} %`);
function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleString([], { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
function fmtRes(s) {
  if (!s || !s.width || !s.height) return '–';
  const fps = num(s.fps);
  return `${s.width}×${s.height}${fps ? `@${fps % 1 ? fps.toFixed(2).replace(/0$/, '') : fps}` : ''}`;
}
const plural = (n, one, many) => `${n} ${n === 1 ? one : many || `${one}s`}`;

function badge(text, cls = '', title) {
  return h('span', { class: `badge ${cls}`.trim(), title }, text);
}

// ------------------------------------------------------------------ state
const S = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  authed: false,
  hello: null,
  nodes: null,
  history: null,
  streams: null,
  jobs: null,
  assets: null,
  bitrate: new Map(),          // stream key -> [[t_ms, bps], ...] (last BITRATE_MS)
  seen: new Set(),             // stream keys seen live/waiting in this session
  recOverride: new Map(),      // key -> {on, until}: a record action not yet seen in `assets`
};

function authHeaders(extra) {
  const hd = Object.assign({}, extra);
  if (S.token) hd.Authorization = `Bearer ${S.token}`;
  return hd;
}

const splitKey = (key) => {
  const i = key.indexOf('/');
  return i < 0 ? [key, ''] : [key.slice(0, i), key.slice(i + 1)];
};
const streamHref = (key) => `#/streams/${splitKey(key).map(encodeURIComponent).join('/')}`;
const streamApi = (key, tail) => `/api/v1/streams/${splitKey(key).map(encodeURIComponent).join('/')}/${tail}`;

function sortedNodes() {
  const list = (S.nodes && Array.isArray(S.nodes.nodes)) ? S.nodes.nodes.slice() : [];
  list.sort((a, b) => (b.self ? 1 : 0) - (a.self ? 1 : 0) || String(a.name).localeCompare(String(b.name)));
  return list;
}
function streamList() { return (S.streams && Array.isArray(S.streams.streams)) ? S.streams.streams : []; }
function jobList() { return (S.jobs && Array.isArray(S.jobs.jobs)) ? S.jobs.jobs : []; }
function assetList() { return (S.assets && Array.isArray(S.assets.assets)) ? S.assets.assets : []; }
const findStream = (key) => streamList().find((s) => s.key === key) || null;
const isGone = (s) => !s || s.state === 'ended';

function recordingOf(key) {
  return assetList().find((a) => a.kind === 'recording' && a.state === 'recording' && a.stream === key) || null;
}
function isRecording(key) {
  const real = !!recordingOf(key);
  const o = S.recOverride.get(key);
  if (o && Date.now() < o.until && o.on !== real) return o.on;
  return real;
}

/** Source streams (not ended), each with its ladder rungs; rungs whose source is not listed stand alone. */
function groupedStreams() {
  const all = streamList().filter((s) => !isGone(s));
  const keys = new Set(all.map((s) => s.key));
  const sources = all.filter((s) => !s.rung_of || !keys.has(s.rung_of));
  sources.sort((a, b) => a.key.localeCompare(b.key));
  return sources.map((src) => ({
    src,
    rungs: all.filter((s) => s.rung_of === src.key && s !== src)
      .sort((a, b) => (b.height || 0) - (a.height || 0) || a.key.localeCompare(b.key)),
  }));
}
/** Health of a rung against its source: ok (live, fps within 20 %), warn, bad. */
function rungHealth(rung, src) {
  if (!rung || rung.state === 'ended') return ['bad', 'ended'];
  if (rung.state !== 'live') return ['warn', rung.state || 'not live'];
  const sf = num(src && src.fps), rf = num(rung.fps);
  if (!sf || sf <= 0) return rf ? ['ok', 'live'] : ['warn', 'no frame rate yet'];
  if (!rf) return ['bad', 'no frames'];
  const off = Math.abs(rf - sf) / sf;
  if (off <= 0.2) return ['ok', 'healthy'];
  return [off <= 0.5 ? 'warn' : 'bad', `${rf.toFixed(1)} fps of ${sf.toFixed(1)}`];
}

// ------------------------------------------------------------------ toasts
function toast(msg, kind = 'info', ms) {
  const box = $('#toasts');
  const close = () => el.remove();
  const el = h('div', { class: `toast ${kind}`, 'data-testid': 'toast', 'data-kind': kind, role: kind === 'error' ? 'alert' : null },
    h('p', {}, msg),
    h('button', { type: 'button', 'aria-label': 'Dismiss notification', onclick: close }, '×'));
  box.append(el);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(close, ms || (kind === 'error' ? 10000 : 5000));
}

// ------------------------------------------------------------------ REST calls
async function errorText(res) {
  let text = '';
  try { text = await res.text(); } catch { /* body unreadable */ }
  try { const j = JSON.parse(text); if (j && j.error) return String(j.error); } catch { /* not JSON */ }
  return text.trim().slice(0, 200) || `HTTP ${res.status} ${res.statusText || ''}`.trim();
}
async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, { method, headers: authHeaders(body ? { 'Content-Type': 'application/json' } : {}), body: body ? JSON.stringify(body) : undefined, cache: 'no-store' });
  } catch (e) {
    throw new Error(`${method} ${path}: ${e.message || e}`);
  }
  if (!res.ok) throw new Error(await errorText(res));
  const text = await res.text();
  try { return text ? JSON.parse(text) : null; } catch { return text; }
}
/**
 * The URL to play `url` with: as it is, or, when the node signs play URLs (hello.auth.signed_play), with a token
 * for `prefix` (`/APP/NAME` or `/vod/ID`) from POST /api/v1/sign (admin token). An application without a play
 * key answers 404 there: its URLs stay as they are.
 */
async function playUrl(prefix, url) {
  if (!(S.hello && S.hello.auth && S.hello.auth.signed_play)) return url;
  try {
    const r = await api('POST', '/api/v1/sign', { path: prefix, ttl: 6 * 3600 });
    return r && r.token ? `${url}?token=${encodeURIComponent(r.token)}` : url;
  } catch (e) {
    if (!/not signed/.test(e.message || '')) toast(`No play token: ${e.message || e}`, 'error');
    return url;
  }
}
/** Runs an action from a button: disables it meanwhile, toasts the outcome. */
async function act(btn, fn, okMsg) {
  if (btn) btn.disabled = true;
  try {
    const r = await fn();
    if (okMsg) toast(typeof okMsg === 'function' ? okMsg(r) : okMsg, 'ok');
    return r;
  } catch (e) {
    toast(e.message || String(e), 'error');
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}

// ------------------------------------------------------------------ the event stream
const ev = { ctrl: null, gen: 0, attempt: 0, timer: null, lastByte: 0, everAuthed: false };
let loginError = '';

function setStatus(state, label) {
  const el = $('#events-status');
  el.dataset.state = state;
  setText($('.label', el), label || { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline', idle: '' }[state] || state);
}

function stopEvents() {
  ev.gen++;
  if (ev.timer) { clearTimeout(ev.timer); ev.timer = null; }
  if (ev.ctrl) { try { ev.ctrl.abort(); } catch { /* already done */ } ev.ctrl = null; }
}

async function connect({ fromLogin = false } = {}) {
  stopEvents();
  const gen = ev.gen;
  const ctrl = new AbortController();
  ev.ctrl = ctrl;
  setStatus(ev.attempt ? 'reconnecting' : 'connecting');
  let res;
  try {
    res = await fetch('/api/v1/events', { headers: authHeaders({ Accept: 'text/event-stream' }), cache: 'no-store', signal: ctrl.signal });
  } catch (e) {
    if (gen !== ev.gen) return;
    retry(gen, e.message || String(e));
    return;
  }
  if (gen !== ev.gen) return;
  if (res.status === 401 || res.status === 403) {
    const msg = await errorText(res);
    if (gen !== ev.gen) return;
    if (res.status === 401) {
      loginError = (S.token || fromLogin) ? 'Wrong token' : '';
      if (S.token) { S.token = ''; sessionStorage.removeItem(TOKEN_KEY); }
    } else {
      loginError = msg || 'Forbidden';
    }
    ev.attempt = 0;
    signedOut();
    return;
  }
  if (!res.ok || !res.body) {
    retry(gen, `HTTP ${res.status}`);
    return;
  }
  ev.lastByte = Date.now();
  signedIn();
  setStatus('live');
  try {
    await readSse(res.body, gen);
    if (gen !== ev.gen) return;
    retry(gen, 'the server closed the event stream');
  } catch (e) {
    if (gen !== ev.gen) return;
    retry(gen, e.message || String(e));
  }
}

function retry(gen, why) {
  if (gen !== ev.gen) return;
  const base = Math.min(15000, 1000 * 2 ** Math.min(ev.attempt, 4));
  const delay = ev.attempt === 0 ? 500 : Math.round(base * (0.8 + Math.random() * 0.4));
  ev.attempt++;
  setStatus('reconnecting', `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
  $('#events-status').title = `Event stream lost: ${why}`;
  if (!S.authed) renderUnreachable(why);
  ev.timer = setTimeout(() => { ev.timer = null; connect(); }, delay);
}

async function readSse(body, gen) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '', name = '', data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (gen !== ev.gen) return;
      if (done) return;
      ev.lastByte = Date.now();
      buf += dec.decode(value, { stream: true });
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) break;
        if (m[0] === '\r' && m.index === buf.length - 1) break; // a CR LF split across reads
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) dispatch(name || 'message', data.join('\n'));
          name = ''; data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // comment / keep-alive
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') name = val;
        else if (field === 'data') data.push(val);
      }
    }
  } finally {
    try { reader.cancel().catch(() => {}); } catch { /* closed */ }
  }
}

const EVENT_NAMES = new Set(['hello', 'nodes', 'history', 'streams', 'jobs', 'assets']);
function dispatch(name, text) {
  if (!EVENT_NAMES.has(name)) return;
  let payload;
  try { payload = JSON.parse(text); } catch (e) { console.warn(`strom: bad ${name} event`, e); return; }
  ev.attempt = 0;
  if (name === 'streams') noteStreams(payload);
  if (name === 'assets') {
    S.assets = payload;
    for (const [k, o] of S.recOverride) if (Date.now() >= o.until || o.on === !!recordingOf(k)) S.recOverride.delete(k);
  } else {
    S[name] = payload;
  }
  if (name === 'hello') renderHeader();
  if (current) {
    try { current.view.update(name); } catch (e) { console.error('strom: render failed', e); }
  }
}

function noteStreams(payload) {
  const now = Date.now();
  const list = Array.isArray(payload && payload.streams) ? payload.streams : [];
  for (const s of list) {
    if (!s || !s.key) continue;
    if (!isGone(s)) S.seen.add(s.key);
    let arr = S.bitrate.get(s.key);
    if (!arr) S.bitrate.set(s.key, arr = []);
    if (num(s.ingest_bitrate) !== null) arr.push([now, s.ingest_bitrate]);
    while (arr.length && arr[0][0] < now - BITRATE_MS) arr.shift();
  }
  const keys = new Set(list.map((s) => s.key));
  for (const [k, arr] of S.bitrate) {
    if (!keys.has(k) && (!arr.length || arr[arr.length - 1][0] < now - BITRATE_MS)) S.bitrate.delete(k);
  }
  S.streams = payload;
}

setInterval(() => {
  if (S.authed && ev.ctrl && !ev.timer && Date.now() - ev.lastByte > WATCHDOG_MS) {
    const gen = ev.gen;
    try { ev.ctrl.abort(); } catch { /* done */ }
    retry(gen, `no data for ${WATCHDOG_MS / 1000} s`);
  }
}, 5000);

// ------------------------------------------------------------------ sign in / out
function signedIn() {
  const first = !S.authed;
  S.authed = true;
  ev.everAuthed = true;
  loginError = '';
  $('#nav').hidden = false;
  $('#logout').hidden = !S.token;
  if (first) {
    current = null;
    route(false);
  }
}

function signedOut() {
  S.authed = false;
  if (current) { try { current.view.unmount(); } catch { /* ignore */ } current = null; }
  Object.assign(S, { hello: null, nodes: null, history: null, streams: null, jobs: null, assets: null });
  S.bitrate.clear();
  S.recOverride.clear();
  $('#nav').hidden = true;
  $('#logout').hidden = true;
  renderHeader();
  setStatus('offline', 'Signed out');
  renderLogin();
}

function logout() {
  stopEvents();
  S.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  loginError = '';
  ev.attempt = 0;
  signedOut();
}

function renderLogin() {
  const main = $('#main');
  const input = h('input', { type: 'password', id: 'login-token', name: 'token', autocomplete: 'current-password', spellcheck: 'false', 'data-testid': 'login-token', 'aria-describedby': 'login-help' });
  const err = h('p', { class: 'error', id: 'login-error', 'data-testid': 'login-error', role: 'alert' }, loginError);
  const btn = h('button', { type: 'submit', class: 'btn', 'data-testid': 'login-submit' }, 'Sign in');
  const form = h('form', {
    novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      S.token = input.value.trim();
      if (S.token) sessionStorage.setItem(TOKEN_KEY, S.token); else sessionStorage.removeItem(TOKEN_KEY);
      setText(err, '');
      btn.disabled = true;
      setText(btn, 'Signing in…');
      ev.attempt = 0;
      connect({ fromLogin: true });
    },
  },
  h('div', { class: 'field' },
    h('label', { for: 'login-token' }, 'Admin token'),
    input,
    h('span', { class: 'hint', id: 'login-help' }, 'The node’s auth.admin_token (STROM_AUTH_ADMIN_TOKEN). Kept in this browser tab only.')),
  err, btn);
  main.replaceChildren(h('section', { class: 'login panel', 'aria-labelledby': 'login-h' },
    h('h1', { id: 'login-h' }, 'Sign in to strom'), form));
  document.title = 'Sign in · strom';
  input.focus();
}

function renderUnreachable(why) {
  if (S.authed) return;
  const main = $('#main');
  main.replaceChildren(h('section', { class: 'panel' },
    h('h1', {}, 'Connecting to strom…'),
    h('p', { class: 'muted' }, `The server does not answer yet (${why}). Retrying.`)));
}

function renderHeader() {
  const el = $('#node-info');
  const hl = S.hello;
  if (!hl) { el.replaceChildren(); return; }
  fill(el, JSON.stringify([hl.node, hl.version, hl.rtmp_port, hl.auth]), () => [
    'Connected to ', h('strong', {}, hl.node || '?'),
    hl.version ? ` · v${hl.version}` : '',
    hl.rtmp_port ? ` · RTMP :${hl.rtmp_port}` : '',
    hl.auth && hl.auth.admin_token === false ? ' · no admin token set (loopback only)' : '',
  ]);
}

// ------------------------------------------------------------------ players
const scripts = new Map();
function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const s = h('script', { src });
      s.onload = () => resolve();
      s.onerror = () => { scripts.delete(src); reject(new Error(`could not load ${src}`)); };
      document.head.append(s);
    }));
  }
  return scripts.get(src);
}
const hasMse = () => !!(window.MediaSource || window.ManagedMediaSource || window.WebKitMediaSource);

/**
 * One player on one <video>: kind 'llhls' | 'hls' | 'flv' | 'vod'. Reports through onStatus(text, bad) and, for
 * HLS, onLevels(levels, currentLevel, autoEnabled).
 */
function makePlayer(video, { onStatus = () => {}, onLevels = () => {} } = {}) {
  let hls = null, flv = null, gen = 0, netRetries = 0, mediaRetries = 0, retryTimer = null;
  const say = (t, bad = false) => onStatus(t, bad);
  const onVideo = (e) => {
    if (e.type === 'playing' || (e.type === 'resize' && !video.paused)) say(video.videoWidth ? `Playing ${video.videoWidth}×${video.videoHeight}` : 'Playing');
    else if (e.type === 'waiting') say('Buffering…');
    else if (e.type === 'error') say(`Video error${video.error ? ` (code ${video.error.code}${video.error.message ? `: ${video.error.message}` : ''})` : ''}`, true);
  };
  for (const t of ['playing', 'waiting', 'error', 'resize']) video.addEventListener(t, onVideo);
  const tryPlay = () => { const p = video.play(); if (p && p.catch) p.catch(() => {}); };

  function stop() {
    gen++;
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    if (hls) { try { hls.destroy(); } catch { /* ignore */ } hls = null; }
    if (flv) {
      try { flv.pause(); flv.unload(); flv.detachMediaElement(); flv.destroy(); } catch { /* ignore */ }
      flv = null;
    }
    video.removeAttribute('src');
    try { video.load(); } catch { /* ignore */ }
    netRetries = 0; mediaRetries = 0;
  }

  async function play(kind, url) {
    stop();
    const g = gen;
    video.muted = true;
    say('Loading…');
    try {
      if (kind === 'flv') {
        if (!hasMse()) { say('This browser cannot play HTTP-FLV (no Media Source Extensions).', true); return; }
        await loadScript('./vendor/mpegts.min.js');
        if (g !== gen) return;
        const mpegts = window.mpegts;
        if (!mpegts || !mpegts.getFeatureList().mseLivePlayback) { say('This browser cannot play HTTP-FLV.', true); return; }
        try { mpegts.LoggingControl.applyConfig({ enableVerbose: false, enableDebug: false, enableInfo: false }); } catch { /* older API */ }
        flv = mpegts.createPlayer({ type: 'flv', isLive: true, url: new URL(url, location.href).href },
          { enableStashBuffer: false, liveBufferLatencyChasing: true, lazyLoad: false, autoCleanupSourceBuffer: true });
        flv.on(mpegts.Events.ERROR, (type, detail, info) => {
          if (g !== gen) return;
          say(`HTTP-FLV error: ${type}${detail ? ` / ${detail}` : ''}${info && info.msg ? ` (${info.msg})` : ''}`, true);
        });
        flv.attachMediaElement(video);
        flv.load();
        tryPlay();
        return;
      }
      const native = video.canPlayType('application/vnd.apple.mpegurl');
      if (!hasMse() && native) {
        video.src = url;
        tryPlay();
        onLevels([], -1, true);
        return;
      }
      await loadScript('./vendor/hls.min.js');
      if (g !== gen) return;
      const Hls = window.Hls;
      if (!Hls || !Hls.isSupported()) {
        if (native) { video.src = url; tryPlay(); return; }
        say('This browser cannot play HLS.', true);
        return;
      }
      const live = kind !== 'vod';
      hls = new Hls({
        lowLatencyMode: kind === 'llhls',
        backBufferLength: live ? 30 : 90,
        enableWorker: true,
        manifestLoadingMaxRetry: 6,
        levelLoadingMaxRetry: 6,
        fragLoadingMaxRetry: 6,
      });
      const H = Hls.Events;
      const levels = () => onLevels(hls ? hls.levels : [], hls ? hls.currentLevel : -1, hls ? hls.autoLevelEnabled : true);
      hls.on(H.MANIFEST_PARSED, () => { if (g === gen) { levels(); tryPlay(); } });
      hls.on(H.LEVEL_SWITCHED, () => { if (g === gen) levels(); });
      hls.on(H.FRAG_BUFFERED, () => { netRetries = 0; });
      hls.on(H.ERROR, (_e, d) => {
        if (g !== gen || !d || !d.fatal) return;
        if (d.type === Hls.ErrorTypes.NETWORK_ERROR && netRetries < 10) {
          netRetries++;
          say(`Network error (${d.details}), retrying…`, true);
          retryTimer = setTimeout(() => { retryTimer = null; if (g === gen && hls) hls.startLoad(); }, 1500 * netRetries);
        } else if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRetries < 3) {
          mediaRetries++;
          say(`Media error (${d.details}), recovering…`, true);
          hls.recoverMediaError();
        } else {
          say(`Playback failed: ${d.details || d.type}${d.reason ? ` (${d.reason})` : ''}`, true);
          const h2 = hls; hls = null;
          try { h2.destroy(); } catch { /* ignore */ }
        }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } catch (e) {
      if (g === gen) say(`Player failed: ${e.message || e}`, true);
    }
  }

  function setLevel(i) {
    if (!hls) return;
    hls.currentLevel = i; // -1: automatic
  }

  function destroy() {
    stop();
    for (const t of ['playing', 'waiting', 'error', 'resize']) video.removeEventListener(t, onVideo);
  }
  return { play, stop, setLevel, destroy, get hls() { return hls; } };
}

// ------------------------------------------------------------------ charts
/** Points for an SVG polyline in a 0..w × 0..ht box from [[t, v]] over [t0, t1]. */
function chartPoints(samples, t0, t1, max, w, ht) {
  const span = Math.max(1, t1 - t0);
  return samples.map(([t, v]) => {
    const x = ((t - t0) / span) * w;
    const y = ht - (Math.max(0, v) / max) * (ht - 2) - 1;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
}
function sparkline(label) {
  const line = svg('polyline', { points: '' });
  const area = svg('polygon', { points: '' });
  const el = svg('svg', { class: 'spark', viewBox: '0 0 100 28', preserveAspectRatio: 'none', role: 'img', 'aria-label': label }, area, line);
  el._set = (samples, { max, fmt = String } = {}) => {
    const vals = samples.map((s) => s[1]);
    const peak = vals.length ? Math.max(...vals) : 0;
    const top = Math.max(max || 0, peak, 1e-9);
    const t1 = samples.length ? samples[samples.length - 1][0] : Date.now();
    const pts = chartPoints(samples, t1 - HISTORY_MS, t1, top, 100, 28);
    const p = pts.join(' ');
    setAttr(line, 'points', p);
    setAttr(area, 'points', pts.length ? `${pts[0].split(',')[0]},28 ${p} ${pts[pts.length - 1].split(',')[0]},28` : '');
    setAttr(el, 'aria-label', `${label}, last 15 minutes: ${samples.length ? `peak ${fmt(peak)}` : 'no samples yet'}`);
  };
  return el;
}

// ------------------------------------------------------------------ views
let current = null; // {name, key, view}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  switch (parts[0]) {
    case 'streams':
      if (parts.length >= 3) return { name: 'stream', key: parts.slice(1).join('/') };
      return { name: 'streams' };
    case 'vod': return { name: 'vod' };
    case 'cluster': return { name: 'cluster' };
    default: return { name: 'overview' };
  }
}

const VIEWS = { overview: overviewView, streams: streamsView, stream: streamDetailView, vod: vodView, cluster: clusterView };
const NAV_OF = { overview: 'overview', streams: 'streams', stream: 'streams', vod: 'vod', cluster: 'cluster' };

function route(fromNav) {
  if (!S.authed) return;
  const r = parseHash();
  if (current && current.name === r.name && current.key === r.key) return;
  if (current) { try { current.view.unmount(); } catch (e) { console.error(e); } }
  const main = $('#main');
  main.replaceChildren();
  const view = VIEWS[r.name](r.key);
  current = { ...r, view };
  view.mount(main);
  document.title = `${view.title} · strom`;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === NAV_OF[r.name]) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  try { view.update('all'); } catch (e) { console.error('strom: render failed', e); }
  if (fromNav) {
    window.scrollTo(0, 0);
    const h1 = $('h1', main);
    if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
  }
}

/** A horizontally scrollable table container (keyboard-focusable, labelled), stacked into cards on phones. */
function tableWrap(label, headers, tbody) {
  return h('div', { class: 'table-wrap stack-sm', tabindex: '0', role: 'region', 'aria-label': label },
    h('table', {},
      h('thead', {}, h('tr', {}, headers.map((c) => {
        const [text, cls, hidden] = Array.isArray(c) ? c : [c];
        return h('th', { scope: 'col', class: cls }, hidden ? h('span', { class: 'visually-hidden' }, text) : text);
      }))),
      tbody));
}
/** Creates the row's cells (one per label) and returns their content boxes (one element each, so a stacked
 *  phone layout keeps each cell's content together). */
function cells(tr, labels) {
  return labels.map((l) => {
    const [label, cls] = Array.isArray(l) ? l : [l];
    const cv = h('div', { class: 'cv' });
    tr.append(h('td', { 'data-label': label, class: cls }, cv));
    return cv;
  });
}

// ----------------------------------------------------------- overview
function overviewView() {
  let cards, summary, note;
  const METRICS = [
    { id: 'ratio', label: 'Load', value: (l) => fmtPct(l.ratio), fmt: fmtPct, bar: true, max: 1 },
    { id: 'cpu', label: 'CPU', value: (l) => `${(num(l.cpu) ?? 0).toFixed(2)} cores`, fmt: (v) => `${v.toFixed(2)} cores` },
    { id: 'egress_bps', label: 'Egress', value: (l) => fmtMbps(l.egress_bps), fmt: fmtMbps },
    { id: 'streams', label: 'Streams', value: (l) => String(l.streams ?? 0), fmt: String },
    { id: 'players', label: 'Viewers', value: (l) => String(l.players ?? 0), fmt: String },
  ];
  function createCard(n) {
    const hid = uid('node');
    const badges = h('span', { class: 'badges' });
    const rows = METRICS.map((m) => {
      const val = h('span', { class: 'val' });
      const bar = m.bar ? h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: 'width:0%' })) : null;
      const spark = sparkline(`${m.label} of ${n.name}`);
      const dd = h('dd', {}, spark, h('span', { class: 'val-wrap' }, val, bar));
      return { m, val, bar, spark, el: h('div', { class: 'metric' }, h('dt', {}, m.label), dd) };
    });
    const foot = h('p', { class: 'card-foot' });
    const el = h('article', { class: 'card', 'data-testid': 'node-card', 'data-node': n.name, 'aria-labelledby': hid },
      h('div', { class: 'card-head' }, h('h2', { id: hid }, n.name), badges),
      h('dl', { class: 'metrics' }, rows.map((r) => r.el)),
      foot);
    el._parts = { badges, rows, foot };
    return el;
  }
  function updateCard(el, n) {
    const { badges, rows, foot } = el._parts;
    const load = n.load || {};
    const draining = !!(n.draining || load.draining);
    fill(badges, JSON.stringify([n.self, n.state, n.ready, draining]), () => [
      n.self ? badge('this node', 'info') : null,
      n.state === 'suspect' ? badge('suspect', 'bad', 'Heartbeats are late') : null,
      draining ? badge('draining', 'warn') : (n.ready ? badge('ready', 'ok') : badge('not ready', 'warn')),
    ]);
    const hist = (S.history && S.history.nodes && S.history.nodes[n.name]) || [];
    for (const r of rows) {
      setText(r.val, n.load ? r.m.value(load) : '–');
      if (r.bar) {
        const pct = Math.max(0, Math.min(100, (num(load.ratio) ?? 0) * 100));
        const inner = r.bar.firstChild;
        const w = `width:${pct.toFixed(1)}%`;
        if (inner.getAttribute('style') !== w) inner.setAttribute('style', w);
        setAttr(r.bar, 'class', `bar${pct >= 90 ? ' bad' : pct >= 70 ? ' warn' : ''}`);
      }
      const samples = hist.filter((s) => s && num(s.t) !== null && num(s[r.m.id]) !== null).map((s) => [s.t, s[r.m.id]]);
      r.spark._set(samples, { max: r.m.max, fmt: r.m.fmt });
    }
    const enc = n.load ? `encoders ${load.encoders ?? 0}/${(load.encoders ?? 0) + (load.encoder_slots ?? 0)}` : null;
    const vod = n.load ? `VOD chunks ${load.vod_chunks ?? 0}/${load.vod_slots ?? 0}` : null;
    const rtt = n.self ? null : (num(n.rtt_ms) !== null ? `RTT ${n.rtt_ms.toFixed(1)} ms` : 'RTT –');
    setText(foot, [n.address, rtt, enc, vod].filter(Boolean).join(' · '));
  }
  return {
    title: 'Overview',
    mount(main) {
      main.append(h('h1', {}, 'Overview'), summary = h('p', { class: 'summary' }), note = h('p', { class: 'muted' }), cards = h('div', { class: 'cards' }));
    },
    update(what) {
      if (!['all', 'nodes', 'history', 'streams', 'jobs'].includes(what)) return;
      const nodes = sortedNodes();
      setText(note, S.nodes === null ? 'Waiting for the node list…' : (nodes.length ? '' : 'No nodes reported.'));
      note.hidden = !note.textContent;
      keyed(cards, nodes, (n) => n.name, createCard, updateCard);
      const groups = groupedStreams();
      const viewers = groups.reduce((a, g) => a + (g.src.viewers_rtmp || 0) + (g.src.viewers_flv || 0) + (g.src.viewers_hls || 0)
        + g.rungs.reduce((b, r) => b + (r.viewers_rtmp || 0) + (r.viewers_flv || 0) + (r.viewers_hls || 0), 0), 0);
      const running = jobList().filter((j) => ['pending', 'probing', 'running'].includes(j.state)).length;
      fill(summary, JSON.stringify([nodes.length, groups.length, viewers, running]), () => [
        h('span', {}, h('strong', {}, nodes.length), ` ${nodes.length === 1 ? 'node' : 'nodes'}`),
        h('span', {}, h('strong', {}, groups.length), ` live ${groups.length === 1 ? 'stream' : 'streams'}`),
        h('span', {}, h('strong', {}, viewers), ` ${viewers === 1 ? 'viewer' : 'viewers'}`),
        h('span', {}, h('strong', {}, running), ` VOD ${running === 1 ? 'job' : 'jobs'} running`),
      ]);
    },
    unmount() {},
  };
}

// ----------------------------------------------------------- streams list
function emptyStreams() {
  const host = location.hostname || 'HOST';
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const port = (S.hello && S.hello.rtmp_port) || 1935;
  const server = `rtmp://${hostPart}:${port}/live`;
  return h('div', { class: 'empty', 'data-testid': 'empty-streams' },
    h('h2', {}, 'No live streams'),
    h('p', {}, 'Publish to ', h('code', {}, `${server}/KEY`), ' with OBS (Server ', h('code', {}, server), ', Stream Key ', h('code', {}, 'KEY'), '), or with ffmpeg:'),
    h('pre', {}, `ffmpeg -re -i FILE -c copy -f flv ${server}/KEY`));
}

function streamsView() {
  let tbody, wrap, empty, summary;
  const LABELS = ['Stream', 'State', 'Video', ['Bitrate', 'num'], 'Viewers (RTMP / FLV / HLS)', ['Node', 'nowrap'], 'Relayed by', 'Recording'];
  function create(item) {
    const s = item.s;
    const tr = h('tr', { class: `clickable${item.rung ? ' rung' : ''}`, 'data-testid': item.rung ? 'rung-row' : 'stream-row', 'data-key': s.key });
    tr._cells = cells(tr, LABELS);
    tr._link = h('a', { class: 'key', href: streamHref(s.key) }, s.key);
    tr._cells[0].append(tr._link);
    tr.addEventListener('click', (e) => {
      if (e.target.closest('a, button, input, select')) return;
      location.hash = tr._link.getAttribute('href');
    });
    return tr;
  }
  function update(tr, item) {
    const { s, src } = item;
    const c = tr._cells;
    setAttr(tr, 'data-node', s.node || '');
    setAttr(tr, 'data-state', s.state || '');
    fill(c[1], JSON.stringify([s.state, item.rung ? rungHealth(s, src) : null]), () => {
      if (item.rung) {
        const [cls, why] = rungHealth(s, src);
        return [h('span', { class: `dot ${cls}`, 'aria-hidden': 'true' }), `${s.rung || 'rung'} · ${why}`];
      }
      return badge(s.state || '?', s.state === 'live' ? 'ok' : s.state === 'waiting' ? 'warn' : '');
    });
    setText(c[2], fmtRes(s));
    setText(c[3], fmtBps(s.ingest_bitrate));
    setText(c[4], `${s.viewers_rtmp ?? 0} / ${s.viewers_flv ?? 0} / ${s.viewers_hls ?? 0}`);
    setText(c[5], s.node || '–');
    setText(c[6], Array.isArray(s.relays) && s.relays.length ? s.relays.join(', ') : '–');
    const rec = !item.rung && isRecording(s.key);
    fill(c[7], String(rec), () => (rec ? badge('recording', 'rec') : h('span', { class: 'muted' }, item.rung ? '' : 'no')));
  }
  return {
    title: 'Streams',
    mount(main) {
      tbody = h('tbody');
      wrap = tableWrap('Live streams', LABELS.map((l) => (Array.isArray(l) ? l : [l])), tbody);
      empty = h('div');
      main.append(h('h1', {}, 'Streams'), summary = h('p', { class: 'summary' }), wrap, empty);
    },
    update(what) {
      if (!['all', 'streams', 'assets', 'hello'].includes(what)) return;
      const groups = groupedStreams();
      const items = [];
      for (const g of groups) {
        items.push({ s: g.src, rung: false });
        for (const r of g.rungs) items.push({ s: r, src: g.src, rung: true });
      }
      keyed(tbody, items, (it) => `${it.rung ? 'r' : 's'}:${it.s.key}`, create, update);
      const none = S.streams !== null && groups.length === 0;
      wrap.hidden = groups.length === 0;
      fill(empty, `${none}:${S.hello && S.hello.rtmp_port}`, () => (none ? emptyStreams()
        : (S.streams === null ? h('p', { class: 'muted' }, 'Waiting for the stream list…') : null)));
      const viewers = items.reduce((a, it) => a + (it.s.viewers_rtmp || 0) + (it.s.viewers_flv || 0) + (it.s.viewers_hls || 0), 0);
      setText(summary, S.streams === null ? '' : `${plural(groups.length, 'live stream')} · ${plural(viewers, 'viewer')}`);
    },
    unmount() {},
  };
}

// ----------------------------------------------------------- stream detail
function streamDetailView(key) {
  let root, stateBadge, endedBox, actions, btnRecStart, btnRecStop, btnDisc, protoSel, video, pstatus, details,
    chart, chartLine, chartArea, chartLegend, chartNow, viewersBox, ladderBox, recBox;
  let player = null, playing = null, proto = sessionStorage.getItem('strom.proto') || 'llhls';
  const [app, name] = splitKey(key);

  async function startPlayer() {
    const url = proto === 'flv' ? `/${encodeURIComponent(app)}/${encodeURIComponent(name)}.flv`
      : `/${encodeURIComponent(app)}/${encodeURIComponent(name)}/index.m3u8`;
    const want = proto;
    playing = proto;
    const signed = await playUrl(`/${app}/${name}`, url);
    if (playing !== want) return; // stopped or switched meanwhile
    player.play(proto, signed);
  }
  function stopPlayer(msg) {
    if (playing) { player.stop(); playing = null; }
    if (msg) { setText(pstatus, msg); pstatus.className = 'player-status'; }
  }

  async function record(on, btn) {
    const r = await act(btn, () => api(on ? 'POST' : 'DELETE', streamApi(key, 'record')),
      on ? 'Recording started' : 'Recording stopped');
    if (r !== undefined) {
      S.recOverride.set(key, { on, until: Date.now() + 8000 });
      update('assets');
    }
  }
  async function disconnect() {
    if (!window.confirm(`Disconnect the publisher of ${key}? Its viewers lose the stream.`)) return;
    await act(btnDisc, () => api('DELETE', streamApi(key, 'publisher')), `Publisher of ${key} disconnected`);
  }

  function drawChart() {
    const samples = S.bitrate.get(key) || [];
    const now = Date.now();
    const vals = samples.map((x) => x[1]);
    const peak = vals.length ? Math.max(...vals) : 0;
    const top = Math.max(peak * 1.15, 1e5);
    const pts = chartPoints(samples, now - BITRATE_MS, now, top, 600, 140);
    setAttr(chartLine, 'points', pts.join(' '));
    setAttr(chartArea, 'points', pts.length ? `${pts[0].split(',')[0]},140 ${pts.join(' ')} ${pts[pts.length - 1].split(',')[0]},140` : '');
    const last = vals.length ? vals[vals.length - 1] : null;
    setAttr(chart, 'aria-label', `Ingest bitrate, last 5 minutes: now ${fmtBps(last)}, peak ${fmtBps(peak)}`);
    setText(chartNow, `now ${fmtBps(last)} · peak ${fmtBps(peak)} · scale ${fmtBps(top)}`);
  }

  function update(what) {
    if (!['all', 'streams', 'assets'].includes(what)) return;
    const s = findStream(key);
    const known = S.streams !== null;
    const gone = known && isGone(s);
    // ended / not live
    endedBox.hidden = !gone;
    setText(endedBox, S.seen.has(key) ? 'Stream ended' : 'Stream not live');
    actions.hidden = gone || !known;
    fill(stateBadge, s ? s.state : (gone ? 'ended' : ''), () => (s ? badge(s.state, s.state === 'live' ? 'ok' : s.state === 'waiting' ? 'warn' : '')
      : (gone ? badge('ended') : null)));
    if (gone) stopPlayer('Stream ended: nothing to play.');
    else if (s && !playing) startPlayer();

    const rec = isRecording(key);
    btnRecStart.hidden = rec;
    btnRecStop.hidden = !rec;
    if (s) {
      const rows = [
        ['State', s.state],
        ['Video', [s.video_codec || '–', fmtRes(s)].join(' · ')],
        ['Audio', s.audio_codec ? `${s.audio_codec}${s.audio_sample_rate ? ` · ${(s.audio_sample_rate / 1000).toFixed(1)} kHz` : ''}` : '–'],
        ['Ingest', `${fmtBps(s.ingest_bitrate)} · ${fmtBytes(s.ingest_bytes)} received`],
        ['Encoder', s.encoder || '–'],
        ['Uptime', fmtDur(s.uptime_secs)],
        ['Owner node', s.node || '–'],
        ['Relayed by', Array.isArray(s.relays) && s.relays.length ? s.relays.join(', ') : 'no other node'],
      ];
      if (s.rung_of) rows.push(['Rung of', h('a', { href: streamHref(s.rung_of) }, s.rung_of)]);
      fill(details, JSON.stringify(rows.map((r) => (r[1] instanceof Node ? r[1].textContent : r[1]))), () => rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
      fill(viewersBox, JSON.stringify([s.viewers_rtmp, s.viewers_flv, s.viewers_hls]), () => {
        const r = s.viewers_rtmp || 0, f = s.viewers_flv || 0, hh = s.viewers_hls || 0;
        return [['RTMP', r], ['HTTP-FLV', f], ['HLS', hh], ['Total', r + f + hh]].map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)));
      });
    }
    drawChart();
    // ladder
    const rungs = streamList().filter((x) => x.rung_of === key && !isGone(x)).sort((a, b) => (b.height || 0) - (a.height || 0));
    fill(ladderBox, JSON.stringify(rungs.map((r) => [r.key, r.state, r.width, r.height, r.fps, r.ingest_bitrate, r.viewers_hls, r.viewers_flv, r.viewers_rtmp, r.node, s && s.fps])), () => {
      if (!rungs.length) return h('p', { class: 'muted' }, s && s.rung_of ? 'This is a rung of a ladder.' : 'No ladder: this stream is played as published (transcoding is off, or not started yet).');
      return tableWrap(`Ladder of ${key}`, ['Rung', 'Health', 'Video', ['Bitrate', 'num'], 'Viewers', 'Node'], h('tbody', {}, rungs.map((r) => {
        const [cls, why] = rungHealth(r, s);
        const tr = h('tr', { 'data-testid': 'ladder-row', 'data-key': r.key, 'data-health': cls });
        const c = cells(tr, ['Rung', 'Health', 'Video', ['Bitrate', 'num'], 'Viewers', 'Node']);
        c[0].append(h('a', { class: 'key', href: streamHref(r.key) }, r.rung || r.key));
        c[1].append(h('span', { class: `dot ${cls}`, 'aria-hidden': 'true' }), why);
        c[2].append(fmtRes(r));
        c[3].append(fmtBps(r.ingest_bitrate));
        c[4].append(String((r.viewers_rtmp || 0) + (r.viewers_flv || 0) + (r.viewers_hls || 0)));
        c[5].append(r.node || '–');
        return tr;
      })));
    });
    // recording
    const a = recordingOf(key);
    fill(recBox, JSON.stringify([a && a.id, a && Math.floor(a.duration || 0), a && a.bytes, rec]), () => {
      if (a) {
        return h('p', { 'data-testid': 'recording-state', 'data-state': 'recording' }, badge('recording', 'rec'), ` since ${fmtTime(a.started)} · ${fmtClock(a.duration)} · ${fmtBytes(a.bytes)} · asset `,
          h('a', { href: '#/vod', class: 'mono' }, a.id));
      }
      if (rec) return h('p', { 'data-testid': 'recording-state', 'data-state': 'starting' }, 'Starting the recording…');
      return h('p', { class: 'muted', 'data-testid': 'recording-state', 'data-state': 'off' }, 'Not recording. Recordings appear in ', h('a', { href: '#/vod' }, 'VOD'), '.');
    });
  }

  return {
    title: key,
    mount(main) {
      const pid = uid('proto');
      stateBadge = h('span');
      endedBox = h('div', { class: 'ended', 'data-testid': 'stream-ended', role: 'status', hidden: true }, 'Stream ended');
      btnRecStart = h('button', { type: 'button', class: 'btn', 'data-testid': 'record-start', onclick: () => record(true, btnRecStart) }, 'Start recording');
      btnRecStop = h('button', { type: 'button', class: 'btn btn-secondary', 'data-testid': 'record-stop', hidden: true, onclick: () => record(false, btnRecStop) }, 'Stop recording');
      btnDisc = h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'disconnect', onclick: disconnect }, 'Disconnect publisher');
      actions = h('div', { class: 'actions', hidden: true }, btnRecStart, btnRecStop, btnDisc);
      protoSel = h('select', { id: pid, 'data-testid': 'protocol-select' },
        [['llhls', 'LL-HLS'], ['hls', 'HLS'], ['flv', 'HTTP-FLV']].map(([v, t]) => h('option', { value: v, selected: v === proto }, t)));
      protoSel.addEventListener('change', () => {
        proto = protoSel.value;
        sessionStorage.setItem('strom.proto', proto);
        if (playing) startPlayer();
      });
      video = h('video', { 'data-testid': 'preview-video', muted: true, playsinline: true, autoplay: true, controls: true, 'aria-label': `Preview of ${key}` });
      video.muted = true;
      pstatus = h('p', { class: 'player-status', 'data-testid': 'player-status', 'aria-live': 'polite' });
      player = makePlayer(video, { onStatus: (t, bad) => { setText(pstatus, t); pstatus.className = `player-status${bad ? ' bad' : ''}`; } });
      details = h('dl', { class: 'kv' });
      chartLine = svg('polyline', { points: '' });
      chartArea = svg('polygon', { points: '' });
      chart = svg('svg', { class: 'chart', viewBox: '0 0 600 140', preserveAspectRatio: 'none', role: 'img', 'aria-label': 'Ingest bitrate' },
        svg('line', { class: 'grid', x1: 0, y1: 35, x2: 600, y2: 35 }), svg('line', { class: 'grid', x1: 0, y1: 70, x2: 600, y2: 70 }),
        svg('line', { class: 'grid', x1: 0, y1: 105, x2: 600, y2: 105 }), chartArea, chartLine);
      chartNow = h('span');
      chartLegend = h('div', { class: 'chart-legend' }, h('span', {}, '5 min ago'), chartNow, h('span', {}, 'now'));
      viewersBox = h('dl', { class: 'viewers' });
      ladderBox = h('div');
      recBox = h('div');
      root = h('div', { 'data-testid': 'stream-detail', 'data-key': key },
        h('a', { class: 'back', href: '#/streams' }, '← All streams'),
        h('div', { class: 'detail-head' }, h('h1', {}, key), stateBadge, actions),
        endedBox,
        h('div', { class: 'grid-2' },
          h('section', { class: 'panel', 'aria-labelledby': `${pid}-h` },
            h('div', { class: 'player-bar' }, h('h2', { id: `${pid}-h`, style: 'margin:0' }, 'Preview'),
              h('span', { class: 'spacer' }),
              h('label', { for: pid }, 'Protocol'), protoSel),
            h('div', { class: 'player' }, video), pstatus),
          h('section', { class: 'panel', 'aria-labelledby': `${pid}-d` }, h('h2', { id: `${pid}-d` }, 'Details'), details)),
        h('div', { class: 'grid-2', style: 'margin-top:1rem' },
          h('section', { class: 'panel', 'aria-labelledby': `${pid}-b` }, h('h2', { id: `${pid}-b` }, 'Ingest bitrate'), chart, chartLegend),
          h('section', { class: 'panel', 'aria-labelledby': `${pid}-v` }, h('h2', { id: `${pid}-v` }, 'Viewers'), viewersBox,
            h('h2', { id: `${pid}-r`, style: 'margin-top:1rem' }, 'Recording'), recBox)),
        h('section', { class: 'panel', style: 'margin-top:1rem', 'aria-labelledby': `${pid}-l` }, h('h2', { id: `${pid}-l` }, 'Ladder'), ladderBox));
      main.append(root);
    },
    update,
    unmount() { if (player) player.destroy(); player = null; playing = null; },
  };
}

// ----------------------------------------------------------- VOD
function vodView() {
  let fileInput, rungsInput, uploadBtn, cancelBtn, progress, progressText, resultEl, dropZone, fileNameEl,
    listError, jobsBody, jobsWrap, jobsEmpty, assetsBody, assetsWrap, assetsEmpty, playerBox, playerTitle, levelSel, vodVideo, vodStatus;
  let selected = null, xhr = null, player = null, playingId = null;

  function choose(file) {
    selected = file || null;
    setText(fileNameEl, selected ? `${selected.name} (${fmtBytes(selected.size)})` : 'No file chosen yet');
  }

  function upload() {
    const file = selected || (fileInput.files && fileInput.files[0]);
    if (!file) { toast('Choose a video file first (drop it on the box, or use the file picker).', 'error'); fileInput.focus(); return; }
    const fd = new FormData();
    const rungs = rungsInput.value.trim();
    if (rungs) fd.append('rungs', rungs);
    fd.append('file', file, file.name);
    const x = xhr = new XMLHttpRequest();
    x.open('POST', '/api/v1/vod');
    if (S.token) x.setRequestHeader('Authorization', `Bearer ${S.token}`);
    progress.max = Math.max(1, file.size);
    progress.value = 0;
    progress.dataset.state = 'uploading';
    setText(progressText, `0 % of ${fmtBytes(file.size)}`);
    uploadBtn.disabled = true;
    cancelBtn.hidden = false;
    setAttr(resultEl, 'data-state', 'uploading');
    x.upload.onprogress = (e) => {
      const total = e.lengthComputable ? e.total : file.size;
      progress.max = Math.max(1, total);
      progress.value = Math.min(e.loaded, total);
      setText(progressText, `${Math.floor((e.loaded / Math.max(1, total)) * 100)} % of ${fmtBytes(total)}`);
    };
    x.upload.onload = () => { progress.value = progress.max; setText(progressText, 'Uploaded, waiting for the server…'); };
    const done = () => { xhr = null; uploadBtn.disabled = false; cancelBtn.hidden = true; };
    x.onload = () => {
      done();
      let body = null;
      try { body = JSON.parse(x.responseText); } catch { /* not JSON */ }
      if (x.status >= 200 && x.status < 300) {
        progress.value = progress.max;
        progress.dataset.state = 'done';
        setText(progressText, `Done: ${fmtBytes(file.size)} sent`);
        setAttr(resultEl, 'data-state', 'accepted');
        setAttr(resultEl, 'data-asset', body && body.asset_id);
        setAttr(resultEl, 'data-job', body && body.job_id);
        setText(resultEl, body && body.job_id ? `Accepted: job ${body.job_id} makes the renditions (see Jobs below).` : 'Accepted.');
        toast(`Uploaded ${file.name}${body && body.job_id ? `: job ${body.job_id} started` : ''}`, 'ok');
        fileInput.value = '';
        choose(null);
      } else {
        const msg = (body && body.error) || x.responseText.slice(0, 200) || `HTTP ${x.status}`;
        progress.dataset.state = 'failed';
        setAttr(resultEl, 'data-state', 'failed');
        setText(resultEl, `Upload failed: ${msg}`);
        setText(progressText, 'Failed');
        toast(`Upload failed: ${msg}`, 'error');
      }
    };
    x.onerror = () => { done(); progress.dataset.state = 'failed'; setAttr(resultEl, 'data-state', 'failed'); setText(progressText, 'Failed'); toast('Upload failed: network error', 'error'); };
    x.onabort = () => { done(); progress.dataset.state = 'aborted'; setAttr(resultEl, 'data-state', 'aborted'); setText(progressText, 'Cancelled'); };
    x.send(fd);
  }

  async function playAsset(a) {
    playingId = a.id;
    playerBox.hidden = false;
    setText(playerTitle, `Playing ${a.name || a.id}`);
    fillLevels([], -1, true);
    const url = await playUrl(`/vod/${a.id}`, `/vod/${encodeURIComponent(a.id)}/index.m3u8`);
    if (playingId !== a.id) return;
    player.play('vod', url);
    playerBox.scrollIntoView({ block: 'nearest' });
    vodVideo.focus({ preventScroll: true });
  }
  function closePlayer() {
    playingId = null;
    player.stop();
    playerBox.hidden = true;
  }
  function fillLevels(levels, cur, auto) {
    const opts = [{ v: '-1', t: 'Auto' }].concat((levels || []).map((l, i) => ({
      v: String(i),
      t: `${l.height ? `${l.height}p` : `level ${i + 1}`}${l.bitrate ? ` · ${fmtBps(l.bitrate)}` : ''}`,
    })));
    fill(levelSel, JSON.stringify(opts), () => opts.map((o) => h('option', { value: o.v }, o.t)));
    const want = auto ? '-1' : String(cur);
    if (levelSel.value !== want && document.activeElement !== levelSel) levelSel.value = want;
    const now = levels && levels[cur];
    levelSel.disabled = opts.length < 2;
    setText(vodStatus, now && now.height ? `Showing ${now.height}p${auto ? ' (auto)' : ''}` : '');
  }

  const JOB_LABELS = ['Job', 'State', 'Chunks', 'Frames', ['Speed', 'num'], ['ETA', 'num'], ['Node', 'nowrap'], ['Attempts', 'num'], ['Actions', 'actions', true]];
  function createJob(j) {
    const tr = h('tr', { 'data-testid': 'job-row', 'data-id': j.id });
    tr._c = cells(tr, JOB_LABELS.map((l) => (Array.isArray(l) ? [l[2] ? '' : l[0], l[1]] : l)));
    const bar = h('progress', { max: 1, value: 0, 'aria-label': `Chunks of job ${j.id}` });
    const barText = h('span', { class: 'sub' });
    tr._c[2].append(h('div', {}, bar, barText));
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'data-testid': 'job-cancel', 'aria-label': `Cancel job ${j.id}` }, 'Cancel');
    const retryB = h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'data-testid': 'job-retry', 'aria-label': `Retry job ${j.id}` }, 'Retry');
    cancel.addEventListener('click', () => act(cancel, () => api('POST', `/api/v1/jobs/${encodeURIComponent(j.id)}/cancel`), `Job ${j.id} cancelled`));
    retryB.addEventListener('click', () => act(retryB, () => api('POST', `/api/v1/jobs/${encodeURIComponent(j.id)}/retry`), `Job ${j.id} started again`));
    tr._c[8].append(h('div', { class: 'row' }, cancel, retryB));
    tr._p = { bar, barText, cancel, retryB };
    return tr;
  }
  function updateJob(tr, j) {
    const c = tr._c, p = tr._p;
    setAttr(tr, 'data-state', j.state);
    const src = j.source && j.source.name;
    fill(c[0], JSON.stringify([j.id, src, j.ladder, j.created]), () => [h('span', { class: 'mono' }, j.id),
      h('span', { class: 'sub' }, [src, Array.isArray(j.ladder) && j.ladder.length ? `rungs ${j.ladder.join(', ')}` : null, j.created ? fmtTime(j.created) : null].filter(Boolean).join(' · '))]);
    const st = j.state || '?';
    fill(c[1], JSON.stringify([st, j.reason]), () => [badge(st, st === 'done' ? 'ok' : st === 'failed' ? 'bad' : st === 'cancelled' ? '' : 'info'),
      j.reason ? h('span', { class: 'sub' }, j.reason) : null]);
    const total = num(j.chunks_total) || 0, doneN = num(j.chunks_done) || 0;
    p.bar.max = Math.max(1, total);
    p.bar.value = Math.min(doneN, Math.max(1, total));
    if (st === 'done' && !total) { p.bar.max = 1; p.bar.value = 1; }
    setText(p.barText, total ? `${doneN} / ${total}` : (st === 'done' ? 'done' : 'planning…'));
    const ft = num(j.frames_total), fd = num(j.frames_done);
    setText(c[3], fd !== null ? `${fd}${ft ? ` / ${ft}` : ''}` : '–');
    setText(c[4], num(j.fps) !== null ? `${j.fps.toFixed(1)} fps` : '–');
    setText(c[5], num(j.eta_secs) !== null && !['done', 'failed', 'cancelled'].includes(st) ? fmtClock(j.eta_secs) : '–');
    setText(c[6], j.node || '–');
    setText(c[7], j.attempts ?? '–');
    p.cancel.hidden = !['pending', 'probing', 'running'].includes(st);
    p.retryB.hidden = !['failed', 'cancelled'].includes(st);
  }

  const ASSET_LABELS = ['Asset', 'Kind', 'State', ['Duration', 'num'], ['Size', 'num'], 'Renditions', ['Node', 'nowrap'], ['Actions', 'actions', true]];
  function createAsset(a) {
    const tr = h('tr', { 'data-testid': 'asset-row', 'data-id': a.id });
    tr._c = cells(tr, ASSET_LABELS.map((l) => (Array.isArray(l) ? [l[2] ? '' : l[0], l[1]] : l)));
    const label = a.name || a.id;
    const play = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'asset-play', 'aria-label': `Play ${label}` }, 'Play');
    const dl = h('a', { class: 'btn btn-secondary btn-small', 'data-testid': 'asset-download', href: `/vod/${encodeURIComponent(a.id)}.mp4`, download: `${a.id}.mp4`, 'aria-label': `Download ${label} as MP4` }, 'MP4');
    const del = h('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-testid': 'asset-delete', 'aria-label': `Delete ${label}` }, 'Delete');
    play.addEventListener('click', () => playAsset(tr._a));
    // A signed node: the download gets its token when clicked.
    dl.addEventListener('click', async (e) => {
      if (!(S.hello && S.hello.auth && S.hello.auth.signed_play) || dl.dataset.signed) return;
      e.preventDefault();
      const id = tr._a.id;
      dl.href = await playUrl(`/vod/${id}`, `/vod/${encodeURIComponent(id)}.mp4`);
      dl.dataset.signed = '1';
      dl.click();
      delete dl.dataset.signed;
    });
    del.addEventListener('click', async () => {
      if (!window.confirm(`Delete ${label}? Its files are removed from storage.`)) return;
      const r = await act(del, () => api('DELETE', `/api/v1/vod/${encodeURIComponent(a.id)}`), `Deleted ${label}`);
      if (r !== undefined && playingId === a.id) closePlayer();
    });
    tr._c[7].append(h('div', { class: 'row' }, play, dl, del));
    tr._p = { play, dl, del };
    return tr;
  }
  function updateAsset(tr, a) {
    tr._a = a;
    const c = tr._c, p = tr._p;
    setAttr(tr, 'data-kind', a.kind);
    setAttr(tr, 'data-state', a.state);
    setAttr(tr, 'data-stream', a.stream || null);
    setAttr(tr, 'data-job', a.job || null);
    fill(c[0], JSON.stringify([a.id, a.name, a.stream, a.started]), () => [
      h('span', { class: 'mono' }, a.name || a.stream || a.id),
      h('span', { class: 'sub' }, [a.name || a.stream ? a.id : null, fmtTime(a.started)].filter(Boolean).join(' · '))]);
    setText(c[1], a.kind || '–');
    fill(c[2], JSON.stringify([a.state, a.reason]), () => [
      badge(a.state || '?', a.state === 'recording' ? 'rec' : a.state === 'done' ? 'ok' : a.state === 'failed' ? 'bad' : a.state === 'partial' ? 'warn' : 'info'),
      a.reason ? h('span', { class: 'sub' }, a.reason) : null]);
    setText(c[3], fmtClock(a.duration));
    setText(c[4], fmtBytes(a.bytes));
    const rends = Array.isArray(a.renditions) ? a.renditions : [];
    setText(c[5], rends.length ? rends.map((r) => r.name).join(', ') : '–');
    setText(c[6], a.node || '–');
    const playable = rends.length > 0 && a.state !== 'failed' && a.state !== 'processing';
    p.play.disabled = !playable;
    p.dl.hidden = a.kind !== 'recording';
  }

  return {
    title: 'VOD',
    mount(main) {
      const fid = uid('file'), rid = uid('rungs'), pid = uid('prog');
      fileInput = h('input', { type: 'file', id: fid, accept: 'video/*,.mp4,.mov,.mkv,.webm,.ts,.flv,.m4v', 'data-testid': 'upload-input' });
      fileInput.addEventListener('change', () => choose(fileInput.files && fileInput.files[0]));
      fileNameEl = h('p', { class: 'file-name', 'aria-live': 'polite' });
      dropZone = h('div', { class: 'drop', 'data-testid': 'drop-zone' },
        h('p', { style: 'margin:0;font-weight:600' }, 'Drop a video file here'),
        h('p', { class: 'muted', style: 'margin:0' }, 'or'),
        h('div', { class: 'field', style: 'align-items:center' }, h('label', { for: fid }, 'Choose a file'), fileInput),
        fileNameEl);
      for (const t of ['dragenter', 'dragover']) dropZone.addEventListener(t, (e) => { e.preventDefault(); dropZone.classList.add('over'); });
      for (const t of ['dragleave', 'dragend']) dropZone.addEventListener(t, () => dropZone.classList.remove('over'));
      dropZone.addEventListener('drop', (e) => {
        e.preventDefault();
        dropZone.classList.remove('over');
        const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
        if (f) choose(f);
      });
      rungsInput = h('input', { type: 'text', id: rid, inputmode: 'numeric', placeholder: '720,360', 'data-testid': 'upload-rungs', 'aria-describedby': `${rid}-hint`, autocomplete: 'off' });
      uploadBtn = h('button', { type: 'submit', class: 'btn', 'data-testid': 'upload-submit' }, 'Upload');
      cancelBtn = h('button', { type: 'button', class: 'btn btn-secondary', hidden: true, onclick: () => xhr && xhr.abort() }, 'Cancel upload');
      progress = h('progress', { id: pid, max: 100, value: 0, 'data-testid': 'upload-progress' });
      progressText = h('span', { class: 'small muted' }, 'Nothing uploading');
      resultEl = h('p', { class: 'small', 'data-testid': 'upload-result', 'aria-live': 'polite' });
      const form = h('form', { class: 'upload-form', onsubmit: (e) => { e.preventDefault(); upload(); } },
        h('div', { class: 'field' }, h('label', { for: rid }, 'Rungs (optional)'), rungsInput,
          h('span', { class: 'hint', id: `${rid}-hint` }, 'Heights to make, e.g. 720,360. Empty: the server’s default ladder.')),
        h('div', { class: 'row' }, uploadBtn, cancelBtn),
        h('div', { class: 'field' }, h('label', { for: pid }, 'Upload progress'), h('div', { class: 'progress-line' }, progress, progressText)),
        resultEl);
      choose(null);

      levelSel = h('select', { id: `${pid}-lv`, 'data-testid': 'level-select', disabled: true }, h('option', { value: '-1' }, 'Auto'));
      levelSel.addEventListener('change', () => player && player.setLevel(Number(levelSel.value)));
      vodVideo = h('video', { 'data-testid': 'vod-video', muted: true, playsinline: true, autoplay: true, controls: true, 'aria-label': 'VOD player' });
      vodVideo.muted = true;
      vodStatus = h('span', { class: 'small muted', 'aria-live': 'polite' });
      const pstat = h('p', { class: 'player-status', 'data-testid': 'vod-status' });
      player = makePlayer(vodVideo, {
        onStatus: (t, bad) => { setText(pstat, t); pstat.className = `player-status${bad ? ' bad' : ''}`; },
        onLevels: fillLevels,
      });
      playerTitle = h('h2', { id: `${pid}-ph`, style: 'margin:0' }, 'Player');
      playerBox = h('section', { class: 'panel vod-player', 'aria-labelledby': `${pid}-ph`, hidden: true, 'data-testid': 'vod-player' },
        h('div', { class: 'player-bar' }, playerTitle, h('span', { class: 'spacer' }),
          h('label', { for: `${pid}-lv` }, 'Quality'), levelSel, vodStatus,
          h('button', { type: 'button', class: 'btn btn-secondary btn-small', onclick: closePlayer }, 'Close player')),
        h('div', { class: 'player' }, vodVideo), pstat);

      jobsBody = h('tbody');
      jobsWrap = tableWrap('VOD jobs', JOB_LABELS, jobsBody);
      jobsEmpty = h('p', { class: 'empty', 'data-testid': 'empty-jobs' }, 'No transcoding jobs. An upload starts one: it cuts the file into chunks and encodes every rung on the nodes with free slots.');
      assetsBody = h('tbody');
      assetsWrap = tableWrap('VOD assets', ASSET_LABELS, assetsBody);
      assetsEmpty = h('p', { class: 'empty', 'data-testid': 'empty-assets' }, 'No assets yet. Upload a file above, or record a live stream.');

      listError = h('p', { class: 'ended', role: 'status', hidden: true, 'data-testid': 'vod-list-error' });
      main.append(h('h1', {}, 'VOD'), listError,
        h('section', { class: 'panel', 'aria-labelledby': `${pid}-uh` }, h('h2', { id: `${pid}-uh` }, 'Upload'),
          h('div', { class: 'upload' }, dropZone, form)),
        playerBox,
        h('section', { 'aria-labelledby': `${pid}-jh`, style: 'margin-bottom:1rem' }, h('h2', { id: `${pid}-jh` }, 'Jobs'), jobsWrap, jobsEmpty),
        h('section', { 'aria-labelledby': `${pid}-ah` }, h('h2', { id: `${pid}-ah` }, 'Assets'), assetsWrap, assetsEmpty));
    },
    update(what) {
      const errs = [S.jobs && S.jobs.error ? `Jobs: ${S.jobs.error}` : null, S.assets && S.assets.error ? `Assets: ${S.assets.error}` : null].filter(Boolean);
      setText(listError, errs.join(' · '));
      listError.hidden = !errs.length;
      if (what === 'all' || what === 'jobs') {
        const jobs = jobList().slice().sort((a, b) => String(b.created || '').localeCompare(String(a.created || '')));
        keyed(jobsBody, jobs, (j) => j.id, createJob, updateJob);
        jobsWrap.hidden = !jobs.length;
        jobsEmpty.hidden = !!jobs.length || S.jobs === null;
      }
      if (what === 'all' || what === 'assets') {
        const assets = assetList().slice().sort((a, b) => String(b.started || '').localeCompare(String(a.started || '')));
        keyed(assetsBody, assets, (a) => a.id, createAsset, updateAsset);
        assetsWrap.hidden = !assets.length;
        assetsEmpty.hidden = !!assets.length || S.assets === null;
        if (playingId && !assets.some((a) => a.id === playingId) && S.assets !== null) closePlayer();
      }
    },
    unmount() {
      if (player) player.destroy();
      player = null;
      if (xhr) { xhr.abort(); xhr = null; }
    },
  };
}

// ----------------------------------------------------------- cluster
function clusterView() {
  let nodesBody, relaysBody, relaysWrap, relaysEmpty, note;
  const LABELS = [['Node', 'nowrap'], 'Address', 'State', 'Ready', ['RTT', 'num'], ['Connected for', 'num'], 'Load', ['CPU', 'num'], ['Egress', 'num'], ['Encoders', 'num'], ['VOD chunks', 'num']];
  function create(n) {
    const tr = h('tr', { 'data-testid': 'cluster-row', 'data-node': n.name });
    tr._c = cells(tr, LABELS);
    const bar = h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: 'width:0%' }));
    const val = h('span');
    tr._c[6].append(h('div', {}, val, bar));
    tr._p = { bar, val };
    return tr;
  }
  function update(tr, n) {
    const c = tr._c, l = n.load;
    setAttr(tr, 'data-state', n.self ? 'self' : n.state);
    fill(c[0], JSON.stringify([n.name, n.self]), () => [h('strong', {}, n.name), n.self ? [' ', badge('this node', 'info')] : null]);
    setText(c[1], n.address || '–');
    fill(c[2], JSON.stringify([n.self, n.state]), () => (n.self ? badge('self', 'info') : badge(n.state || '?', n.state === 'up' ? 'ok' : 'bad')));
    const draining = !!(n.draining || (l && l.draining));
    fill(c[3], JSON.stringify([n.ready, draining]), () => (draining ? badge('draining', 'warn') : n.ready ? badge('ready', 'ok') : badge('not ready', 'warn')));
    setText(c[4], n.self ? '–' : (num(n.rtt_ms) !== null ? `${n.rtt_ms.toFixed(1)} ms` : '–'));
    setText(c[5], n.self ? '–' : fmtDur(n.connected_secs));
    setText(tr._p.val, l ? fmtPct(l.ratio) : '–');
    const pct = l ? Math.max(0, Math.min(100, (num(l.ratio) ?? 0) * 100)) : 0;
    const w = `width:${pct.toFixed(1)}%`;
    if (tr._p.bar.firstChild.getAttribute('style') !== w) tr._p.bar.firstChild.setAttribute('style', w);
    setAttr(tr._p.bar, 'class', `bar${pct >= 90 ? ' bad' : pct >= 70 ? ' warn' : ''}`);
    setText(c[7], l ? `${(num(l.cpu) ?? 0).toFixed(2)} cores` : '–');
    setText(c[8], l ? fmtMbps(l.egress_bps) : '–');
    setText(c[9], l ? `${l.encoders ?? 0} / ${(l.encoders ?? 0) + (l.encoder_slots ?? 0)}` : '–');
    setText(c[10], l ? `${l.vod_chunks ?? 0} / ${l.vod_slots ?? 0}` : '–');
  }
  return {
    title: 'Cluster',
    mount(main) {
      nodesBody = h('tbody');
      relaysBody = h('tbody');
      relaysWrap = tableWrap('Relays between nodes', ['Stream', 'From (owner)', 'To (relaying node)'], relaysBody);
      relaysEmpty = h('p', { class: 'empty' }, 'No relays: every stream is played only on the node it is published to. A node relays a stream when one of its players asks for a stream another node owns.');
      note = h('p', { class: 'muted' });
      main.append(h('h1', {}, 'Cluster'),
        h('section', { 'aria-labelledby': 'cl-nodes', style: 'margin-bottom:1rem' }, h('h2', { id: 'cl-nodes' }, 'Nodes'), note,
          tableWrap('Cluster nodes', LABELS, nodesBody),
          h('p', { class: 'small muted', style: 'margin-top:.4rem' }, 'Encoders: ladders running / this node’s ladder slots. VOD chunks: encoding or queued / chunks at once.')),
        h('section', { 'aria-labelledby': 'cl-relays' }, h('h2', { id: 'cl-relays' }, 'Relays'), relaysWrap, relaysEmpty));
    },
    update(what) {
      if (what === 'all' || what === 'nodes' || what === 'hello') {
        const nodes = sortedNodes();
        keyed(nodesBody, nodes, (n) => n.name, create, update);
        const standalone = S.hello && S.hello.clustered === false;
        setText(note, S.nodes === null ? 'Waiting for the node list…'
          : `${plural(nodes.length, 'node')}, ${nodes.filter((n) => n.self || n.state === 'up').length} up.${standalone ? ' Clustering is off: this node runs alone.' : ''}`);
      }
      if (what === 'all' || what === 'streams') {
        const rows = [];
        for (const s of streamList()) {
          if (isGone(s) || !Array.isArray(s.relays)) continue;
          for (const to of s.relays) rows.push({ key: s.key, from: s.node, to });
        }
        rows.sort((a, b) => a.key.localeCompare(b.key) || String(a.to).localeCompare(String(b.to)));
        keyed(relaysBody, rows, (r) => `${r.key}@${r.to}`, (r) => {
          const tr = h('tr', { 'data-testid': 'relay-row', 'data-key': r.key, 'data-from': r.from || '', 'data-to': r.to });
          const c = cells(tr, ['Stream', 'From (owner)', 'To (relaying node)']);
          c[0].append(h('a', { class: 'key', href: streamHref(r.key) }, r.key));
          c[1].append(r.from || '–');
          c[2].append(`→ ${r.to}`);
          return tr;
        }, () => {});
        relaysWrap.hidden = !rows.length;
        relaysEmpty.hidden = !!rows.length;
      }
    },
    unmount() {},
  };
}

// ------------------------------------------------------------------ start
$('#logout').addEventListener('click', logout);
window.addEventListener('hashchange', () => route(true));
document.addEventListener('dragover', (e) => { if (!e.target.closest || !e.target.closest('.drop')) e.preventDefault(); });
document.addEventListener('drop', (e) => { if (!e.target.closest || !e.target.closest('.drop')) e.preventDefault(); });
// A second tab signing out does not touch this one (sessionStorage is per tab).
connect();
