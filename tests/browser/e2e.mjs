// tests/browser/e2e.mjs — the browser's view of oauthq, end to end, in
// Debian's Chromium driven by playwright-core (no downloaded browser).
//
// Needs a running stack (tests/integration/browser.sh starts one):
//   INTAKE_URL      the intake, started with OAUTHQ_DEMO=1
//   SIM_URL         the provider simulator the intake's "sim" provider uses
//   SCREENSHOT_DIR  where the screenshots go (default build/screenshots)
//
// Scenarios (each a fresh browser context unless said otherwise):
//  (a) demo page → "Connect (simulated provider)" → simulator auto-approves
//      → callback → status page ends "connected", shows the account id, and
//      the address bar holds /connect/{id} with no query (no code in history);
//  (b) the same callback URL loaded again in the same context (the reload /
//      double submit of opencollective#7968): still connected, the code
//      reached the token endpoint once, no grant revoked, no "already" text;
//  (c) the user denies at the provider (sim_fault=deny): "failed" with the
//      document's message (never the provider's error_description) and a
//      reconnect link to /oauth/start?provider=sim;
//  (d) on every /connect/ page: no request leaves the intake's origin, no
//      CSP violation, the CSP has no 'unsafe-inline'; every status document
//      fetched validates against schemas/status.v1.json (adapted to the API:
//      no "schema" field, provider may be null, version 0 before any
//      record), carries ETag "<version>", never moves backwards and never
//      contains a code;
//  (e) the embeddable module /static/oauthq-status.js, imported by a page
//      under the intake's CSP, resolves with the final document;
//  (f) a forged connection id gets a 404 (or the page's not-found state);
//  (g) a page opened while the connection awaits its callback (a connect
//      session, POST /v1/connections with the API key) shows pending, long-polls (?wait=25 with
//      If-None-Match, no tight loop) and turns connected when the callback
//      lands; after a final status it polls no more.
// Prints "browser: N passed, M failed"; exits non-zero on any failure.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const INTAKE_URL = (process.env.INTAKE_URL || '').replace(/\/$/, '');
const SIM_URL = (process.env.SIM_URL || '').replace(/\/$/, '');
const API_KEY = process.env.OAUTHQ_API_KEY || ''; // the platform backend's key (SPEC §4a)
const SHOTS = process.env.SCREENSHOT_DIR || 'build/screenshots';
if (!INTAKE_URL || !SIM_URL) {
  console.error('e2e: set INTAKE_URL and SIM_URL');
  process.exit(2);
}
const INTAKE_ORIGIN = new URL(INTAKE_URL).origin;
const WAIT_FINAL_MS = 30000;
const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1280, height: 800 };
mkdirSync(SHOTS, { recursive: true });

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

// ---- the status API's schema, derived from the Kafka record's ----------------
function apiSchema() {
  const s = JSON.parse(readFileSync(path.join(repo, 'schemas/status.v1.json'), 'utf8'));
  delete s.$id;
  delete s.properties.schema;
  s.required = s.required.filter((k) => k !== 'schema');
  s.properties.provider = { anyOf: [s.properties.provider, { type: 'null' }] };
  s.properties.version = { ...s.properties.version, minimum: 0 };
  s.title = 'oauthq status API document (from status.v1)';
  return s;
}
const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
addFormats(ajv);
const validateDoc = ajv.compile(apiSchema());

