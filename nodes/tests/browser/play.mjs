#!/usr/bin/env node
// Browser playback check for strom's outputs, as a viewer would see them.
//
//   node nodes/tests/browser/play.mjs --kind hls|flv --url URL
//        [--seconds 15] [--expect-width W --expect-height H]
//        [--first-frame-timeout 20] [--min-play-ratio 0.7] [--max-stall 2.5]
//        [--wait-ready SECONDS] [--screenshot FILE.png]
//        [--switch-levels [--level-timeout 20]] [--low-latency on|off] [--catch-up RATE]
//        [--sample-ms 1000] [--stop-file FILE] [--reconnect N]
//
// --sample-ms: the watch's sampling period (stall resolution; 1000 by default).
// --stop-file FILE: the watch ends as soon as FILE exists (--seconds stays the upper bound; the "watched at least
// half of --seconds" check is then skipped).
// --reconnect N (HTTP-FLV): when mpegts.js reports an error or the end of the response, destroy the player and
// start a new one on the same URL, up to N times (as a viewer's page would); `reconnects` in the JSON counts them,
// and currentTime carries on from where the previous player stopped. Beyond N, an error is fatal as without it.
// Every run also reports every player ERROR event, fatal or not (`error_events`: "MS kind/details [fatal]", ms
// since page start), and `longest_frame_gap_seconds`: the longest wall time between two presented frames
// (requestVideoFrameCallback) during the watch; `advanced_seconds`: the playback time that passed during the watch,
// each sample's currentTime advance counted up to that sample's wall time (a jump is not playback).
//
// --low-latency (HLS): hls.js's lowLatencyMode (on by default, as in hls.js). Every sample also reads the live
// latency: wall clock minus hls.playingDate (the PROGRAM-DATE-TIME of the frame on screen); the JSON line reports
// latency_p50_ms / latency_p99_ms over the watch, and stalls (samples whose currentTime did not advance).
// --catch-up RATE (HLS): hls.js's maxLiveSyncPlaybackRate (1, hls.js's default: never speeds up, so a player keeps
// the latency it started with; LL deployments set e.g. 1.5 so it converges on PART-HOLD-BACK).
//
// --switch-levels (HLS with a master playlist): instead of watching for --seconds, forces
// hls.js through every level in turn (hls.nextLevel: from the next fragment on, without
// flushing what plays now), waits for the <video> to show each level's RESOLUTION, then
// watches 2 s more; every other check (stalls, play ratio, errors, picture changes) applies.
//
// Launches Debian's headless Chromium through playwright-core (never downloads a
// browser), serves a tiny page from its own 127.0.0.1 server (hls.js / mpegts.js
// from ./node_modules, no CDN) and plays URL into a muted autoplay <video>.
// Prints ONE JSON line on stdout. Exit 0 = pass, 1 = playback failure (reason on
// stderr), 2 = setup problem (chromium / node_modules / codec support missing, bad args).
//
// Env: STROM_CHROMIUM   path of the browser (default /usr/bin/chromium)
//      STROM_HLS_DEBUG=1   hls.js's own debug log (with STROM_PLAY_DEBUG=1: on stderr)
//      STROM_PLAY_DEBUG=1  echo the page's console and player events to stderr (the events are
//                          also printed when a watch stalls or fails)

import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const NM = join(HERE, 'node_modules');
const CHROMIUM = process.env.STROM_CHROMIUM || '/usr/bin/chromium';
const DEBUG = !!process.env.STROM_PLAY_DEBUG && process.env.STROM_PLAY_DEBUG !== '0';

const SAMPLE_MS = 1000;          // frame-hash / currentTime sampling period
const MIN_HASH_CHANGE_RATIO = 0.6; // share of consecutive samples whose picture must differ
const EXIT_PASS = 0, EXIT_FAIL = 1, EXIT_SETUP = 2;

