#!/usr/bin/env node
// Stand-in for strom's HTTP outputs, to check play.mjs without the server.
// Serves, with `Access-Control-Allow-Origin: *`, on 127.0.0.1 only:
//   /live/test/index.m3u8 (+ segments)  live HLS written by an ffmpeg it spawns
//   /live/test.flv                      live HTTP-FLV, one ffmpeg per request
//   anything else                        404
//
//   node fake-origin.mjs [--port 0] [--dir /tmp/strom-fake-origin] [--max-seconds 300]
//                        [--hls-stop-after N]   kill the HLS ffmpeg after N s (frozen playlist)
//   /live/test.flv?freeze_after=N  stop sending after N s but keep the connection open
//   /live/test.flv?end_after=N     end the response after N s
// Prints "LISTENING http://127.0.0.1:PORT" on stdout once the first HLS segments exist.
// Exits by itself after --max-seconds. Needs ffmpeg with libx264 and aac.

import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const port = Number(opt('--port', 0));
const dir = opt('--dir', '/tmp/strom-fake-origin');
const maxSeconds = Number(opt('--max-seconds', 300));
const hlsStopAfter = opt('--hls-stop-after', null);

const SRC = ['-hide_banner', '-loglevel', 'error', '-re',
  '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
  '-f', 'lavfi', '-i', 'sine=frequency=440',
  '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '60', '-pix_fmt', 'yuv420p',
  '-c:a', 'aac', '-ar', '44100', '-b:a', '96k'];

const children = new Set();
const track = (c) => { children.add(c); c.on('exit', () => children.delete(c)); return c; };
function shutdown(code) {
  for (const c of children) { try { c.kill('SIGKILL'); } catch {} }
  process.exit(code);
}
process.on('SIGINT', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));
setTimeout(() => { process.stderr.write(`fake-origin: max ${maxSeconds}s reached, exiting\n`); shutdown(0); }, maxSeconds * 1000);

// --- live HLS writer
const hlsDir = join(dir, 'live', 'test');
rmSync(hlsDir, { recursive: true, force: true });
mkdirSync(hlsDir, { recursive: true });
const hls = track(spawn('ffmpeg', [...SRC, '-f', 'hls', '-hls_time', '2', '-hls_list_size', '6',
  '-hls_flags', 'delete_segments', join(hlsDir, 'index.m3u8')], { stdio: ['ignore', 'ignore', 'inherit'] }));
process.stderr.write(`fake-origin: hls ffmpeg pid ${hls.pid}\n`);
if (hlsStopAfter) setTimeout(() => { process.stderr.write('fake-origin: stopping HLS ffmpeg (freeze)\n'); hls.kill('SIGKILL'); }, Number(hlsStopAfter) * 1000);

const TYPES = { '.m3u8': 'application/vnd.apple.mpegurl', '.ts': 'video/mp2t', '.m4s': 'video/iso.segment', '.mp4': 'video/mp4' };

const srv = createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  const cors = { 'Access-Control-Allow-Origin': '*', 'Cache-Control': 'no-cache' };
  if (req.method === 'OPTIONS') { res.writeHead(204, { ...cors, 'Access-Control-Allow-Headers': '*' }); return res.end(); }
  if (u.pathname === '/live/test.flv') {
    res.writeHead(200, { ...cors, 'Content-Type': 'video/x-flv' });
    const ff = track(spawn('ffmpeg', [...SRC, '-f', 'flv', '-'], { stdio: ['ignore', 'pipe', 'inherit'] }));
    let frozen = false;
    ff.stdout.on('data', (b) => { if (!frozen) res.write(b); });
    ff.stdout.on('end', () => { if (!frozen) res.end(); });
    const fa = Number(u.searchParams.get('freeze_after')), ea = Number(u.searchParams.get('end_after'));
    if (fa > 0) setTimeout(() => { frozen = true; ff.kill('SIGKILL'); }, fa * 1000);
    if (ea > 0) setTimeout(() => ff.kill('SIGKILL'), ea * 1000);
    res.on('close', () => ff.kill('SIGKILL'));
    return;
  }
  const p = normalize(join(dir, u.pathname));
  if (!p.startsWith(dir) || !existsSync(p) || !statSync(p).isFile()) {
    res.writeHead(404, { ...cors, 'Content-Type': 'text/plain' }); return res.end('not found');
  }
  res.writeHead(200, { ...cors, 'Content-Type': TYPES[extname(p)] || 'application/octet-stream' });
  createReadStream(p).pipe(res);
});
srv.listen(port, '127.0.0.1', async () => {
  const deadline = Date.now() + 20000; // wait for a playlist with 2+ segments
  const { readFileSync } = await import('node:fs');
  while (Date.now() < deadline) {
    try { if ((readFileSync(join(hlsDir, 'index.m3u8'), 'utf8').match(/#EXTINF/g) || []).length >= 2) break; } catch {}
    await new Promise((r) => setTimeout(r, 200));
  }
  process.stdout.write(`LISTENING http://127.0.0.1:${srv.address().port}\n`);
});