// ---- harness -------------------------------------------------------------------
const results = [];
function check(cond, what) {
  if (!cond) throw new Error(what);
}
async function scenario(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)\n      ${e.message}`);
  }
}
const sha256 = (s) => createHash('sha256').update(s).digest('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function simStats() {
  const res = await fetch(`${SIM_URL}/_sim/stats`);
  check(res.ok, `GET ${SIM_URL}/_sim/stats answered ${res.status}`);
  return res.json();
}

// Everything the checks of (d) need, collected from every page of a context.
const codesSeen = new Set(); // codes that passed through the browser (G5)
const docsChecked = { n: 0, byStatus: {} };
const statusRequests = new Map(); // page → [{wait, inm, at}] of its status polls
let connectLoads = 0;
const pending = [];

// Invariants of (d), found by the listeners whatever scenario runs; (d)
// reports them (each at most once).
const invariantProblems = new Set();
function problem(msg) {
  invariantProblems.add(msg.length > 300 ? `${msg.slice(0, 300)}…` : msg);
}

async function newContext(browser, viewport = DESKTOP) {
  const ctx = await browser.newContext({ viewport, deviceScaleFactor: viewport === PHONE ? 3 : 1 });
  // Runs in every document (not subject to the page's CSP): report CSP
  // violations as console errors the listener below catches.
  await ctx.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  ctx.on('page', (page) => watchPage(page));
  return ctx;
}

function onConnectPage(frame) {
  try {
    const u = new URL(frame.url());
    return u.origin === INTAKE_ORIGIN && u.pathname.startsWith('/connect/');
  } catch {
    return false;
  }
}

function watchPage(page) {
  const versions = new Map(); // id → last version seen by this page
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|CSP violation|Refused to/i.test(m.text()))
      problem(`CSP: ${m.text()} (page ${page.url()})`);
  });
  page.on('pageerror', (e) => problem(`page error on ${page.url()}: ${e.message}`));
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame() && onConnectPage(f)) connectLoads++;
  });
  statusRequests.set(page, []);
  page.on('request', (req) => {
    const f = req.frame();
    if (!req.isNavigationRequest() && onConnectPage(f) && new URL(req.url()).origin !== INTAKE_ORIGIN)
      problem(`the status page requested another origin: ${req.url()}`);
    const u = new URL(req.url());
    if (u.origin === INTAKE_ORIGIN && u.pathname.startsWith('/v1/connections/') && onConnectPage(f)) {
      const inm = req.headers()['if-none-match'] || null;
      const wait = u.searchParams.get('wait');
      if (wait !== null && (wait !== '25' || !inm))
        problem(`status page long-poll without If-None-Match or with wait=${wait}: ${u.pathname}${u.search}`);
      if (wait === null && inm) problem('status page sent If-None-Match without ?wait');
      statusRequests.get(page).push({ wait, inm, at: Date.now() });
    }
    if (u.pathname === '/oauth/callback' && u.searchParams.get('code'))
      codesSeen.add(u.searchParams.get('code'));
  });
  page.on('response', (res) => {
    const u = new URL(res.url());
    if (u.origin !== INTAKE_ORIGIN) return;
    if (u.pathname.startsWith('/connect/') && res.request().isNavigationRequest() && res.status() === 200) {
      const csp = res.headers()['content-security-policy'] || '';
      if (!/default-src 'none'/.test(csp) || !/script-src 'self' 'sha256-/.test(csp) || /unsafe-inline/.test(csp))
        problem(`/connect/ CSP is not the hash-based one: ${csp || '(none)'}`);
    }
    if (!u.pathname.startsWith('/v1/connections/') || res.status() !== 200) return;
    pending.push(
      (async () => {
        const text = await res.text().catch(() => null);
        if (text === null) return; // page closed mid-body
        let doc;
        try {
          doc = JSON.parse(text);
        } catch {
          return problem(`status API 200 is not JSON: ${u.pathname}`);
        }
        docsChecked.n++;
        docsChecked.byStatus[doc.status] = (docsChecked.byStatus[doc.status] || 0) + 1;
        if (!validateDoc(doc)) {
          const why = validateDoc.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
          problem(`status document does not match the schema: ${why} — ${text}`);
        }
        const etag = res.headers()['etag'];
        if (etag !== `"${doc.version}"`) problem(`ETag ${etag} does not name version ${doc.version}`);
        if (!/^application\/json/.test(res.headers()['content-type'] || ''))
          problem(`status API Content-Type ${res.headers()['content-type']}`);
        for (const c of codesSeen) if (text.includes(c)) problem('a status document contains the code (G5)');
        const prev = versions.get(doc.id);
        if (prev !== undefined && doc.version < prev)
          problem(`status version went backwards for one page: ${prev} → ${doc.version}`);
        versions.set(doc.id, Math.max(prev ?? 0, doc.version));
      })(),
    );
  });
}

// The committed status document of the connection the page shows, now.
async function pageDoc(page) {
  const id = new URL(page.url()).pathname.split('/')[2];
  const res = await page.request.get(`${INTAKE_URL}/v1/connections/${id}`, {
    headers: { Accept: 'application/json' },
  });
  check(res.status() === 200, `GET /v1/connections/${id} answered ${res.status()}`);
  return res.json();
}

async function waitStatus(page, status, what) {
  try {
    await page.waitForSelector(`#status[data-status="${status}"]`, { timeout: WAIT_FINAL_MS, state: 'attached' });
  } catch {
    const got = await page.getAttribute('#status', 'data-status').catch(() => '(no #status)');
    const text = await page.innerText('body').catch(() => '');
    throw new Error(`${what}: no "${status}" within ${WAIT_FINAL_MS / 1000}s; page shows "${got}" at ${page.url()}: ${JSON.stringify(text.slice(0, 300))}`);
  }
}

