/*
 * deauth — revoke a connection at its provider (SPEC §4 DELETE
 * /v1/connections/{id}, §5 connected → disconnected, §7).
 *
 * What: one synchronous, time-bounded POST to the provider profile's
 * deauthorize_url, classified into one deauth_class that tells the caller
 * whether the connection may be marked disconnected (DONE), must be tried
 * again later (RETRY), needs an operator (MISCONFIGURED) or was refused for
 * good (FAILED). The classifier (deauth_classify_http) is a pure function,
 * tested on its own and fuzzable.
 *
 * Wire forms:
 *   stripe, sim  POST deauthorize_url, form client_id=…&stripe_user_id=<account>,
 *                client secret as the HTTP Basic user with an empty password
 *                (Stripe's documented `-u sk_…:`; the simulator accepts it).
 *   oauth2       RFC 7009 revocation: POST deauthorize_url (the revocation
 *                endpoint), form token=<refresh token, else access token>&
 *                token_type_hint=refresh_token|access_token, client auth per
 *                token_auth (client_secret_post or RFC 6749 §2.3.1 Basic).
 * Revocation is idempotent, so unlike exchange there is no "unknown" outcome:
 * every doubt (timeout, cut, 5xx, 429) is RETRY. The request is a provhttp
 * one, with its wire rules: one fresh HTTP/1.1 connection per call, no
 * redirects followed, no "Expect: 100-continue", response bounded by
 * DEAUTH_BODY_MAX.
 *
 * Ownership: all inputs are the caller's and only read; the module writes
 * *out and *e. Request bodies, headers and response bytes are wiped before
 * they are freed. The caller wipes its own secret and tokens.
 *
 * Threads: deauth_run is reentrant (its own easy handle per call; it calls
 * curl_global_init/cleanup, which libcurl ≥ 7.84 makes thread-safe). The
 * classifier is reentrant.
 *
 * Logging: one "provider_deauthorize" event per call with the provider name,
 * class and HTTP status only; never an account id, token, secret or
 * error_description. `detail` is operator-safe by the same rule.
 */
#ifndef OAUTHQ_WORKER_DEAUTH_H
#define OAUTHQ_WORKER_DEAUTH_H

#include <stddef.h>

#include "common/err.h"
#include "common/providers.h"

#define DEAUTH_BODY_MAX        (16 * 1024) /* largest answer read; longer ones are cut */
#define DEAUTH_RETRY_AFTER_MAX 3600        /* Retry-After cap, seconds */
#define DEAUTH_FIELD_MAX       4096        /* longest secret / token / account id accepted */
#define DEAUTH_TIMEOUT_MAX_MS  600000

typedef enum {
    DEAUTH_DONE,          /* confirmed, or the provider says it is already not connected */
    DEAUTH_RETRY,         /* transport failure, timeout, 408, 429, 5xx: try again later */
    DEAUTH_MISCONFIGURED, /* our client rejected, bad/missing deauthorize_url: operator needed */
    DEAUTH_FAILED,        /* other definitive refusal */
} deauth_class;

typedef struct {
    deauth_class cls;
    long http_status;  /* 0 when no HTTP answer */
    int retry_after_s; /* Retry-After (seconds form, cap 3600), else 0; 429: ≥ 1 */
    char detail[160];  /* operator-safe: never tokens, secrets, account ids or provider text */
} deauth_result;

/* Revoke at the provider within timeout_ms, filling *out; 0 when *out holds a class, -1 + e
 * (ERRC_PERMANENT: missing/oversized argument; ERRC_FATAL: out of memory) with out FAILED. */
int deauth_run(const provider_t *pv, const char *client_secret, const char *account_id,
               const char *access_token, const char *refresh_token, int timeout_ms,
               deauth_result *out, err_t *e);

/* PURE: classify an HTTP answer (status, body[len], Retry-After value or NULL) into *out. */
void deauth_classify_http(const provider_t *pv, long status, const char *body, size_t len,
                          const char *retry_after, deauth_result *out);

/* "done", "retry", "misconfigured", "failed" ("?" otherwise). */
const char *deauth_class_name(deauth_class c);

#endif
