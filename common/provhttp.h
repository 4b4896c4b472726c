/*
 * provhttp — the HTTP client for provider endpoints (token_url,
 * deauthorize_url): one form-encoded POST per handle, with the wire rules
 * every provider call follows (SPEC §3 G1, G5).
 *
 * Wire rules (set by provhttp_prepare, not by callers): HTTP/1.1 on a fresh
 * connection that is never reused (libcurl silently re-sends a request when a
 * reused connection dies before any answer byte: for a token POST that is a
 * second exchange of the code), no redirects followed, no "Expect:
 * 100-continue", http and https only, a response body bounded by the
 * caller's limit (larger answers are cut and reported as too large), connect
 * and total timeouts, no signals, "Accept: application/json".
 *
 * Who uses it: common/exchange (libcurl multi: provhttp_easy is added to the
 * caller's multi handle) and worker/deauth (provhttp_perform, blocking). The
 * callers keep their own classification of the outcome.
 *
 * Ownership: a provhttp_t owns the form body, the header list (maybe Basic
 * credentials), the response buffer and the easy handle; every one of them
 * is wiped before it is freed (codes, secrets and tokens pass through). The
 * url passed to provhttp_new is not copied and must outlive the handle.
 *
 * Threads: a provhttp_t is used by one thread at a time. The caller owns
 * curl_global_init.
 */
#ifndef OAUTHQ_COMMON_PROVHTTP_H
#define OAUTHQ_COMMON_PROVHTTP_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

typedef struct provhttp provhttp_t;

/* New POST to url accepting an answer of at most body_max bytes; NULL when out of memory. */
provhttp_t *provhttp_new(const char *url, size_t body_max);

/* Append name=value to the form body (value form-urlencoded, '&' between fields): 0 or -1. */
int provhttp_form(provhttp_t *p, const char *name, const char *value);

/* Add "Authorization: Basic" of user:pass, each form-urlencoded first (RFC 6749 §2.3.1); pass
 * may be "" (Stripe's secret-as-user form): 0 or -1 (out of memory). */
int provhttp_basic(provhttp_t *p, const char *user, const char *pass);

/* Create the easy handle with the wire rules, the timeouts (ms) and private as CURLOPT_PRIVATE:
 * 0, or -1 when libcurl refused an option or is out of memory (nothing was sent). */
int provhttp_prepare(provhttp_t *p, int connect_ms, int total_ms, void *private_ptr);

/* The prepared easy handle (for curl_multi_add_handle), NULL before provhttp_prepare. */
CURL *provhttp_easy(const provhttp_t *p);

/* Run the prepared transfer in this thread (blocking, bounded by the timeouts): a CURLcode. */
int provhttp_perform(provhttp_t *p);

/* The HTTP status of the answer, 0 when none (or not prepared). */
long provhttp_status(const provhttp_t *p);

/* The answer's body (NUL-terminated, at most body_max bytes) and its length in *len. */
const char *provhttp_body(const provhttp_t *p, size_t *len);

/* The last response's Retry-After value (raw, ≤ 31 bytes), or NULL when it had none. */
const char *provhttp_retry_after(const provhttp_t *p);

/* Was the answer larger than body_max (cut by us or refused by curl from its length)? */
int provhttp_too_large(const provhttp_t *p, int curl_code);

/* Wipe the response body now (it may hold tokens) and keep the handle. */
void provhttp_wipe_body(provhttp_t *p);

/* Wipe and free everything the handle owns (remove it from any multi first); NULL ok. */
void provhttp_free(provhttp_t *p);

/* PURE: the retry delay of an answer: its Retry-After (as provhttp_parse_retry_after) or 0, and
 * at least 1 for a 429. */
int provhttp_retry_after_s(long status, const char *retry_after, int cap);

/* PURE: body[len] parsed when it is a JSON object of at most max bytes with no NUL byte (cJSON
 * would silently cut a string at one), else NULL. Free with provhttp_json_free. */
cJSON *provhttp_json_object(const char *body, size_t len, size_t max);

/* Overwrite every string of the tree (tokens live there), then delete it; NULL ok. */
void provhttp_json_free(cJSON *j);

/* PURE: Retry-After in delta-seconds form (RFC 9110 §10.2.3) capped at cap, or -1 (absent,
 * HTTP-date or malformed). */
int provhttp_parse_retry_after(const char *v, int cap);

#endif
