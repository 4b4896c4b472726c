// webhook-receiver.mjs PORT SECRET_FILE [MODE] — a small webhook receiver
// for tests and the `make run` demo. Verifies every delivery with the
// independent `standardwebhooks` npm package (never with oauthq's signer),
// once per secret in SECRET_FILE (one whsec_… per line, as the dispatcher
// reads it) and once with a wrong secret, which must fail.
//
// MODE (also settable with POST /_mode {"mode": ...}):
//   ok        answer 204 to every verified delivery
//   fail:N    answer 503 to the first N deliveries, then as ok
//   gone      answer 410 (endpoint gone)
//   redirect  answer 307 to /followed (a sender must not follow it; a
//             request that arrives there is logged with followed: true)
// GET /_log   the deliveries received, JSON: [{webhook_id, timestamp, type,
//             version, connection_id, answered, verified, verified_all,
//             wrong_secret_rejected, data, body}]
// GET /       an HTML page listing them (the demo shows it).
// Listens on 127.0.0.1 unless RECEIVER_HOST says otherwise.
import http from 'node:http';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
const { Webhook } = require('standardwebhooks');

const [port, secretFile, initialMode] = process.argv.slice(2);
if (!port || !secretFile) {
  console.error('usage: webhook-receiver.mjs PORT SECRET_FILE [ok|fail:N|gone]');
  process.exit(2);
}
const secrets = fs.readFileSync(secretFile, 'utf8').split('\n').map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const verifiers = secrets.map((s) => new Webhook(s));
const wrong = new Webhook('whsec_' + Buffer.from('a wrong secret, 32 bytes long!!!').toString('base64'));
let mode = initialMode || 'ok';
let failed = 0;
const log = [];
const MAX_LOG = 10000;

function verifyWith(wh, body, headers) {
  try {
    wh.verify(body, headers);
    return true;
  } catch {
    return false;
  }
}

function answer(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= 1 << 20) chunks.push(c);
  });
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (req.method === 'GET' && req.url === '/_log') return answer(res, 200, JSON.stringify(log));
    if (req.method === 'POST' && req.url === '/_mode') {
      mode = JSON.parse(body.toString()).mode;
      failed = 0;
      return answer(res, 200, JSON.stringify({ mode }));
    }
    if (req.method === 'GET' && req.url === '/') {
      const rows = log.slice(-50).reverse().map((e) => `<tr><td>${esc(e.received_at)}</td><td>${esc(e.type)}</td>` +
        `<td>${esc(e.connection_id)}</td><td>${esc(e.webhook_id)}</td><td>${e.verified ? 'valid' : 'INVALID'}</td>` +
        `<td>${e.answered}</td></tr>`).join('');
      return answer(res, 200, `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="2">` +
        `<title>oauthq webhooks (demo receiver)</title><h1>Webhooks received</h1>` +
        `<p>Signatures verified with the <code>standardwebhooks</code> library. Mode: ${esc(mode)}.</p>` +
        `<table border="1" cellpadding="4"><tr><th>received</th><th>type</th><th>connection</th>` +
        `<th>webhook-id</th><th>signature</th><th>answered</th></tr>${rows}</table>`, 'text/html; charset=utf-8');
    }
    if (req.method !== 'POST') return answer(res, 404, '{"error":"not_found"}');
    const headers = {
      'webhook-id': req.headers['webhook-id'] || '',
      'webhook-timestamp': req.headers['webhook-timestamp'] || '',
      'webhook-signature': req.headers['webhook-signature'] || '',
    };
    const results = verifiers.map((wh) => verifyWith(wh, body, headers));
    const entry = {
      webhook_id: headers['webhook-id'],
      timestamp: headers['webhook-timestamp'],
      signatures: headers['webhook-signature'].split(' ').length,
      content_type: req.headers['content-type'],
      verified: results.some(Boolean),
      verified_all: results.length > 0 && results.every(Boolean),
      wrong_secret_rejected: !verifyWith(wrong, body, headers),
      received_at: new Date().toISOString(),
      body: body.toString(),
    };
    try {
      const doc = JSON.parse(body.toString());
      Object.assign(entry, { type: doc.type, version: doc.data?.version, connection_id: doc.data?.id, data: doc.data });
    } catch {
      entry.type = 'unparseable';
    }
    let status = 204;
    entry.followed = req.url === '/followed';
    if (!entry.verified) status = 401;
    else if (mode === 'redirect' && !entry.followed) {
      entry.answered = 307;
      if (log.length < MAX_LOG) log.push(entry);
      res.writeHead(307, { Location: '/followed' });
      return res.end();
    }
    else if (mode === 'gone') status = 410;
    else if (mode.startsWith('fail')) {
      const n = Number(mode.split(':')[1] || 1e9);
      if (failed < n) {
        failed++;
        status = 503;
      }
    }
    entry.answered = status;
    if (log.length < MAX_LOG) log.push(entry);
    answer(res, status, status === 204 ? '' : '{"note":"receiver response body: never logged by oauthq"}');
  });
});
const host = process.env.RECEIVER_HOST || '127.0.0.1'; // compose.yaml: 0.0.0.0
server.listen(Number(port), host, () => console.log(`webhook receiver on ${host}:${server.address().port} (mode ${mode})`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