async function shot(page, name, viewport) {
  if (viewport) await page.setViewportSize(viewport);
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

function assertCleanUrl(page) {
  const u = new URL(page.url());
  check(u.origin === INTAKE_ORIGIN, `ended on ${u.origin}, not the intake`);
  check(/^\/connect\/[A-Za-z0-9_-]+$/.test(u.pathname), `ended on ${u.pathname}, not /connect/{id}`);
  check(u.search === '' && u.hash === '', `the address bar still has "${u.search}${u.hash}"`);
  return u.pathname.split('/')[2];
}

// ---- scenarios -----------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
});

let flow = null; // {ctx, page, id, callbackUrl, code, revoked}

await scenario('(a) demo → simulated provider → connected', async () => {
  const ctx = await newContext(browser, DESKTOP);
  const page = await ctx.newPage();
  const callbacks = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin === INTAKE_ORIGIN && u.pathname === '/oauth/callback') callbacks.push(r.url());
  });
  const before = await simStats();
  const demo = await page.goto(`${INTAKE_URL}/`);
  check(demo && demo.status() === 200, `GET / answered ${demo && demo.status()} (is OAUTHQ_DEMO=1 set?)`);
  await page.getByRole('link', { name: 'Connect (simulated provider)' }).click();
  await waitStatus(page, 'connected', 'after approving at the simulator');
  const id = assertCleanUrl(page);
  check(callbacks.length === 1, `expected one /oauth/callback request, saw ${callbacks.length}`);
  const cb = new URL(callbacks[0]);
  const code = cb.searchParams.get('code');
  check(code, 'the callback carried no code');
  const doc = await pageDoc(page);
  check(doc.status === 'connected' && doc.account && doc.account.id, `API says ${doc.status}, account ${JSON.stringify(doc.account)}`);
  check(await page.isVisible('#account'), '#account is not visible');
  const shown = await page.innerText('#account');
  check(shown.includes(doc.account.id), `#account shows "${shown}", not the account id ${doc.account.id}`);
  const msg = await page.innerText('#message');
  check(msg === doc.message, `#message "${msg}" is not the document's message "${doc.message}"`);
  const hist = await page.evaluate(() => location.href);
  check(!hist.includes('code='), 'location still holds the code');
  const stats = await simStats();
  const c = stats.codes[sha256(code)];
  check(c && c.token_requests === 1, `code reached the token endpoint ${c ? c.token_requests : 0} times, want 1`);
  await shot(page, 'connected.png');
  await shot(page, 'connected-phone.png', PHONE);
  await page.setViewportSize(DESKTOP);
  flow = { ctx, page, id, callbackUrl: callbacks[0], code, revokedBefore: before.grants.revoked };
});

await scenario('(b) the same callback again (reload / double submit) stays connected', async () => {
  check(flow, 'needs (a)');
  const { ctx, id, callbackUrl, code } = flow;
  const polls = statusRequests.get(flow.page).length;
  const page = await ctx.newPage();
  const res = await page.goto(callbackUrl);
  check(res && res.status() === 200, `the repeated callback ended with ${res && res.status()}`);
  await waitStatus(page, 'connected', 'after the repeated callback');
  check(assertCleanUrl(page) === id, 'the repeated callback led to another connection');
  // Give the worker time to see the duplicate record, then look again.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const s = await simStats();
    const c = s.codes[sha256(code)];
    check(c && c.token_requests === 1, `the duplicate reached the token endpoint (${c && c.token_requests} requests)`);
    check(s.grants.revoked === flow.revokedBefore, `a grant was revoked (${flow.revokedBefore} → ${s.grants.revoked})`);
    await sleep(500);
  }
  check(statusRequests.get(flow.page).length === polls,
    `the first page kept polling after "connected" (${statusRequests.get(flow.page).length - polls} more requests)`);
  await page.reload();
  await waitStatus(page, 'connected', 'after reloading the status page');
  const doc = await pageDoc(page);
  check(doc.status === 'connected', `API says ${doc.status} after the duplicate`);
  for (const p of [page, flow.page]) {
    const text = await p.evaluate(() => document.body.innerText);
    check(!/already/i.test(text), `the page says "already": ${JSON.stringify(text)}`);
  }
  await shot(page, 'reload.png');
  await shot(page, 'reload-phone.png', PHONE);
});