// ---------------------------------------------------------------- arguments
function usage(msg) {
  if (msg) process.stderr.write(`play.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node play.mjs --kind hls|flv --url URL [--seconds 15] ' +
    '[--expect-width W --expect-height H] [--first-frame-timeout 20] ' +
    '[--min-play-ratio 0.7] [--max-stall 2.5] [--wait-ready SECONDS] [--screenshot FILE.png] ' +
    '[--switch-levels [--level-timeout 20]] [--seek FRACTION (VOD: jump to that share of the duration first)] ' +
    '[--seek-back SECONDS (live with a DVR window: jump that far back from where playback started)] ' +
    '[--sample-ms MS] [--stop-file FILE] [--reconnect N (flv)]\n');
}

function parseArgs(argv) {
  const o = { kind: null, url: null, seconds: 15, expectWidth: null, expectHeight: null,
    firstFrameTimeout: 20, minPlayRatio: 0.7, maxStall: 2.5, waitReady: 0, screenshot: null,
    switchLevels: false, levelTimeout: 20, lowLatency: true, catchUp: 1, seek: null, seekBack: null,
    sampleMs: 1000, stopFile: null, reconnect: 0 };
  const num = (name, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} needs a positive number, got ${v}`);
    return n;
  };
  for (let i = 2; i < argv.length; i++) {
    let a = argv[i], v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const next = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--kind': o.kind = next(); break;
      case '--url': o.url = next(); break;
      case '--seconds': o.seconds = num(a, next()); break;
      case '--expect-width': o.expectWidth = Math.round(num(a, next())); break;
      case '--expect-height': o.expectHeight = Math.round(num(a, next())); break;
      case '--first-frame-timeout': o.firstFrameTimeout = num(a, next()); break;
      case '--min-play-ratio': o.minPlayRatio = num(a, next()); break;
      case '--max-stall': o.maxStall = num(a, next()); break;
      case '--wait-ready': o.waitReady = num(a, next()); break;
      case '--screenshot': o.screenshot = next(); break;
      case '--switch-levels': o.switchLevels = true; break;
      case '--level-timeout': o.levelTimeout = num(a, next()); break;
      case '--catch-up': o.catchUp = num(a, next()); break;
      case '--seek': o.seek = num(a, next()); if (o.seek >= 1) throw new Error('--seek is a share of the duration, below 1'); break;
      case '--seek-back': o.seekBack = num(a, next()); break;
      case '--sample-ms': o.sampleMs = Math.round(num(a, next())); break;
      case '--stop-file': o.stopFile = next(); break;
      case '--reconnect': { const v = Number(next()); if (!Number.isInteger(v) || v < 0) throw new Error(`--reconnect needs a count, got ${v}`); o.reconnect = v; break; }
      case '--low-latency': { const v = next(); if (v !== 'on' && v !== 'off') throw new Error(`--low-latency is on or off, got ${v}`); o.lowLatency = v === 'on'; break; }
      case '-h': case '--help': usage(); process.exit(EXIT_PASS); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (o.kind !== 'hls' && o.kind !== 'flv') throw new Error('--kind must be hls or flv');
  if (!o.url) throw new Error('--url is required');
  if (o.switchLevels && o.kind !== 'hls') throw new Error('--switch-levels needs --kind hls');
  if (o.reconnect && o.kind !== 'flv') throw new Error('--reconnect needs --kind flv');
  try { new URL(o.url); } catch { throw new Error(`--url is not a URL: ${o.url}`); }
  return o;
}

