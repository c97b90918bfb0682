#!/usr/bin/env node
// Acceptance driver for strom's web console (/console/), as an operator would use it, in Debian's headless
// Chromium through playwright-core (never downloads a browser; launched like play.mjs).
//
//   node nodes/tests/browser/console.mjs --url http://127.0.0.1:PORT --token TOKEN
//        [--check login,streams,record,disconnect,upload,refusals,cluster,shots,axe]
//        [--stream live/KEY] [--upload FILE] [--rungs 720,360] [--protocols llhls,hls,flv]
//        [--expect-nodes strom-0,strom-1,strom-2] [--expect-remote-stream live/KEY@strom-1]
//        [--shots DIR] [--timeout 120] [--stream-wait 3]
//
// Without --check: every check whose inputs are given (login, refusals, axe always; streams, record, disconnect
// with --stream; upload with --upload; cluster with --expect-nodes / --expect-remote-stream; shots with --shots).
// Checks run in a fixed order whatever the order given: refusals, login, streams, cluster, shots, axe, record,
// upload, disconnect (disconnect ends the stream, so it goes last). Every check but refusals needs a signed-in
// page: the driver signs in first when login itself is not asked for (a failure then is reported as `login`).
//
// Prints one line per check (`ok login 1.2s (...)` / `FAIL record: no asset row after 20s`) on stdout and stops
// at the first failure. Exit 0 = every requested check passed, 1 = a check failed, 2 = the harness is not set up
// (chromium, node_modules, bad arguments).
//
// Env: STROM_CHROMIUM        browser path (default /usr/bin/chromium)
//      STROM_CONSOLE_DEBUG=1 echo the page's console, errors and requests that failed to stderr

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const NM = join(HERE, 'node_modules');
const AXE = join(NM, 'axe-core', 'axe.min.js');
const CHROMIUM = process.env.STROM_CHROMIUM || '/usr/bin/chromium';
const DEBUG = !!process.env.STROM_CONSOLE_DEBUG && process.env.STROM_CONSOLE_DEBUG !== '0';
const EXIT_PASS = 0, EXIT_FAIL = 1, EXIT_SETUP = 2;
const ORDER = ['refusals', 'login', 'streams', 'cluster', 'shots', 'axe', 'record', 'upload', 'disconnect'];
const DESKTOP = { width: 1280, height: 800 }, PHONE = { width: 390, height: 844 };