await scenario('(c) access denied at the provider → failed with a reconnect link', async () => {
  const ctx = await newContext(browser, PHONE);
  const page = await ctx.newPage();
  const callbacks = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin === INTAKE_ORIGIN && u.pathname === '/oauth/callback') callbacks.push(u);
  });
  // The simulator denies when its authorize URL carries sim_fault=deny.
  // Playwright does not route the targets of redirects, so rewrite the
  // intake's 302 instead (route.fetch shares the context's cookie jar, so
  // the browser-binding cookie is kept).
  let faulted = 0;
  await page.route(`${INTAKE_URL}/oauth/start?**`, async (route) => {
    const res = await route.fetch({ maxRedirects: 0 });
    const headers = res.headers();
    if (res.status() !== 302 || !headers.location) return route.fulfill({ response: res });
    const loc = new URL(headers.location);
    if (loc.origin === new URL(SIM_URL).origin && loc.pathname === '/oauth/authorize') {
      loc.searchParams.set('sim_fault', 'deny');
      faulted++;
    }
    return route.fulfill({ response: res, headers: { ...headers, location: loc.toString() } });
  });
  await page.goto(`${INTAKE_URL}/oauth/start?provider=sim`);
  check(faulted === 1, `the redirect to the simulator was rewritten ${faulted} times, want 1`);
  await waitStatus(page, 'failed', 'after denying at the simulator');
  assertCleanUrl(page);
  check(callbacks.length === 1 && callbacks[0].searchParams.get('error') === 'access_denied',
    `the callback was not an access_denied one: ${callbacks.map(String)}`);
  const doc = await pageDoc(page);
  check(doc.status === 'failed' && doc.reason === 'access_denied', `API says ${doc.status}/${doc.reason}`);
  check((await page.getAttribute('#status', 'data-reason')) === 'access_denied', 'data-reason is not access_denied');
  const msg = await page.innerText('#message');
  check(msg === doc.message && msg.length > 10, `#message "${msg}" is not the document's message "${doc.message}"`);
  const text = await page.evaluate(() => document.body.innerText);
  const desc = callbacks[0].searchParams.get('error_description');
  if (desc) check(!text.includes(desc), 'the page shows the provider\'s error_description (G3)');
  check(!/access_denied/.test(await page.innerText('.card')), 'the page shows the raw reason code');
  check(await page.isVisible('#reconnect'), '#reconnect is not visible');
  const href = new URL(await page.getAttribute('#reconnect', 'href'), INTAKE_URL);
  check(href.origin === INTAKE_ORIGIN && href.pathname === '/oauth/start' && href.search === '?provider=sim',
    `#reconnect points to ${href}`);
  await shot(page, 'denied.png');
  await shot(page, 'denied-desktop.png', DESKTOP);
  await ctx.close();
});

