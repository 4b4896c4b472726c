/**
 * oauthq-status.js — follow an oauthq connection from your own frontend
 * until it reaches a final status. No dependencies; an ES module served by
 * the intake at /static/oauthq-status.js (or copy it into your bundle).
 *
 * Usage:
 *
 *   import { watchConnection } from '/static/oauthq-status.js';
 *
 *   const stop = new AbortController();
 *   const doc = await watchConnection(`/v1/connections/${id}`, {
 *     onUpdate: (d) => render(d),          // every new version, pending included
 *     onFinal: (d) => console.log(d.status), // once: connected|failed|expired|disconnected
 *     signal: stop.signal,                  // stop.abort() ends the watch
 *     maxWaitS: 25,                         // long-poll length (server caps it at 30)
 *   });
 *
 * How it works: one plain GET for the current document, then long-polls
 * `GET statusUrl?wait=N` with `If-None-Match: "<version>"`. The server
 * answers 200 with a newer document as soon as the version changes, or 304
 * after N seconds; either way the next poll starts at once. Network errors,
 * 408, 429 and 5xx are retried with exponential backoff and full jitter
 * (0.5 s doubling to 30 s), never sooner than the server's Retry-After;
 * after a network error, at once when the browser comes back online or the
 * tab is shown again.
 * Versions only move forward: an older document (e.g. from an intake whose
 * read model lags) is ignored. The watch stops on a final status and
 * resolves with that document.
 *
 * The promise rejects with:
 *  - ConnectionStatusError (err.status = HTTP status, err.body = the JSON
 *    error {"error","message"} when there is one) on an answer that will not
 *    change by retrying: 404 for an unknown connection id, other 4xx;
 *  - the signal's reason (an AbortError by default) when `signal` aborts;
 *  - whatever onUpdate/onFinal throw.
 *
 * Documents never hold tokens or codes, and `message` is a fixed sentence
 * safe to show end users; still, render it with textContent, not innerHTML.
 * statusUrl must be same-origin with your page (or reachable through your
 * own proxy): the intake sends no CORS headers.
 */

/** Statuses after which a connection's document no longer changes by itself. */
export const FINAL_STATUSES = Object.freeze(['connected', 'failed', 'expired', 'disconnected']);

/** A status API answer that retrying will not change (404, other 4xx). */
export class ConnectionStatusError extends Error {
  constructor(status, body) {
    super(`oauthq status API answered ${status}`);
    this.name = 'ConnectionStatusError';
    this.status = status;
    this.body = body ?? null;
  }
}

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
const RETRY_AFTER_CAP_MS = 120000;

/* Full jitter in [ceil/2, ceil): spreads a crowd of clients after an outage. */
function backoffMs(failures) {
  const ceil = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(failures, 16));
  return ceil / 2 + (Math.random() * ceil) / 2;
}

/* Retry-After in delta-seconds or HTTP-date form, in ms (0 when absent). */
function retryAfterMs(res) {
  const v = res.headers.get('Retry-After');
  if (!v) return 0;
  const s = Number(v);
  const ms = Number.isFinite(s) ? s * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) ? Math.min(RETRY_AFTER_CAP_MS, Math.max(0, ms)) : 0;
}

function abortReason(signal) {
  return signal.reason ?? new DOMException('The watch was aborted.', 'AbortError');
}

/* Sleeps ms; with `wakeable`, less when the browser comes back online or
 * the page is shown again (a phone waking up should not wait out a 30 s
 * backoff after network errors). */
function sleep(ms, signal, wakeable = false) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const win = wakeable && typeof window !== 'undefined' ? window : null;
    const doc = wakeable && typeof document !== 'undefined' ? document : null;
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      win?.removeEventListener('online', done);
      doc?.removeEventListener('visibilitychange', onVisible);
    };
    const done = () => {
      cleanup();
      resolve();
    };
    const onAbort = () => {
      cleanup();
      reject(abortReason(signal));
    };
    const onVisible = () => {
      if (doc.visibilityState === 'visible') done();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    win?.addEventListener('online', done);
    doc?.addEventListener('visibilitychange', onVisible);
  });
}

/* One request, bounded by timeoutMs (body included); aborts with signal. */
async function fetchOnce(url, etag, timeoutMs, signal) {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const headers = { Accept: 'application/json' };
    if (etag) headers['If-None-Match'] = etag;
    const res = await fetch(url, {
      headers,
      cache: 'no-store',
      credentials: 'same-origin',
      signal: ctl.signal,
    });
    const body = res.status === 304 ? null : await res.json().catch(() => null);
    return { res, body };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

const isDoc = (b) =>
  b !== null && typeof b === 'object' && typeof b.status === 'string' && Number.isInteger(b.version);

/**
 * Watch the status document at statusUrl until it is final.
 * @param {string|URL} statusUrl e.g. `/v1/connections/${id}`
 * @param {{onUpdate?: (doc: object) => void, onFinal?: (doc: object) => void,
 *          signal?: AbortSignal, maxWaitS?: number}} [options]
 * @returns {Promise<object>} the final status document
 */
export async function watchConnection(statusUrl, { onUpdate, onFinal, signal, maxWaitS = 25 } = {}) {
  const wait = Math.max(0, Math.min(30, Math.floor(Number(maxWaitS) || 0)));
  let etag = null;
  let last = null;
  let failures = 0;
  for (;;) {
    if (signal?.aborted) throw abortReason(signal);
    const url = new URL(statusUrl, globalThis.location?.href);
    if (etag !== null && wait > 0) url.searchParams.set('wait', String(wait));
    const started = Date.now();
    let r;
    try {
      r = await fetchOnce(url, etag, (wait + 15) * 1000, signal);
    } catch {
      if (signal?.aborted) throw abortReason(signal);
      await sleep(backoffMs(failures++), signal, true);
      continue;
    }
    const { res, body } = r;
    if (res.status === 200 && isDoc(body)) {
      failures = 0;
      if (!last || body.version > last.version) {
        last = body;
        etag = res.headers.get('ETag') || `"${body.version}"`;
        onUpdate?.(body);
        if (FINAL_STATUSES.includes(body.status)) {
          onFinal?.(body);
          return body;
        }
        continue;
      }
    } else if (res.status === 304) {
      failures = 0;
    } else if (res.status === 200 || res.status === 408 || res.status === 429 || res.status >= 500) {
      await sleep(Math.max(retryAfterMs(res), backoffMs(failures++)), signal);
      continue;
    } else {
      throw new ConnectionStatusError(res.status, body);
    }
    /* Unchanged (304, or a document not newer than ours): poll again, but
     * never in a tight loop if the server answered at once. */
    const minGap = wait > 0 ? 1000 : 2000;
    const elapsed = Date.now() - started;
    if (elapsed < minGap) await sleep(minGap - elapsed, signal);
  }
}
