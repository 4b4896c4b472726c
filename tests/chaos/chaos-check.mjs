// chaos-check.mjs — the invariant checker of the chaos suite (SPEC §10).
//
//   node tests/chaos/chaos-check.mjs DIR
//   node tests/chaos/chaos-check.mjs --dump --bootstrap B --prefix P --sim URL DIR
//
// Reads a recorded history from DIR (the only input path, so a fixture and a
// live run are checked by the same code):
//   callbacks.jsonl, status.jsonl, connections.jsonl
//       every record of the topic, read_committed, one `kcat -J` envelope per
//       line ({"partition","offset","key","payload"}; payload null = tombstone)
//   sim-stats.json  GET /_sim/stats of the provider simulator (per code hash:
//                   token_requests, last_status, grant)
//   acked.txt       one line per callback the intake acknowledged (2xx/3xx),
//                   written by the load: "<connection_id> <code_sha256>"
//   faults.log      optional, one line per fault the nemesis injected
//   disconnects.txt optional, one line per DELETE /v1/connections/{id} the
//                   load sent: "<connection_id> <http code>" (202 = accepted)
//   replays.txt     optional, one connection id per `oauthqctl replay` sent
// --dump first writes the three topic files (kcat, read_committed, to the end)
// and sim-stats.json (curl-free: fetch) into DIR, then checks DIR.
//
// Verifies (each violation is printed on stderr with its key, never a code):
//   G2  every acknowledged callback is in the callbacks topic and its
//       connection's last status is final (connected, failed, disconnected):
//       "lost" counts the acknowledged connections that are not.
//   G1  per code hash, the token requests that found the code already
//       consumed (the simulator's after_consumed: sent after the provider's
//       definitive decision) <= the unknown outcomes the worker counted for
//       that code (max unknown_outcomes of the connection records carrying
//       that code_sha256): the excess is "re-sent after definitive". Retries
//       after an answer that did not consume the code (429, 500 before) are
//       allowed. Without after_consumed in the stats: token requests - 1.
//   G3/G4  per key and partition, in offset order, versions in status and
//       connections strictly grow (a tombstone ends the key), and a status
//       `connected` is never followed by `failed`, and `disconnected` is
//       followed by nothing but `disconnected` (it is final; a reload or a
//       replay after it changes nothing): all count as "version regressions".
//       connected -> disconnected is the disconnect, no regression.
//   G2 for disconnects: an accepted DELETE (202) whose connection does not
//       end `disconnected` is an acknowledged request without its final
//       status: it counts in "lost".
//   revoked-but-connected: a connection whose LAST status is connected while
//       the simulator reports the grant of its code revoked or deauthorized;
//       and its mirror, a connection whose last status is disconnected while
//       its code's grant is still active at the provider (the disconnect did
//       not deauthorize): both count in "revoked-but-connected".
//   Replayed ids (replays.txt) need no check of their own: a replay that
//       re-sent a definitively answered code shows in G1 (every code of the
//       simulator is counted, replayed or not); the count goes to stderr.
// Prints exactly one line on stdout:
//   chaos: acknowledged N, final N, lost 0, re-sent after definitive 0,
//   unknown outcomes U (re-sent R), version regressions 0,
//   revoked-but-connected 0, faults F
// and exits 0 only when lost, re-sent after definitive, version regressions
// and revoked-but-connected are all 0; 1 on a violation; 2 on bad input.
import { readFileSync, existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const FINAL = new Set(['connected', 'failed', 'disconnected']);
const MAX_LINES = 5_000_000; // bound on every input file

function die(msg) {
  console.error(`chaos-check: ${msg}`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { dump: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dump') o.dump = true;
    else if (a === '--bootstrap') o.bootstrap = argv[++i];
    else if (a === '--prefix') o.prefix = argv[++i];
    else if (a === '--sim') o.sim = argv[++i];
    else if (a.startsWith('--')) die(`unknown option ${a}`);
    else o.dir = a;
  }
  if (!o.dir) die('usage: chaos-check.mjs [--dump --bootstrap B --prefix P --sim URL] DIR');
  if (o.dump && (!o.bootstrap || !o.prefix || !o.sim)) die('--dump needs --bootstrap, --prefix, --sim');
  return o;
}

async function dump(o) {
  mkdirSync(o.dir, { recursive: true });
  for (const t of ['callbacks', 'status', 'connections']) {
    const out = execFileSync(
      'kcat',
      ['-C', '-b', o.bootstrap, '-t', o.prefix + t, '-J', '-e', '-q', '-X', 'isolation.level=read_committed'],
      { maxBuffer: 1 << 30, timeout: 120_000 },
    );
    writeFileSync(join(o.dir, `${t}.jsonl`), out);
  }
  const res = await fetch(`${o.sim}/_sim/stats`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) die(`GET /_sim/stats: ${res.status}`);
  writeFileSync(join(o.dir, 'sim-stats.json'), await res.text());
}

function lines(path, optional) {
  if (!existsSync(path)) {
    if (optional) return [];
    die(`missing ${path}`);
  }
  const ls = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
  if (ls.length > MAX_LINES) die(`${path}: more than ${MAX_LINES} lines`);
  return ls;
}

// Topic records in offset order per partition: [{partition, offset, key, value}].
function topic(dir, name) {
  const recs = lines(join(dir, `${name}.jsonl`)).map((l, i) => {
    let env;
    try {
      env = JSON.parse(l);
    } catch {
      die(`${name}.jsonl line ${i + 1}: not JSON`);
    }
    let value = null;
    if (env.payload !== null && env.payload !== undefined) {
      try {
        value = JSON.parse(env.payload);
      } catch {
        value = undefined; // not a record (the product sends such ones to dlq)
      }
    }
    return { partition: env.partition, offset: env.offset, key: env.key, value };
  });
  recs.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  return recs;
}

function check(dir) {
  const callbacks = topic(dir, 'callbacks');
  const status = topic(dir, 'status');
  const connections = topic(dir, 'connections');
  let stats;
  try {
    stats = JSON.parse(readFileSync(join(dir, 'sim-stats.json'), 'utf8'));
  } catch (e) {
    die(`sim-stats.json: ${e.message}`);
  }
  const codes = stats.codes || {};
  const acked = new Map(); // connection id -> set of code hashes
  for (const l of lines(join(dir, 'acked.txt'))) {
    const [id, hash] = l.trim().split(/\s+/);
    if (!acked.has(id)) acked.set(id, new Set());
    if (hash) acked.get(id).add(hash);
  }
  const faults = lines(join(dir, 'faults.log'), true).length;
  const say = (what, key) => console.error(`chaos-check: ${what}: ${key}`);

  // G3/G4: versions strictly grow per key and partition; connected never then failed.
  let regressions = 0;
  const lastStatus = new Map(); // id -> last status value (null after a tombstone)
  for (const [name, recs] of [['status', status], ['connections', connections]]) {
    const seen = new Map(); // partition/key -> {version, connected}
    for (const r of recs) {
      const k = `${r.partition}/${r.key}`;
      if (r.value === null) {
        seen.delete(k);
        if (name === 'status') lastStatus.set(r.key, null);
        continue;
      }
      if (r.value === undefined || typeof r.value.version !== 'number') continue;
      const prev = seen.get(k);
      if (prev && r.value.version <= prev.version) {
        regressions++;
        say(`${name} version ${r.value.version} after ${prev.version} at offset ${r.offset}`, r.key);
      }
      const connected = (prev && prev.connected) || r.value.status === 'connected';
      const disconnected = (prev && prev.disconnected) || r.value.status === 'disconnected';
      if (prev && prev.connected && r.value.status === 'failed') {
        regressions++;
        say(`${name} failed after connected at offset ${r.offset}`, r.key);
      }
      if (prev && prev.disconnected && r.value.status !== 'disconnected') {
        regressions++;
        say(`${name} ${r.value.status} after disconnected at offset ${r.offset}`, r.key);
      }
      seen.set(k, { version: r.value.version, connected, disconnected });
      if (name === 'status') lastStatus.set(r.key, r.value);
    }
  }

  // G1: per code hash, requests beyond 1 + counted unknown outcomes.
  const unknownByHash = new Map();
  const lastConn = new Map(); // id -> last non-tombstone connection record
  for (const r of connections) {
    if (!r.value) continue;
    lastConn.set(r.key, r.value);
    const h = r.value.code_sha256;
    const u = r.value.unknown_outcomes;
    if (typeof h === 'string' && typeof u === 'number')
      unknownByHash.set(h, Math.max(unknownByHash.get(h) || 0, u));
  }
  let resentDefinitive = 0;
  let unknown = 0;
  let resent = 0;
  for (const [hash, c] of Object.entries(codes)) {
    const n = c.token_requests || 0;
    const after = typeof c.after_consumed === 'number' ? c.after_consumed : Math.max(n - 1, 0);
    const u = unknownByHash.get(hash) || 0;
    unknown += u;
    resent += Math.min(Math.max(n - 1, 0), u);
    if (after > u) {
      resentDefinitive += after - u;
      say(`${after} token requests after the code was consumed, ${u} unknown outcomes, for code`, hash);
    }
  }

  // G2: acknowledged -> in callbacks and a final last status.
  const inCallbacks = new Set();
  // Only callback records count: a session.v1 (the flow was created) is not an acknowledged callback.
  for (const r of callbacks)
    if (r.value && r.value.schema === 'oauthq.callback.v1' && r.value.connection_id) inCallbacks.add(r.value.connection_id);
  let final = 0;
  let lost = 0;
  for (const id of acked.keys()) {
    const st = lastStatus.get(id);
    if (!inCallbacks.has(id)) {
      lost++;
      say('acknowledged callback missing from the callbacks topic', id);
    } else if (!st || !FINAL.has(st.status)) {
      lost++;
      say(`acknowledged callback without a final status (${st ? st.status : 'none'})`, id);
    } else final++;
  }

  // G2 for disconnects: an accepted DELETE ends in disconnected.
  const disconnects = new Set();
  for (const l of lines(join(dir, 'disconnects.txt'), true)) {
    const [id, rc] = l.trim().split(/\s+/);
    if (rc === '202') disconnects.add(id);
  }
  for (const id of disconnects) {
    const st = lastStatus.get(id);
    if (!st || st.status !== 'disconnected') {
      lost++;
      say(`accepted disconnect without status disconnected (${st ? st.status : 'none'})`, id);
    }
  }
  const replays = new Set(lines(join(dir, 'replays.txt'), true).map((l) => l.trim()));
  console.error(`chaos-check: ${replays.size} replayed, ${disconnects.size} disconnected connections`);

  // Revoked-but-connected: the last status is connected, its code's grant is
  // gone; or the last status is disconnected, its code's grant still active.
  let revoked = 0;
  for (const [id, st] of lastStatus) {
    if (!st || (st.status !== 'connected' && st.status !== 'disconnected')) continue;
    const conn = lastConn.get(id);
    const hash = conn && conn.code_sha256;
    const g = hash && codes[hash] ? codes[hash].grant : null;
    if (st.status === 'connected' && (g === 'revoked' || g === 'deauthorized')) {
      revoked++;
      say(`connected while the provider's grant is ${g}`, id);
    } else if (st.status === 'disconnected' && g === 'active') {
      revoked++;
      say('disconnected while the provider\'s grant is still active', id);
    }
  }

  console.log(
    `chaos: acknowledged ${acked.size}, final ${final}, lost ${lost}, ` +
      `re-sent after definitive ${resentDefinitive}, unknown outcomes ${unknown} (re-sent ${resent}), ` +
      `version regressions ${regressions}, revoked-but-connected ${revoked}, faults ${faults}`,
  );
  return lost + resentDefinitive + regressions + revoked === 0 ? 0 : 1;
}

const o = parseArgs(process.argv.slice(2));
if (o.dump) await dump(o);
process.exit(check(o.dir));