await scenario('(e) the embeddable module resolves with the final document', async () => {
  check(flow, 'needs (a)');
  const js = await fetch(`${INTAKE_URL}/static/oauthq-status.js`);
  check(js.status === 200, `GET /static/oauthq-status.js answered ${js.status}`);
  check(/^text\/javascript/.test(js.headers.get('content-type') || ''), `module Content-Type ${js.headers.get('content-type')}`);
  const body = await js.text();
  check(body === readFileSync(path.join(repo, 'producer/static/oauthq-status.js'), 'utf8'), 'served module differs from producer/static/oauthq-status.js');
  const page = await flow.ctx.newPage();
  await page.goto(`${INTAKE_URL}/connect/${flow.id}`);
  await waitStatus(page, 'connected', 'status page');
  // A dynamic import under the page's CSP (script-src 'self').
  const got = await page.evaluate(async (id) => {
    const m = await import('/static/oauthq-status.js');
    const seen = [];
    const doc = await m.watchConnection(`/v1/connections/${id}`, { onUpdate: (d) => seen.push(d.status), maxWaitS: 2 });
    let notFound = null;
    try {
      await m.watchConnection('/v1/connections/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    } catch (e) {
      notFound = { name: e.name, status: e.status };
    }
    const ctl = new AbortController();
    const aborted = m.watchConnection(`/v1/connections/${id}x`, { signal: ctl.signal }).then(() => 'resolved', (e) => e.name);
    ctl.abort();
    return { status: doc.status, seen, notFound, aborted: await aborted };
  }, flow.id);
  check(got.status === 'connected' && got.seen.join() === 'connected', `watchConnection gave ${JSON.stringify(got)}`);
  check(got.notFound && got.notFound.name === 'ConnectionStatusError' && got.notFound.status === 404, `a forged id gave ${JSON.stringify(got.notFound)}`);
  check(got.aborted === 'AbortError', `abort gave ${got.aborted}`);
  await page.close();
});

await scenario('(f) a forged connection id is not found', async () => {
  const ctx = await newContext(browser, DESKTOP);
  const page = await ctx.newPage();
  const forged = 'AQAAAABnAAAA' + 'B'.repeat(43);
  const res = await page.goto(`${INTAKE_URL}/connect/${forged}`);
  if (res.status() === 200) {
    await waitStatus(page, 'not_found', 'forged id on the status page');
  } else {
    check(res.status() === 404, `GET /connect/<forged> answered ${res.status()}`);
  }
  const api = await page.request.get(`${INTAKE_URL}/v1/connections/${forged}`, { headers: { Accept: 'application/json' } });
  check(api.status() === 404, `GET /v1/connections/<forged> answered ${api.status()}`);
  const body = await api.json();
  check(typeof body.error === 'string' && typeof body.message === 'string', `404 body ${JSON.stringify(body)}`);
  await ctx.close();
});

await scenario('(g) pending page long-polls and turns connected when the callback lands', async () => {
  const create = await fetch(`${INTAKE_URL}/v1/connections`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', Authorization: `Bearer ${API_KEY}` },
    body: JSON.stringify({ provider: 'sim', end_user: { id: 'browser_user_1' } }),
  });
  check(create.status === 201, `POST /v1/connections answered ${create.status}`);
  const flowDoc = await create.json();
  check(flowDoc.id && flowDoc.start_url, `POST /v1/connections gave ${JSON.stringify(Object.keys(flowDoc))}`);
  const ctx = await newContext(browser, PHONE);
  const page = await ctx.newPage();
  await page.goto(`${INTAKE_URL}/connect/${flowDoc.id}`);
  await waitStatus(page, 'pending', 'before any callback');
  const doc0 = await pageDoc(page);
  check(doc0.status === 'pending' && doc0.phase === 'awaiting_callback', `API says ${doc0.status}/${doc0.phase} before any callback`);
  const shownMsg = await page.innerText('#message');
  check(shownMsg.length > 10, `pending page shows no phase message ("${shownMsg}")`);
  await sleep(2500); // the page is now in a long-poll
  const reqs = statusRequests.get(page);
  check(reqs.length <= 3, `${reqs.length} status requests in 2.5 s while nothing changed (tight loop?)`);
  check(reqs.some((r) => r.wait === '25' && r.inm), 'the page never long-polled with ?wait=25 and If-None-Match');
  await shot(page, 'pending.png');
  await shot(page, 'pending-desktop.png', DESKTOP);
  // Another browser (a plain HTTP client) opens the session's start_url,
  // approves at the provider and returns to the callback with the cookies
  // the start set (browser binding and the session's metadata).
  const start = await fetch(flowDoc.start_url, { redirect: 'manual' });
  check(start.status === 302, `start_url answered ${start.status}`);
  const cookies = start.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const auth = await fetch(start.headers.get('location'), { redirect: 'manual' });
  check(auth.status === 302 || auth.status === 303, `simulator authorize answered ${auth.status}`);
  const cbUrl = auth.headers.get('location');
  codesSeen.add(new URL(cbUrl).searchParams.get('code'));
  const cb = await fetch(cbUrl, { redirect: 'manual', headers: { Accept: 'application/json', Cookie: cookies } });
  check(cb.status === 202 || cb.status === 303, `callback answered ${cb.status}`);
  const before = reqs.length;
  const t0 = Date.now();
  await waitStatus(page, 'connected', 'after the callback landed');
  const took = Date.now() - t0;
  check(reqs.length - before <= 2, `${reqs.length - before} more status requests to see the change (want it from the open long-poll)`);
  check(await page.isVisible('#account'), '#account is not visible');
  console.log(`      pending → connected shown ${(took / 1000).toFixed(1)}s after the callback`);
  const n = reqs.length;
  await sleep(1500);
  check(reqs.length === n, 'the page kept polling after "connected"');
  await ctx.close();
});

await scenario('(d) status pages: same origin only, no CSP violation, valid documents', async () => {
  if (flow) await flow.ctx.close(); // flushes the last responses
  await Promise.all(pending);
  check(invariantProblems.size === 0, [...invariantProblems].join('\n      '));
  check(connectLoads >= 4, `only ${connectLoads} /connect/ page loads were observed`);
  check(docsChecked.n >= 4, `only ${docsChecked.n} status documents were checked`);
  const by = Object.entries(docsChecked.byStatus).map(([k, v]) => `${k} ${v}`).join(', ');
  console.log(`      ${connectLoads} status page loads, ${docsChecked.n} status documents validated (${by})`);
});

await browser.close();
const failed = results.filter((r) => !r.ok).length;
console.log(`screenshots: ${SHOTS}`);
console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