// ---------------------------------------------------------------- the page
const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>strom play</title>
<style>html,body{margin:0;background:#000}video{width:640px;height:360px}</style>
</head><body>
<video id="v" muted autoplay playsinline></video>
<script src="/lib.js"></script>
<script src="/probe.js"></script>
</body></html>`;

// Runs inside Chromium. Exposes window.__probe() (a snapshot) and window.__events.
const PROBE_JS = `(() => {
  'use strict';
  const q = new URLSearchParams(location.search);
  const kind = q.get('kind'), url = q.get('url'), lowLatency = q.get('ll') !== '0', catchUp = Number(q.get('catchup') || 1);
  const hlsDebug = q.get('hlsdebug') === '1';
  const maxReconnects = Number(q.get('reconnect') || 0);
  const v = document.getElementById('v');
  v.muted = true; v.autoplay = true;
  const st = window.__state = {
    kind, url, t0: performance.now(), firstFrameAt: null, fatal: [], warnings: [],
    events: [], rvfc: 0, rvfcPresented: null, rvfcSupported: 'requestVideoFrameCallback' in v,
    ended: false, setupError: null, sizes: [],
    errorEvents: [], errorEventCount: 0, reconnects: 0, ctBase: 0, lastFrameAt: null, longestFrameGap: 0,
  };
  // Every player ERROR event, fatal or not (the first 200), with its time since page start.
  const errorEvent = (s) => { st.errorEventCount++; if (st.errorEvents.length < 200) st.errorEvents.push(Math.round(performance.now() - st.t0) + 'ms ' + s); };
  const log = (s) => { if (st.events.length < 5000) st.events.push(Math.round(performance.now() - st.t0) + 'ms ' + s); };
  const warn = (s) => { if (st.warnings.length < 50) st.warnings.push(String(s)); log('warn ' + s); };
  const fatal = (s) => { if (st.fatal.length < 20) st.fatal.push(String(s)); log('FATAL ' + s); };

  const markFirst = () => {
    if (st.firstFrameAt === null && v.readyState >= 2 && v.videoWidth > 0) {
      st.firstFrameAt = performance.now(); log('first frame ' + v.videoWidth + 'x' + v.videoHeight);
    }
  };
  for (const ev of ['loadedmetadata', 'loadeddata', 'canplay', 'playing', 'waiting', 'stalled', 'pause', 'ended', 'emptied']) {
    v.addEventListener(ev, () => { log('video ' + ev + ' t=' + v.currentTime.toFixed(2)); markFirst(); if (ev === 'ended') st.ended = true; });
  }
  v.addEventListener('resize', () => {
    if (st.sizes.length < 100) st.sizes.push([Math.round(performance.now() - st.t0), v.videoWidth, v.videoHeight]);
    log('video resize ' + v.videoWidth + 'x' + v.videoHeight + ' t=' + v.currentTime.toFixed(2));
  });
  v.addEventListener('error', () => {
    const e = v.error; fatal('video.error code=' + (e && e.code) + ' ' + ((e && e.message) || ''));
  });
  if (st.rvfcSupported) {
    const cb = (now, meta) => {
      st.rvfc++; st.rvfcPresented = meta && meta.presentedFrames;
      if (st.lastFrameAt !== null) st.longestFrameGap = Math.max(st.longestFrameGap, now - st.lastFrameAt);
      st.lastFrameAt = now;
      markFirst(); v.requestVideoFrameCallback(cb);
    };
    v.requestVideoFrameCallback(cb);
  }

  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 36;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  function frameHash() {
    if (v.readyState < 2 || !v.videoWidth) return null;
    try {
      ctx.drawImage(v, 0, 0, canvas.width, canvas.height);
      const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let h = 0x811c9dc5, sum = 0;
      for (let i = 0; i < d.length; i++) { if ((i & 3) === 3) continue; h ^= d[i]; h = Math.imul(h, 0x01000193) >>> 0; sum += d[i]; }
      return { hash: h.toString(16).padStart(8, '0'), mean: sum / (d.length * 0.75) };
    } catch (e) { return { hash: null, error: String(e) }; }
  }

  window.__probe = () => {
    markFirst();
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    const fh = frameHash();
    let buffered = null;
    if (v.buffered.length) buffered = [v.buffered.start(0), v.buffered.end(v.buffered.length - 1)];
    return {
      now: performance.now(), currentTime: st.ctBase + v.currentTime, readyState: v.readyState, paused: v.paused,
      videoWidth: v.videoWidth, videoHeight: v.videoHeight, buffered,
      totalVideoFrames: q ? q.totalVideoFrames : null, droppedVideoFrames: q ? q.droppedVideoFrames : null,
      rvfc: st.rvfc, rvfcPresented: st.rvfcPresented, rvfcSupported: st.rvfcSupported,
      hash: fh && fh.hash, mean: fh && fh.mean, hashError: fh && fh.error,
      firstFrameMs: st.firstFrameAt === null ? null : st.firstFrameAt - st.t0,
      latencyMs: (window.__player && window.__player.playingDate) ? Date.now() - window.__player.playingDate.getTime() : null,
      hlsLatency: window.__player && window.__player.latency, hlsTarget: window.__player && window.__player.targetLatency,
      fatal: st.fatal.slice(), warnings: st.warnings.slice(), ended: st.ended, setupError: st.setupError,
      errorEvents: st.errorEvents.slice(), errorEventCount: st.errorEventCount, reconnects: st.reconnects,
      longestFrameGapMs: st.longestFrameGap,
      videoError: v.error ? ('code=' + v.error.code + ' ' + (v.error.message || '')) : null,
    };
  };
  window.__events = () => st.events.slice();
  // The frame-gap measure covers the watch only (not the start-up before the first frame).
  window.__resetFrameGap = () => { st.longestFrameGap = 0; st.lastFrameAt = null; };
  window.__sizes = () => st.sizes.slice();
  window.__levels = () => {
    const p = window.__player;
    if (!p || !p.levels) return null;
    return { current: p.currentLevel, levels: p.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate, codecs: [l.videoCodec, l.audioCodec].filter(Boolean).join(',') })) };
  };
  window.__nextLevel = (i) => { window.__player.nextLevel = i; };

  const tryPlay = () => { const p = v.play(); if (p && p.catch) p.catch((e) => log('play() rejected: ' + e)); };
  const avc = 'video/mp4; codecs="avc1.42E01E"';
  const MS = window.ManagedMediaSource || window.MediaSource;
  if (!MS || !MS.isTypeSupported(avc)) { st.setupError = 'this browser has no MSE H.264 support (' + avc + ')'; return; }

  if (kind === 'hls') {
    if (!window.Hls || !Hls.isSupported()) { st.setupError = 'hls.js not loaded or not supported'; return; }
    const hls = window.__player = new Hls({ debug: hlsDebug, enableWorker: true, lowLatencyMode: lowLatency, maxLiveSyncPlaybackRate: catchUp });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      const s = 'hls.js ' + data.type + '/' + data.details + (data.response && data.response.code !== undefined ? ' http=' + data.response.code : '') + (data.reason ? ' ' + data.reason : '') + (data.error && data.error.message && data.error.message !== data.reason ? ' ' + data.error.message : '');
      errorEvent(s + (data.fatal ? ' [fatal]' : ''));
      if (data.fatal) fatal(s); else warn(s);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => { log('manifest parsed, levels=' + d.levels.length); tryPlay(); });
    hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => log('level loaded live=' + d.details.live + ' frags=' + d.details.fragments.length));
    hls.on(Hls.Events.LEVEL_SWITCHING, (_e, d) => log('level switching to ' + d.level));
    hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => log('level switched to ' + d.level));
    {
      // Every fragment and part, as loaded and as buffered, and each playlist's live edge: printed when a watch
      // stalls or fails, to tell a hole in what the server sent from one in what the player asked for.
      const name = (f) => String(f.url || '').split('/').pop();
      const what = (d) => 'sn=' + d.frag.sn + (d.part ? ' part=' + d.part.index + ' ' + name(d.part) : ' ' + name(d.frag)) +
        ' start=' + (d.part || d.frag).start.toFixed(3) + ' dur=' + (d.part || d.frag).duration.toFixed(3);
      hls.on(Hls.Events.FRAG_LOADED, (_e, d) => log('loaded ' + what(d)));
      hls.on(Hls.Events.FRAG_BUFFERED, (_e, d) => log('buffered ' + what(d) + ' buf=' + JSON.stringify(Array.from({ length: v.buffered.length }, (_, i) => [v.buffered.start(i).toFixed(3), v.buffered.end(i).toFixed(3)]))));
      hls.on(Hls.Events.LEVEL_UPDATED, (_e, d) => { const x = d.details; log('playlist msn=' + x.endSN + ' part=' + (x.partList ? x.partList.length : 0) + ' edge=' + x.edge.toFixed(3) + (x.skippedSegments ? ' skipped=' + x.skippedSegments : '')); });
    }
    hls.attachMedia(v);
    hls.loadSource(url);
  } else {
    if (!window.mpegts || !mpegts.isSupported()) { st.setupError = 'mpegts.js not loaded or not supported'; return; }
    mpegts.LoggingControl.enableAll = false;
    const start = () => {
      const p = window.__player = mpegts.createPlayer(
        { type: 'flv', isLive: true, url, hasAudio: undefined, hasVideo: undefined },
        { enableWorker: false, lazyLoad: false, enableStashBuffer: false, liveBufferLatencyChasing: false });
      let lost = false;
      // --reconnect: a lost stream (an error, or the response's end) starts a new player while the budget lasts.
      const reconnect = (why) => {
        if (lost || st.reconnects >= maxReconnects) return false;
        lost = true; st.reconnects++;
        log('reconnect ' + st.reconnects + ' after: ' + why + ' (t=' + v.currentTime.toFixed(2) + ')');
        setTimeout(() => {
          const ct = v.currentTime;
          try { p.pause(); p.unload(); p.detachMediaElement(); p.destroy(); } catch (e) { log('destroy: ' + e); }
          st.ctBase += ct;
          start();
        }, 0);
        return true;
      };
      p.on(mpegts.Events.ERROR, (type, detail, info) => {
        const s = 'mpegts.js ' + type + '/' + detail + (info ? ' ' + JSON.stringify(info).slice(0, 300) : '');
        errorEvent(s);
        if (lost) return;
        if (reconnect(s)) warn(s + ' (reconnecting)'); else fatal(s);
      });
      p.on(mpegts.Events.LOADING_COMPLETE, () => {
        if (lost) return;
        warn('mpegts.js loading complete (stream ended)' + (reconnect('loading complete') ? ' (reconnecting)' : ''));
      });
      p.on(mpegts.Events.MEDIA_INFO, (mi) => log('media info ' + (mi && mi.width) + 'x' + (mi && mi.height) + ' ' + (mi && mi.mimeType)));
      p.attachMediaElement(v);
      p.load();
      tryPlay();
    };
    start();
  }
})();`;

function startPageServer(libPath) {
  const lib = readFileSync(libPath);
  return new Promise((resolve, reject) => {
    const srv = createServer((req, res) => {
      const path = new URL(req.url, 'http://x').pathname;
      const send = (code, type, body) => {
        res.writeHead(code, { 'Content-Type': type, 'Cache-Control': 'no-store' });
        res.end(body);
      };
      if (path === '/' || path === '/index.html') send(200, 'text/html; charset=utf-8', PAGE_HTML);
      else if (path === '/lib.js') send(200, 'text/javascript; charset=utf-8', lib);
      else if (path === '/favicon.ico') send(204, 'text/plain', '');
      else if (path === '/probe.js') send(200, 'text/javascript; charset=utf-8', PROBE_JS);
      else send(404, 'text/plain', 'not found');
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

// ---------------------------------------------------------------- main
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll the media URL from node until it answers 200 (and, for HLS, lists a segment).
// Returns null when ready, else the last reason.
async function waitReady(opts) {
  const deadline = Date.now() + opts.waitReady * 1000;
  let why = 'not polled';
  while (true) {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), 2000);
    try {
      const r = await fetch(opts.url, { signal: ac.signal, cache: 'no-store' });
      if (r.status !== 200) why = `HTTP ${r.status}`;
      else if (opts.kind === 'hls') {
        const body = await r.text();
        if (/#EXTINF|#EXT-X-STREAM-INF/.test(body)) return null;
        why = 'playlist has no segment yet';
      } else { ac.abort(); return null; }   // flv: headers are enough, drop the body
      ac.abort();
    } catch (e) { why = String(e.cause?.code || e.message || e); }
    finally { clearTimeout(t); }
    if (Date.now() + 250 >= deadline) return why;
    await sleep(250);
  }
}

class SetupError extends Error {}

function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

async function main() {
  let opts;
  try { opts = parseArgs(process.argv); } catch (e) { usage(e.message); return { code: EXIT_SETUP, out: { ok: false, setup_error: e.message } }; }

  const result = {
    ok: false, kind: opts.kind, url: opts.url,
    first_frame_ms: null, played_seconds: null, wall_seconds: null, play_ratio: null,
    distinct_frame_hashes: null, hash_samples: null, hash_changes: null,
    total_video_frames: null, dropped_video_frames: null, rvfc_frames: null,
    width: null, height: null, errors: [], warnings: [],
  };

  // --- setup checks (exit 2)
  if (!existsSync(CHROMIUM)) throw new SetupError(`chromium not found at ${CHROMIUM} (run nodes/tests/browser/setup.sh, or set STROM_CHROMIUM)`);
  const libRel = opts.kind === 'hls' ? 'hls.js/dist/hls.min.js' : 'mpegts.js/dist/mpegts.js';
  if (!existsSync(join(NM, libRel)) || !existsSync(join(NM, 'playwright-core/package.json')))
    throw new SetupError(`node_modules missing in ${HERE} (run nodes/tests/browser/setup.sh)`);
  let chromium;
  try { ({ chromium } = await import('playwright-core')); } catch (e) {
    throw new SetupError(`cannot load playwright-core: ${e.message} (run nodes/tests/browser/setup.sh)`);
  }

  if (opts.waitReady > 0) {
    const why = await waitReady(opts);
    if (why) { result.reason = `URL not ready after ${opts.waitReady}s: ${why}`; return { code: EXIT_FAIL, out: result }; }
  }

  const userDataDir = mkdtempSync(join(tmpdir(), 'strom-play-'));
  let srv = null, context = null;
  const cleanup = async () => {
    if (context) { const c = context; context = null; await Promise.race([c.close().catch(() => {}), sleep(10000)]); }
    if (srv) { const s = srv; srv = null; s.closeAllConnections?.(); await new Promise((r) => s.close(() => r())); }
    try { rmSync(userDataDir, { recursive: true, force: true }); } catch {}
  };
  activeCleanup = cleanup;

  try {
    srv = await startPageServer(join(NM, libRel));
    const pageOrigin = `http://127.0.0.1:${srv.address().port}`;
    try {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          '--autoplay-policy=no-user-gesture-required'],
        viewport: { width: 800, height: 450 },
        timeout: 30000,
        handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false, // our handler closes it
      });
    } catch (e) {
      throw new SetupError(`chromium failed to launch: ${String(e.message).split('\n')[0]}`);
    }
    const page = context.pages()[0] || await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => { pageErrors.push(String(e.message || e)); if (DEBUG) process.stderr.write(`[pageerror] ${e}\n`); });
    page.on('crash', () => pageErrors.push('page crashed'));
    if (DEBUG) page.on('console', (m) => process.stderr.write(`[console.${m.type()}] ${m.text()}\n`));

    const pageUrl = `${pageOrigin}/?kind=${opts.kind}&ll=${opts.lowLatency ? 1 : 0}&catchup=${opts.catchUp}&reconnect=${opts.reconnect}&hlsdebug=${process.env.STROM_HLS_DEBUG === '1' ? 1 : 0}&url=${encodeURIComponent(opts.url)}`;
    await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
    const probe = () => page.evaluate(() => window.__probe());

    // --- phase 1: first frame
    const ffDeadline = Date.now() + opts.firstFrameTimeout * 1000;
    let s = await probe();
    while (true) {
      if (s.setupError) throw new SetupError(s.setupError);
      if (s.fatal.length || s.videoError || pageErrors.length) break;
      if (s.firstFrameMs !== null) break;
      if (Date.now() >= ffDeadline) break;
      await sleep(100);
      s = await probe();
    }
    result.first_frame_ms = s.firstFrameMs === null ? null : Math.round(s.firstFrameMs);
    const fail = (reason, snap) => {
      const sn = snap || s;
      result.errors.push(...sn.fatal, ...(sn.videoError ? [`video.error ${sn.videoError}`] : []), ...pageErrors.map((e) => `pageerror ${e}`));
      result.warnings = sn.warnings;
      result.width = sn.videoWidth || null; result.height = sn.videoHeight || null;
      result.reason = reason;
      return { code: EXIT_FAIL, out: result };
    };
    if (s.fatal.length || s.videoError || pageErrors.length)
      return fail(`player error before first frame: ${[...s.fatal, s.videoError, ...pageErrors].filter(Boolean).join('; ')}`);
    if (s.firstFrameMs === null)
      return fail(`no first frame within ${opts.firstFrameTimeout}s (readyState=${s.readyState} videoWidth=${s.videoWidth})`);

    // --- phase 1b (--seek, VOD): jump to that share of the duration; the watch starts where it landed
    if (opts.seek !== null) {
      const duration = await page.evaluate(() => document.getElementById('v').duration);
      if (!Number.isFinite(duration) || duration <= 0) return fail(`--seek: the video has no finite duration (${duration}): not VOD?`);
      const target = duration * opts.seek, t0 = Date.now();
      await page.evaluate((t) => { document.getElementById('v').currentTime = t; }, target);
      for (;;) {
        await sleep(100);
        s = await probe();
        if (s.fatal.length || s.videoError) return fail(`player error after the seek: ${[...s.fatal, s.videoError].filter(Boolean).join('; ')}`);
        if (s.currentTime >= target - 0.5 && s.readyState >= 3) break;
        if (Date.now() - t0 > opts.firstFrameTimeout * 1000) return fail(`seek to ${target.toFixed(1)}s of ${duration.toFixed(1)}s did not land (currentTime ${s.currentTime.toFixed(2)}, readyState ${s.readyState})`);
      }
      Object.assign(result, { duration_seconds: +duration.toFixed(3), seek_target_seconds: +target.toFixed(3), seek_ms: Date.now() - t0 });
    }

    // --- phase 1c (--seek-back, live with DVR): jump back that far from the first frame's position; it must land
    // inside the seekable range, on media older than the live window, and play on from there
    if (opts.seekBack !== null) {
      const range = await page.evaluate(() => {
        const v = document.getElementById('v');
        return v.seekable.length ? [v.seekable.start(0), v.seekable.end(v.seekable.length - 1)] : null;
      });
      const from = s.currentTime, target = from - opts.seekBack, t0 = Date.now();
      if (!range || target < range[0]) return fail(`--seek-back: ${target.toFixed(1)}s is outside the seekable range ${JSON.stringify(range)}`);
      await page.evaluate((t) => { document.getElementById('v').currentTime = t; }, target);
      for (;;) {
        await sleep(100);
        s = await probe();
        if (s.fatal.length || s.videoError) return fail(`player error after the seek back: ${[...s.fatal, s.videoError].filter(Boolean).join('; ')}`);
        if (Math.abs(s.currentTime - target) < 5 && s.readyState >= 3) break;
        if (Date.now() - t0 > opts.firstFrameTimeout * 1000) return fail(`seek back to ${target.toFixed(1)}s did not land (currentTime ${s.currentTime.toFixed(2)}, readyState ${s.readyState})`);
      }
      Object.assign(result, { seek_from_seconds: +from.toFixed(3), seek_target_seconds: +target.toFixed(3), seek_ms: Date.now() - t0,
        seekable_start_seconds: +range[0].toFixed(3), seekable_end_seconds: +range[1].toFixed(3) });
    }

    // --- phase 2: watch for --seconds (or through every level)
    await page.evaluate(() => window.__resetFrameGap());
    const start = s;
    const hashes = [start.hash];
    let lastAdvanceAt = start.now, longestStall = 0, prevCt = start.currentTime, stalls = 0;
    // Playback time that passed, sample by sample (a forward jump of currentTime, e.g. hls.js skipping to a new
    // owner's timestamps, counts for no more than the wall time of its sample).
    let advanced = 0;
    let last = start, prevNow = start.now;
    const latencies = [];
    // One sample after `ms`: stall bookkeeping; false on a player error (fail fast).
    const sample = async (ms) => {
      await sleep(ms);
      last = await probe();
      hashes.push(last.hash);
      // stall = wall time since currentTime last moved forward (sample resolution = the sampling period)
      if (last.currentTime <= prevCt + 0.05) { longestStall = Math.max(longestStall, last.now - lastAdvanceAt); stalls++; }
      else lastAdvanceAt = last.now;
      if (last.latencyMs !== null) latencies.push(last.latencyMs);
      advanced += Math.min(Math.max(0, last.currentTime - prevCt), (last.now - prevNow) / 1000);
      prevCt = last.currentTime; prevNow = last.now;
      if (DEBUG) process.stderr.write(`[sample] lat=${last.latencyMs} hls.latency=${last.hlsLatency} target=${last.hlsTarget} ct=${last.currentTime.toFixed(2)} rs=${last.readyState} ${last.videoWidth}x${last.videoHeight} hash=${last.hash} frames=${last.totalVideoFrames} rvfc=${last.rvfc} buf=${JSON.stringify(last.buffered)}\n`);
      return !(last.fatal.length || last.videoError || pageErrors.length);
    };
    let levelFailure = null, stoppedByFile = false;
    if (opts.switchLevels) {
      const info = await page.evaluate(() => window.__levels());
      const levels = (info && info.levels) || [];
      result.levels = levels.map((l, i) => ({ index: i, width: l.width, height: l.height, bitrate: l.bitrate, codecs: l.codecs, shown: false, switch_seconds: null }));
      result.start_level = info ? info.current : null;
      if (levels.length < 2) levelFailure = `only ${levels.length} level(s) in the master playlist`;
      // Every level once, the one playing now last: consecutive levels always differ.
      const from = Math.max(0, info ? info.current : 0);
      const order = levels.map((_, k) => (from + 1 + k) % levels.length);
      run: for (const i of levelFailure ? [] : order) {
        const want = levels[i], t0 = Date.now();
        await page.evaluate((n) => window.__nextLevel(n), i);
        while (!(last.videoWidth === want.width && last.videoHeight === want.height)) {
          if (Date.now() - t0 > opts.levelTimeout * 1000) {
            levelFailure = `level ${i} (${want.width}x${want.height}) not shown within ${opts.levelTimeout}s (video is ${last.videoWidth}x${last.videoHeight})`;
            break run;
          }
          if (!(await sample(250))) break run;
        }
        Object.assign(result.levels[i], { shown: true, switch_seconds: +((Date.now() - t0) / 1000).toFixed(2) });
      }
      // Playback goes on after the last switch.
      const tailEnd = Date.now() + 2000;
      while (!levelFailure && Date.now() < tailEnd && (await sample(250)));
      result.sizes_shown = await page.evaluate(() => window.__sizes());
    } else {
      const endAt = Date.now() + opts.seconds * 1000;
      const period = opts.sampleMs || SAMPLE_MS;
      while (Date.now() < endAt && (await sample(Math.min(period, Math.max(0, endAt - Date.now()))))) {
        if (opts.stopFile && existsSync(opts.stopFile)) { stoppedByFile = true; break; }
      }
    }
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot }).catch((e) => result.warnings.push(`screenshot: ${e.message}`));

    const wall = (last.now - start.now) / 1000;
    const played = last.currentTime - start.currentTime;
    let changes = 0;
    for (let i = 1; i < hashes.length; i++) if (hashes[i] && hashes[i - 1] && hashes[i] !== hashes[i - 1]) changes++;
    const transitions = hashes.length - 1;
    Object.assign(result, {
      played_seconds: +played.toFixed(3), wall_seconds: +wall.toFixed(3),
      play_ratio: wall > 0 ? +(played / wall).toFixed(3) : null,
      distinct_frame_hashes: new Set(hashes.filter(Boolean)).size, hash_samples: hashes.length, hash_changes: changes,
      total_video_frames: last.totalVideoFrames === null ? null : last.totalVideoFrames - start.totalVideoFrames,
      dropped_video_frames: last.droppedVideoFrames === null ? null : last.droppedVideoFrames - start.droppedVideoFrames,
      rvfc_frames: last.rvfcSupported ? last.rvfc - start.rvfc : null,
      longest_stall_seconds: +(longestStall / 1000).toFixed(3), stalls,
      latency_samples: latencies.length,
      latency_p50_ms: latencies.length ? Math.round(quantile(latencies, 0.5)) : null,
      latency_p99_ms: latencies.length ? Math.round(quantile(latencies, 0.99)) : null,
      width: last.videoWidth || null, height: last.videoHeight || null,
      end_current_time: +last.currentTime.toFixed(3),
      error_events: last.errorEvents, error_event_count: last.errorEventCount, reconnects: last.reconnects,
      longest_frame_gap_seconds: last.rvfcSupported ? +(last.longestFrameGapMs / 1000).toFixed(3) : null,
      stopped_by_file: stoppedByFile, advanced_seconds: +advanced.toFixed(3),
    });
    result.warnings = last.warnings;
    const errs = [...last.fatal, ...(last.videoError ? [`video.error ${last.videoError}`] : []), ...pageErrors.map((e) => `pageerror ${e}`)];
    result.errors = errs;
    if (last.hashError) result.warnings.push(`canvas: ${last.hashError}`);

    // --- verdict
    const reasons = [];
    if (errs.length) reasons.push(`player error: ${errs.join('; ')}`);
    if (levelFailure) reasons.push(levelFailure);
    if (!opts.switchLevels && !stoppedByFile && wall < opts.seconds * 0.5) reasons.push(`watched only ${wall.toFixed(1)}s of ${opts.seconds}s`);
    if (!(played >= opts.minPlayRatio * wall)) reasons.push(`currentTime advanced ${played.toFixed(2)}s in ${wall.toFixed(2)}s wall (< ${opts.minPlayRatio * 100}%)`);
    if (longestStall / 1000 > opts.maxStall) reasons.push(`playback stalled for ${(longestStall / 1000).toFixed(1)}s (> ${opts.maxStall}s)`);
    if (transitions < 1 || changes / transitions < MIN_HASH_CHANGE_RATIO)
      reasons.push(`picture changed in only ${changes}/${transitions} samples (need >= ${MIN_HASH_CHANGE_RATIO * 100}%)`);
    if (result.total_video_frames !== null && !(result.total_video_frames > 0)) reasons.push('getVideoPlaybackQuality().totalVideoFrames did not grow');
    if (result.rvfc_frames !== null && !(result.rvfc_frames > 0)) reasons.push('requestVideoFrameCallback did not fire');
    if (opts.expectWidth !== null && result.width !== opts.expectWidth) reasons.push(`videoWidth ${result.width} != expected ${opts.expectWidth}`);
    if (opts.expectHeight !== null && result.height !== opts.expectHeight) reasons.push(`videoHeight ${result.height} != expected ${opts.expectHeight}`);
    if (DEBUG || stalls > 0 || reasons.length) process.stderr.write(`[events]\n${(await page.evaluate(() => window.__events()).catch(() => [])).join('\n')}\n`);
    if (reasons.length) { result.reason = reasons.join('; '); return { code: EXIT_FAIL, out: result }; }
    result.ok = true;
    return { code: EXIT_PASS, out: result };
  } finally {
    await cleanup();
  }
}