let axeSource = null;
class SetupError extends Error {}
class CheckFailed extends Error {}
const fail = (msg) => { throw new CheckFailed(msg); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tid = (id, attrs = {}) => `[data-testid="${id}"]` + Object.entries(attrs).map(([k, v]) => `[data-${k}=${JSON.stringify(String(v))}]`).join('');

// ---------------------------------------------------------------- arguments
function usage(msg) {
  if (msg) process.stderr.write(`console.mjs: ${msg}\n`);
  process.stderr.write('usage: node console.mjs --url http://127.0.0.1:PORT --token TOKEN ' +
    `[--check ${ORDER.join(',')}] [--stream live/KEY] [--upload FILE] [--rungs 720,360] [--protocols llhls,hls,flv] ` +
    '[--expect-nodes a,b,c] [--expect-remote-stream live/KEY@node] [--shots DIR] [--timeout 120] [--stream-wait 3]\n');
}

function parseArgs(argv) {
  const o = { url: null, token: null, checks: null, stream: null, upload: null, rungs: '', protocols: ['llhls'],
    expectNodes: [], remote: null, shots: null, timeout: 120, streamWait: 3 };
  const list = (v) => String(v).split(',').map((s) => s.trim()).filter(Boolean);
  for (let i = 2; i < argv.length; i++) {
    let a = argv[i], v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const next = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const pos = (x) => { const n = Number(x); if (!Number.isFinite(n) || n <= 0) throw new Error(`${a} needs a positive number, got ${x}`); return n; };
    switch (a) {
      case '--url': o.url = next().replace(/\/+$/, ''); break;
      case '--token': o.token = next(); break;
      case '--check': case '--checks': o.checks = list(next()); break;
      case '--stream': o.stream = next(); break;
      case '--upload': o.upload = resolve(next()); break;
      case '--rungs': o.rungs = next(); break;
      case '--protocols': o.protocols = list(next()); break;
      case '--expect-nodes': o.expectNodes = list(next()); break;
      case '--expect-remote-stream': {
        const s = next(), at = s.lastIndexOf('@');
        if (at <= 0 || at === s.length - 1) throw new Error('--expect-remote-stream is live/KEY@NODE');
        o.remote = { key: s.slice(0, at), node: s.slice(at + 1) };
        break;
      }
      case '--shots': o.shots = resolve(next()); break;
      case '--timeout': o.timeout = pos(next()); break;
      case '--stream-wait': o.streamWait = pos(next()); break;
      case '-h': case '--help': usage(); process.exit(EXIT_PASS); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!o.url) throw new Error('--url is required');
  try { new URL(o.url); } catch { throw new Error(`--url is not a URL: ${o.url}`); }
  if (o.token === null) throw new Error('--token is required');
  if (!o.checks) {
    o.checks = ['refusals', 'login', 'axe'];
    if (o.stream) o.checks.push('streams', 'record', 'disconnect');
    if (o.upload) o.checks.push('upload');
    if (o.expectNodes.length || o.remote) o.checks.push('cluster');
    if (o.shots) o.checks.push('shots');
  }
  for (const c of o.checks) if (!ORDER.includes(c)) throw new Error(`unknown check ${c} (known: ${ORDER.join(', ')})`);
  for (const p of o.protocols) if (!['llhls', 'hls', 'flv'].includes(p)) throw new Error(`unknown protocol ${p} (llhls, hls, flv)`);
  const need = (c, cond, what) => { if (o.checks.includes(c) && !cond) throw new Error(`--check ${c} needs ${what}`); };
  need('streams', o.stream, '--stream live/KEY');
  need('record', o.stream, '--stream live/KEY');
  need('disconnect', o.stream, '--stream live/KEY');
  need('upload', o.upload, '--upload FILE');
  need('cluster', o.expectNodes.length || o.remote, '--expect-nodes or --expect-remote-stream');
  need('shots', o.shots, '--shots DIR');
  if (o.stream && !/^[^/]+\/.+$/.test(o.stream)) throw new Error('--stream is app/name');
  if (o.upload && !existsSync(o.upload)) throw new Error(`--upload file not found: ${o.upload}`);
  o.checks = ORDER.filter((c) => o.checks.includes(c));
  return o;
}

// ---------------------------------------------------------------- the run
let context = null, userDataDir = null;
async function cleanup() {
  if (context) { const c = context; context = null; await Promise.race([c.close().catch(() => {}), sleep(10000)]); }
  if (userDataDir) { try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* gone */ } userDataDir = null; }
}

async function main() {
  let o;
  try { o = parseArgs(process.argv); } catch (e) { usage(e.message); return EXIT_SETUP; }
  if (!existsSync(CHROMIUM)) throw new SetupError(`chromium not found at ${CHROMIUM} (run nodes/tests/browser/setup.sh, or set STROM_CHROMIUM)`);
  if (!existsSync(join(NM, 'playwright-core/package.json'))) throw new SetupError(`node_modules missing in ${HERE} (run nodes/tests/browser/setup.sh)`);
  if (o.checks.includes('axe') && !existsSync(AXE)) throw new SetupError(`${AXE} missing (run nodes/tests/browser/setup.sh)`);
  let chromium;
  try { ({ chromium } = await import('playwright-core')); } catch (e) {
    throw new SetupError(`cannot load playwright-core: ${e.message} (run nodes/tests/browser/setup.sh)`);
  }
  if (o.shots) mkdirSync(o.shots, { recursive: true });

  userDataDir = mkdtempSync(join(tmpdir(), 'strom-console-'));
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--autoplay-policy=no-user-gesture-required'],
      viewport: DESKTOP,
      timeout: 30000,
      handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
    });
  } catch (e) {
    throw new SetupError(`chromium failed to launch: ${String(e.message).split('\n')[0]}`);
  }
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  const foreign = [];
  const origin = new URL(o.url).origin;
  page.on('pageerror', (e) => { pageErrors.push(String(e.message || e)); if (DEBUG) process.stderr.write(`[pageerror] ${e}\n`); });
  page.on('crash', () => pageErrors.push('page crashed'));
  page.on('dialog', (d) => { if (DEBUG) process.stderr.write(`[dialog] ${d.message()}\n`); d.accept().catch(() => {}); });
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:')) foreign.push(u);
  });
  if (DEBUG) {
    page.on('console', (m) => process.stderr.write(`[console.${m.type()}] ${m.text()}\n`));
    page.on('requestfailed', (r) => process.stderr.write(`[requestfailed] ${r.url()} ${r.failure() && r.failure().errorText}\n`));
  }

  const ctx = { o, page, pageErrors, signedIn: false, axeResults: [], t0: Date.now() };
  const consoleUrl = `${o.url}/console/`;

  // --------------------------------------------------------------- helpers
  const visible = (sel) => page.locator(sel).first().isVisible().catch(() => false);
  async function waitVisible(sel, ms, what) {
    try { await page.locator(sel).first().waitFor({ state: 'visible', timeout: ms }); } catch {
      fail(`${what || sel} not shown after ${(ms / 1000).toFixed(0)}s`);
    }
  }
  async function waitGone(sel, ms) {
    const end = Date.now() + ms;
    while (Date.now() < end) { if ((await page.locator(sel).count()) === 0) return true; await sleep(200); }
    return false;
  }
  async function nav(view) {
    await page.locator(tid(`nav-${view}`)).click();
    await page.waitForFunction((v) => {
      const a = document.querySelector(`[data-testid="nav-${v}"]`);
      return a && a.getAttribute('aria-current') === 'page' && location.hash.startsWith(`#/${v}`);
    }, view, { timeout: 5000 });
  }
  async function gotoHash(hash) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForFunction((h) => location.hash === h, hash, { timeout: 5000 });
  }
  const streamHash = (key) => `#/streams/${key.split('/').map(encodeURIComponent).join('/')}`;
  async function openStream(key) {
    const cur = await page.evaluate(() => location.hash);
    if (cur === streamHash(key) && await visible(tid('stream-detail', { key }))) return;
    await nav('streams');
    const row = page.locator(tid('stream-row', { key })).first();
    await row.waitFor({ state: 'visible', timeout: 10000 }).catch(() => fail(`no stream-row for ${key}`));
    await row.click();
    await waitVisible(tid('stream-detail', { key }), 5000, 'stream-detail');
  }
  async function videoState(sel) {
    return page.evaluate((s) => {
      const v = document.querySelector(s);
      if (!v) return null;
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      return { t: v.currentTime, rs: v.readyState, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
        frames: q ? q.totalVideoFrames : (typeof v.webkitDecodedFrameCount === 'number' ? v.webkitDecodedFrameCount : null),
        err: v.error ? `code ${v.error.code} ${v.error.message || ''}`.trim() : null };
    }, sel);
  }
  /** Waits for a first frame, then for currentTime to advance by `secs` and frames to grow. */
  async function watchPlays(sel, statusSel, secs, firstFrameMs, what) {
    const t0 = Date.now();
    let s = await videoState(sel);
    while (!(s && s.rs >= 2 && s.w > 0)) {
      if (s && s.err) fail(`${what}: video error ${s.err}`);
      if (Date.now() - t0 > firstFrameMs) {
        const st = statusSel ? await page.locator(statusSel).first().textContent().catch(() => '') : '';
        fail(`${what}: no first frame after ${firstFrameMs / 1000}s (readyState ${s && s.rs}, player says "${(st || '').trim()}")`);
      }
      await sleep(200);
      s = await videoState(sel);
    }
    const first = s, tf = Date.now();
    while (!(s.t - first.t >= secs && (s.frames === null || s.frames > first.frames))) {
      if (s.err) fail(`${what}: video error ${s.err}`);
      if (Date.now() - tf > (secs + 12) * 1000) {
        fail(`${what}: currentTime advanced ${(s.t - first.t).toFixed(2)}s in ${((Date.now() - tf) / 1000).toFixed(1)}s (need ${secs}s), frames ${first.frames} -> ${s.frames}`);
      }
      await sleep(250);
      s = await videoState(sel);
    }
    const bad = statusSel ? await page.evaluate((ss) => { const e = document.querySelector(ss); return e && e.classList.contains('bad') ? e.textContent : null; }, statusSel) : null;
    if (bad) fail(`${what}: player reports an error: ${bad}`);
    if (pageErrors.length) fail(`${what}: page error: ${pageErrors.join('; ')}`);
    return { firstFrameMs: tf - t0, advanced: s.t - first.t, frames: s.frames === null ? null : s.frames - first.frames, w: s.w, h: s.h };
  }
  async function signIn(token) {
    await page.locator(tid('login-token')).fill(token);
    await page.locator(tid('login-submit')).click();
  }
  async function loadConsole() {
    await page.goto(consoleUrl, { waitUntil: 'load', timeout: 20000 });
    // Signed in already (no token configured and a loopback client), or the login form.
    const end = Date.now() + 15000;
    for (;;) {
      if (await visible(tid('login-token'))) return 'login';
      if (await visible('#nav a')) return 'in';
      if (Date.now() > end) fail('neither the login form nor the console appeared after 15s');
      await sleep(150);
    }
  }
  async function ensureSignedIn() {
    if (ctx.signedIn) return;
    const where = await loadConsole();
    if (where === 'login') {
      if (o.checks.includes('axe')) await runAxe('login', 'desktop');
      await signIn(o.token);
    }
    const end = Date.now() + 15000;
    for (;;) {
      if (await visible(tid('node-card'))) break;
      if (await visible(tid('login-error'))) fail(`login refused: ${(await page.locator(tid('login-error')).textContent()).trim()}`);
      if (Date.now() > end) fail('no node-card on the overview 15s after signing in');
      await sleep(150);
    }
    ctx.signedIn = true;
  }
  async function runAxe(view, size) {
    // Not page.addScriptTag: it injects an inline <script>, which the console's CSP (script-src 'self') refuses.
    // A DevTools evaluation is not subject to the page's CSP, and the CSP stays on for everything the console does.
    if (!(await page.evaluate(() => !!window.axe))) {
      if (!axeSource) axeSource = readFileSync(AXE, 'utf8');
      await page.evaluate(axeSource);
      if (!(await page.evaluate(() => !!window.axe))) fail('axe-core did not load into the page');
    }
    const r = await page.evaluate(async () => {
      const res = await window.axe.run(document, { resultTypes: ['violations'] });
      return res.violations.map((v) => ({ id: v.id, impact: v.impact, n: v.nodes.length, target: v.nodes[0] ? v.nodes[0].target.join(' ') : '' }));
    });
    ctx.axeResults.push({ view, size, violations: r });
    return r;
  }

  // Views to screenshot / audit: [name, how to get there, main selector with text].
  async function viewList() {
    const views = [['overview', () => nav('overview')], ['streams', () => nav('streams')]];
    let key = o.stream;
    await nav('streams');
    await sleep(300);
    const keys = await page.locator(tid('stream-row')).evaluateAll((rows) => rows.map((r) => r.dataset.key));
    if (!key || !keys.includes(key)) key = keys[0] || null;
    if (key) views.push(['stream', () => openStream(key)]);
    views.push(['vod', () => nav('vod')], ['cluster', () => nav('cluster')]);
    return views;
  }
  async function settle(view) {
    await page.waitForFunction(() => {
      const m = document.querySelector('main');
      if (!m) return false;
      const r = m.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && m.innerText.trim().length > 20 && !m.querySelector('.loading');
    }, null, { timeout: 8000 }).catch(() => fail(`${view}: the main element is empty or has no size`));
    await sleep(view === 'stream' ? 1200 : 400);
  }

  // --------------------------------------------------------------- checks
  const CHECKS = {
    async refusals() {
      const where = await loadConsole();
      if (where !== 'login') fail('the console signed in without a token (is an admin token configured?)');
      await signIn(`wrong-${Date.now().toString(36)}`);
      await waitVisible(tid('login-error'), 10000, 'login-error after a wrong token');
      const msg = (await page.locator(tid('login-error')).textContent()).trim();
      if (!msg) fail('login-error is empty');
      if (await visible(tid('node-card'))) fail('the console shows nodes after a wrong token');
      const reqs = [
        ['POST', '/api/v1/streams/live/x/record'],
        ['DELETE', '/api/v1/streams/live/x/publisher'],
        ['POST', '/api/v1/vod'],
        ['DELETE', '/api/v1/vod/x'],
        ['POST', '/api/v1/jobs/x/cancel'],
      ];
      const got = await page.evaluate(async (list) => {
        const out = [];
        for (const [method, path] of list) {
          const init = { method, cache: 'no-store' };
          if (path === '/api/v1/vod') { const fd = new FormData(); fd.append('file', new Blob(['not a video']), 'x.mp4'); init.body = fd; }
          try { const r = await fetch(path, init); out.push([method, path, r.status]); } catch (e) { out.push([method, path, String(e)]); }
        }
        return out;
      }, reqs);
      const wrong = got.filter((g) => g[2] !== 401);
      if (wrong.length) fail(`without a token, expected 401 from: ${wrong.map((g) => `${g[0]} ${g[1]} -> ${g[2]}`).join(', ')}`);
      if (o.checks.includes('axe')) await runAxe('login-error', 'desktop');
      return `login-error "${msg}"; ${got.length} mutations without a token all 401`;
    },

    async login() {
      const t = Date.now();
      await ensureSignedIn();
      const n = await page.locator(tid('node-card')).count();
      const stored = await page.evaluate(() => ({ s: sessionStorage.getItem('strom.token') !== null, l: localStorage.length, c: document.cookie }));
      if (o.token && !stored.s) fail('the token is not in sessionStorage (strom.token)');
      if (stored.l) fail(`the console wrote to localStorage (${stored.l} keys)`);
      if (stored.c) fail('the console set a cookie');
      return `${n} node card(s) ${((Date.now() - t) / 1000).toFixed(1)}s after opening`;
    },

    async streams() {
      const key = o.stream;
      await nav('streams');
      const t = Date.now();
      const row = tid('stream-row', { key });
      try { await page.locator(row).first().waitFor({ state: 'visible', timeout: o.streamWait * 1000 }); } catch {
        const keys = await page.locator(tid('stream-row')).evaluateAll((rows) => rows.map((r) => r.dataset.key));
        fail(`no stream-row for ${key} ${o.streamWait}s after showing the streams view (rows: ${keys.join(', ') || 'none'})`);
      }
      const appeared = (Date.now() - t) / 1000;
      await page.locator(row).first().click();
      await waitVisible(tid('stream-detail', { key }), 5000, 'stream-detail');
      const notes = [`row after ${appeared.toFixed(1)}s`];
      for (const proto of o.protocols) {
        // (re)starts the player on this protocol: its change handler resets the <video> synchronously
        await page.locator(tid('protocol-select')).selectOption(proto);
        const r = await watchPlays(tid('preview-video'), tid('player-status'), 2, 20000, `preview (${proto})`);
        notes.push(`${proto}: first frame ${(r.firstFrameMs / 1000).toFixed(1)}s, +${r.advanced.toFixed(1)}s, +${r.frames} frames, ${r.w}x${r.h}`);
      }
      return notes.join('; ');
    },

    async cluster() {
      const notes = [];
      const wait = Math.min(o.timeout, 30) * 1000;
      if (o.expectNodes.length) {
        await nav('overview');
        for (const n of o.expectNodes) await waitVisible(tid('node-card', { node: n }), wait, `node-card for ${n}`);
        await nav('cluster');
        for (const n of o.expectNodes) await waitVisible(tid('cluster-row', { node: n }), wait, `cluster-row for ${n}`);
        notes.push(`${o.expectNodes.length} nodes on overview and cluster`);
      }
      if (o.remote) {
        await nav('streams');
        const sel = tid('stream-row', { key: o.remote.key, node: o.remote.node });
        try { await page.locator(sel).first().waitFor({ state: 'visible', timeout: wait }); } catch {
          const rows = await page.locator(tid('stream-row')).evaluateAll((rs) => rs.map((r) => `${r.dataset.key}@${r.dataset.node}`));
          fail(`no stream-row ${o.remote.key}@${o.remote.node} (rows: ${rows.join(', ') || 'none'})`);
        }
        notes.push(`${o.remote.key} owned by ${o.remote.node}`);
      }
      return notes.join('; ');
    },

    async shots() {
      const out = [];
      for (const [size, vp] of [['desktop', DESKTOP], ['phone', PHONE]]) {
        await page.setViewportSize(vp);
        for (const [view, go] of await viewList()) {
          await go();
          await settle(view);
          const sw = await page.evaluate(() => document.documentElement.scrollWidth);
          if (sw > vp.width + 1) fail(`${view} at ${vp.width}px scrolls horizontally (scrollWidth ${sw})`);
          const file = join(o.shots, `${view}-${size}.png`);
          await page.screenshot({ path: file, fullPage: true });
          const bytes = statSync(file).size;
          if (bytes <= 8192) fail(`${file} is only ${bytes} bytes (blank?)`);
          out.push(`${view}-${size}`);
        }
      }
      await page.setViewportSize(DESKTOP);
      return `${out.length} screenshots in ${o.shots}`;
    },

    async axe() {
      for (const [size, vp] of [['desktop', DESKTOP], ['phone', PHONE]]) {
        await page.setViewportSize(vp);
        for (const [view, go] of await viewList()) {
          await go();
          await settle(view);
          await runAxe(view, size);
        }
      }
      await page.setViewportSize(DESKTOP);
      const bad = [], other = new Set();
      for (const r of ctx.axeResults) {
        for (const v of r.violations) {
          if (v.impact === 'serious' || v.impact === 'critical') bad.push(`${r.view}/${r.size}: ${v.id} (${v.impact}) ${v.target}`);
          else other.add(`${v.id} (${v.impact})`);
        }
      }
      if (bad.length) fail(`${bad.length} serious/critical axe violation(s): ${bad.join(' | ')}`);
      return `${ctx.axeResults.length} pages audited, no serious/critical violations` + (other.size ? `; minor/moderate: ${[...other].join(', ')}` : '');
    },

    async record() {
      const key = o.stream;
      await openStream(key);
      const start = page.locator(tid('record-start'));
      if (!(await start.isVisible())) {
        if (await visible(tid('record-stop'))) fail(`${key} is being recorded already (record-stop shown)`);
        fail('record-start not shown');
      }
      const t = Date.now();
      await start.click();
      await nav('vod');
      const sel = tid('asset-row', { kind: 'recording', state: 'recording', stream: key });
      try { await page.locator(sel).first().waitFor({ state: 'attached', timeout: 20000 }); } catch {
        const toasts = await page.locator(tid('toast')).allTextContents();
        fail(`no recording asset-row for ${key} after 20s${toasts.length ? ` (toasts: ${toasts.join(' / ')})` : ''}`);
      }
      const id = await page.locator(sel).first().getAttribute('data-id');
      const took = (Date.now() - t) / 1000;
      await openStream(key);
      await waitVisible(tid('record-stop'), 5000, 'record-stop after starting the recording');
      return `asset ${id} recording after ${took.toFixed(1)}s; the stream view shows record-stop`;
    },

    async upload() {
      await nav('vod');
      await page.evaluate(() => {
        const p = document.querySelector('[data-testid="upload-progress"]');
        const seen = window.__uploadSeen = [];
        const note = () => seen.push([p.value, p.max]);
        note();
        new MutationObserver(note).observe(p, { attributes: true, attributeFilter: ['value', 'max'] });
      });
      await page.locator(tid('upload-input')).setInputFiles(o.upload);
      if (o.rungs) await page.locator(tid('upload-rungs')).fill(o.rungs);
      // A loopback upload is over in one progress event: the upload is throttled (Chromium's network emulation,
      // 1 MiB/s up), as over a real link, so the bar has something to show.
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Network.enable');
      const throttle = (up) => cdp.send('Network.emulateNetworkConditions',
        { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: up });
      await throttle(1024 * 1024);
      const t = Date.now();
      await page.locator(tid('upload-submit')).click();
      const res = tid('upload-result');
      await page.waitForFunction((s) => {
        const e = document.querySelector(s);
        return e && ['accepted', 'failed', 'aborted'].includes(e.dataset.state);
      }, res, { timeout: o.timeout * 1000 }).catch(() => fail(`upload not answered after ${o.timeout}s`));
      await throttle(-1);
      const r = await page.locator(res).evaluate((e) => ({ state: e.dataset.state, job: e.dataset.job, asset: e.dataset.asset, text: e.textContent }));
      if (r.state !== 'accepted') fail(`upload ${r.state}: ${r.text}`);
      const upSecs = (Date.now() - t) / 1000;
      const seen = await page.evaluate(() => window.__uploadSeen);
      const after = seen.slice(1); // the first sample is the idle bar
      const distinct = [...new Set(after.map(([v, m]) => `${v}/${m}`))];
      const reachedMax = after.some(([v, m]) => m > 1 && v >= m);
      const partial = after.filter(([v, m]) => v > 0 && v < m).length;
      if (!reachedMax || partial < 2) fail(`upload-progress did not move (values seen: ${distinct.join(', ') || 'none'})`);
      const progressNote = `progress moved through ${partial} intermediate value(s) to max`;
      if (!r.job) fail('the upload answer has no job_id');
      // the job
      const jt = Date.now();
      const jobSel = tid('job-row', { id: r.job });
      let state = null;
      for (;;) {
        state = await page.locator(jobSel).first().getAttribute('data-state', { timeout: 1000 }).catch(() => null);
        if (state === 'done') break;
        if (state === 'failed' || state === 'cancelled') {
          const reason = await page.locator(jobSel).first().innerText().catch(() => '');
          fail(`job ${r.job} ${state}: ${reason.replace(/\s+/g, ' ').trim()}`);
        }
        if (Date.now() - jt > o.timeout * 1000) fail(`job ${r.job} not done after ${o.timeout}s (state ${state})`);
        await sleep(500);
      }
      const jobSecs = (Date.now() - jt) / 1000;
      // play the asset
      const asset = r.asset || r.job;
      const play = page.locator(`${tid('asset-row', { id: asset })} ${tid('asset-play')}`).first();
      const pe = Date.now();
      for (;;) {
        if (await play.isEnabled().catch(() => false)) break;
        if (Date.now() - pe > 20000) fail(`asset ${asset}: asset-play not enabled 20s after the job was done`);
        await sleep(300);
      }
      await play.click();
      await waitVisible(tid('vod-video'), 5000, 'vod-video');
      const p = await watchPlays(tid('vod-video'), tid('vod-status'), 2, 20000, `asset ${asset}`);
      const levels = await page.locator(`${tid('level-select')} option`).allTextContents();
      const real = levels.filter((l) => l !== 'Auto');
      if (real.length < 2) fail(`level-select lists ${levels.length} option(s) (${levels.join(', ')}): fewer than two levels`);
      return `uploaded in ${upSecs.toFixed(1)}s, ${progressNote}; job ${r.job} done after ${jobSecs.toFixed(1)}s; ` +
        `VOD played +${p.advanced.toFixed(1)}s (+${p.frames} frames, ${p.w}x${p.h}); levels: ${levels.join(', ')}`;
    },

    async disconnect() {
      const key = o.stream;
      await openStream(key);
      const t = Date.now();
      await page.locator(tid('disconnect')).click();
      await waitVisible(tid('stream-ended'), 15000, 'stream-ended after disconnecting the publisher');
      const ended = (Date.now() - t) / 1000;
      await nav('streams');
      const left = 15000 - (Date.now() - t);
      if (!(await waitGone(tid('stream-row', { key }), Math.max(500, left)))) fail(`the streams list still shows ${key} 15s after disconnecting`);
      return `stream-ended after ${ended.toFixed(1)}s, gone from the list after ${((Date.now() - t) / 1000).toFixed(1)}s`;
    },
  };

  // --------------------------------------------------------------- run them
  for (const name of o.checks) {
    const t = Date.now();
    let note;
    try {
      if (name !== 'refusals' && name !== 'login') {
        try { await ensureSignedIn(); } catch (e) {
          if (e instanceof CheckFailed) { report(false, 'login', `${e.message}`); return EXIT_FAIL; }
          throw e;
        }
      }
      if (name === 'refusals') ctx.signedIn = false;
      note = await CHECKS[name]();
      if (name === 'refusals') {
        // the page stays on the login screen; the next check signs in
        ctx.signedIn = false;
      }
    } catch (e) {
      if (e instanceof SetupError) throw e;
      const msg = e instanceof CheckFailed ? e.message : `driver error: ${String(e && e.message || e).split('\n')[0]}`;
      report(false, name, msg, t);
      if (DEBUG && !(e instanceof CheckFailed)) process.stderr.write(`${e && e.stack}\n`);
      return EXIT_FAIL;
    }
    if (foreign.length) { report(false, name, `the console requested another origin: ${[...new Set(foreign)].slice(0, 3).join(', ')}`, t); return EXIT_FAIL; }
    report(true, name, note, t);
  }
  return EXIT_PASS;
}