let activeCleanup = null;
let finished = false;
let hardTimer = null;
function finish(code, out) {
  if (finished) return;
  finished = true;
  if (out) process.stdout.write(JSON.stringify(out) + '\n');
  if (code !== EXIT_PASS && out && (out.reason || out.setup_error)) process.stderr.write(`play.mjs: FAIL: ${out.reason || out.setup_error}\n`);
  process.exitCode = code;
  if (hardTimer) clearTimeout(hardTimer);
  // Don't let a stuck handle keep us alive.
  setTimeout(() => process.exit(code), 2000).unref();
}

async function abort(code, msg) {
  if (finished) return;
  const out = { ok: false, reason: msg, errors: [msg] };
  try { if (activeCleanup) await Promise.race([activeCleanup(), sleep(8000)]); } catch {}
  finish(code, out);
  process.exit(code);
}

// Overall hard timeout: first-frame timeout + watch time + generous launch/teardown margin
// (with --switch-levels the watch time is up to --level-timeout per level: six levels allowed for).
{
  let ff = 20, secs = 15, wr = 0, lt = 20, levels = false;
  const a = process.argv;
  for (let i = 0; i < a.length; i++) {
    const val = (name) => (a[i] === name ? a[i + 1] : a[i].startsWith(name + '=') ? a[i].slice(name.length + 1) : null);
    const f = Number(val('--first-frame-timeout')); if (f > 0) ff = f;
    const sc = Number(val('--seconds')); if (sc > 0) secs = sc;
    const w = Number(val('--wait-ready')); if (w > 0) wr = w;
    const l = Number(val('--level-timeout')); if (l > 0) lt = l;
    if (a[i] === '--switch-levels') levels = true;
  }
  if (levels) secs = 6 * lt + 2;
  const hardMs = (wr + ff + secs + 60) * 1000;
  hardTimer = setTimeout(() => abort(EXIT_FAIL, `hard timeout after ${hardMs / 1000}s`), hardMs);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => abort(EXIT_FAIL, `killed by ${sig}`));

main().then(({ code, out }) => finish(code, out), (e) => {
  if (e instanceof SetupError) finish(EXIT_SETUP, { ok: false, setup_error: e.message });
  else finish(EXIT_FAIL, { ok: false, reason: `harness error: ${e && e.stack || e}`, errors: [String(e && e.message || e)] });
});