function report(ok, name, note, t) {
  if (ok) process.stdout.write(`ok ${name} ${((Date.now() - t) / 1000).toFixed(1)}s${note ? ` (${note})` : ''}\n`);
  else process.stdout.write(`FAIL ${name}: ${note}\n`);
}

// ---------------------------------------------------------------- process handling
let finished = false;
async function finish(code) {
  if (finished) return;
  finished = true;
  await cleanup();
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
}
{
  let timeout = 120;
  const a = process.argv;
  for (let i = 0; i < a.length; i++) {
    const v = a[i] === '--timeout' ? a[i + 1] : a[i].startsWith('--timeout=') ? a[i].slice(10) : null;
    if (Number(v) > 0) timeout = Number(v);
  }
  const hardMs = (3 * timeout + 300) * 1000;
  setTimeout(() => { process.stdout.write(`FAIL driver: hard timeout after ${hardMs / 1000}s\n`); finish(EXIT_FAIL); }, hardMs).unref();
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { process.stdout.write(`FAIL driver: killed by ${sig}\n`); finish(EXIT_FAIL); });

main().then((code) => finish(code), (e) => {
  if (e instanceof SetupError) { process.stderr.write(`console.mjs: setup: ${e.message}\n`); finish(EXIT_SETUP); } else {
    process.stdout.write(`FAIL driver: ${e && e.stack || e}\n`);
    finish(EXIT_FAIL);
  }
});
