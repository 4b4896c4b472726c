/*
 * sim_core — the provider simulator's state and decisions (SPEC §7), no I/O.
 *
 * Behaves like Stripe Connect's OAuth endpoints, strictly. The HTTP layer
 * (sim_http) hands every request to sim_core_handle() with the raw
 * request-target, a few headers and the body; sim_core answers with a
 * status, headers, a JSON body and an action (answer, cut the connection,
 * hang). Time is passed in (monotonic milliseconds) so tests control expiry.
 * All functions are thread-safe: one mutex guards the state.
 *
 * Routes:
 *   GET  /oauth/authorize    auto-approve → 302 redirect_uri?code=..&state=..
 *   POST /oauth/token        authorization_code and refresh_token grants
 *   POST /oauth/deauthorize  disconnect an account (Stripe shape)
 *   GET  /_sim/stats         counters (SPEC §7 exact shape)
 *   anything else            404 JSON; known path with wrong method → 405.
 *
 * Choices where Stripe/RFCs leave room (this list is their documentation;
 * each is tested in tests/unit/test_sim_core.c):
 *   - /oauth/authorize errors (unknown client_id, bad response_type,
 *     unregistered redirect_uri, bad PKCE or sim_fault params) are answered
 *     400 JSON and never redirected; only deny/sim_deny redirects with
 *     error=access_denied.
 *   - redirect_uri omitted at authorize: the first --redirect-uri is used (400
 *     when none is registered). The token request may omit redirect_uri (Stripe
 *     does not take it); when present it must equal the authorize one.
 *   - PKCE: only S256; a code_verifier mismatch or missing verifier is 400
 *     invalid_grant and does NOT consume the code; a code_verifier sent for a
 *     code issued without a challenge is also invalid_grant (RFC 9700 §2.1.1).
 *     A redirect_uri mismatch is invalid_grant and does not consume the code.
 *   - Client authentication: client_secret in the body (client_id optional,
 *     as Stripe accepts) or HTTP Basic, either RFC 6749 §2.3.1
 *     (urlencoded id:secret) or Stripe's (secret as user, empty password).
 *     Both Basic and a body secret → 400 invalid_request.
 *   - Reuse of a consumed code answers the Stripe reuse error and revokes the
 *     grant issued for it (once; a deauthorized grant stays deauthorized).
 *     Reuse is detected even after the code expired.
 *   - A sim_fault fires on the first token request that names its code,
 *     whatever else that request carries: 429, 500_before and hang answer
 *     before any validation (code unused); 500_after and cut_after run the
 *     normal decision (consuming the code and issuing the grant when it
 *     succeeds) and then replace the answer. Later requests are normal.
 *   - Latency (fault latency:MS and --latency-ms) delays the answer: the
 *     request is decided on arrival, the answer is sent MS later.
 *   - last_status of a request that got no HTTP answer (cut_after, hang) is 0;
 *     a code named in token requests but never issued is listed in stats too.
 *     token_requests counts only token requests that carry a non-empty code
 *     in a well-formed form body.
 *   - Deauthorize of an unknown or no longer active account: 401
 *     invalid_client "This application is not connected to stripe account
 *     acct_…, or that account does not exist." (what Stripe answers).
 *   - At most max_codes code records (issued or merely named in a token
 *     request) are kept; the oldest is evicted first. Refresh-token records
 *     count against the same bound; a refresh token whose grant record was
 *     evicted is answered like a revoked one.
 *
 * Refresh (grant_type=refresh_token, RFC 6749 §6, RFC 9700 §4.14.2):
 *   - Every issued refresh token belongs to the grant (family) of the code it
 *     came from. With rotation (the default) each successful refresh answers
 *     a new access and refresh token and rotates the presented one out; a
 *     second use of a rotated-out refresh token is reuse: the whole family is
 *     revoked (grants.revoked counts it; every refresh token of the grant,
 *     the newest included, answers invalid_grant from then on). Without
 *     rotation (no_refresh_rotation, Stripe-like) the same refresh token is
 *     answered again and stays valid.
 *   - A revoked or deauthorized grant, a code reuse and an eviction of the
 *     grant record all end the family's refresh tokens (invalid_grant).
 *   - The optional scope parameter is ignored (the grant's scope is kept).
 *   - access_ttl_ms > 0 adds "expires_in" (seconds) to every token answer,
 *     code and refresh alike; access tokens are never checked by the
 *     simulator (it has no resource API), so expiry is what it announces.
 *   - sim_refresh_fault=F at /oauth/authorize (same values as sim_fault but
 *     deny) is carried by the first refresh token minted for that code and
 *     fires on its first refresh, with the same semantics as on codes
 *     (500_after and cut_after rotate the token out, then lose the answer).
 *   - Stats: "refresh_tokens": {"<sha256 of the refresh token>":
 *     {"requests": n}} lists every refresh token named in a refresh request
 *     (SPEC §5b); token_requests and "codes" count only the code grant.
 */
#ifndef OAUTHQ_TESTS_SIM_CORE_H
#define OAUTHQ_TESTS_SIM_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SIM_CORE_DEFAULT_CODE_TTL_MS 300000
#define SIM_CORE_DEFAULT_MAX_CODES   1000000
#define SIM_CORE_MAX_LATENCY_MS      600000
#define SIM_CORE_MAX_ACCESS_TTL_MS   86400000
#define SIM_CORE_HANG_MAX_MS         120000
#define SIM_CORE_ID_MAX              256 /* client id / secret / Basic part bound */
#define SIM_CORE_URI_MAX             2048

typedef struct sim_core sim_core_t;

typedef struct {
    const char *client_id;            /* required */
    const char *client_secret;        /* required */
    const char *const *redirect_uris; /* allowed redirect URIs, may be NULL */
    size_t n_redirect_uris;           /* 0: any http(s) URI is accepted */
    int64_t code_ttl_ms;              /* 0: SIM_CORE_DEFAULT_CODE_TTL_MS */
    long latency_ms;                  /* added to every token answer */
    size_t max_codes;                 /* 0: SIM_CORE_DEFAULT_MAX_CODES */
    int64_t access_ttl_ms;            /* > 0: announce expires_in; 0: none */
    int no_refresh_rotation;          /* 1: refresh tokens are not rotated */
} sim_core_opts;

typedef enum {
    SIM_FAULT_NONE = 0,
    SIM_FAULT_DENY,
    SIM_FAULT_LATENCY,
    SIM_FAULT_429,
    SIM_FAULT_500_BEFORE,
    SIM_FAULT_500_AFTER,
    SIM_FAULT_CUT_AFTER,
    SIM_FAULT_HANG,
} sim_core_fault;

typedef enum {
    SIM_CORE_ANSWER = 0, /* send the response */
    SIM_CORE_CUT,        /* close the connection without any answer */
    SIM_CORE_HANG,       /* answer nothing until the client gives up */
} sim_core_action;

typedef struct {
    const char *method;        /* "GET", "POST", ... */
    const char *uri;           /* raw request-target: /path[?query], undecoded */
    const char *authorization; /* Authorization header value or NULL */
    const char *content_type;  /* Content-Type header value or NULL */
    const char *body;          /* request body (not NUL-terminated), may be NULL */
    size_t body_len;
} sim_core_req;

typedef struct {
    sim_core_action action;
    int status;               /* HTTP status (meaningful for SIM_CORE_ANSWER) */
    char *body;               /* malloc'd, NUL-terminated, NULL = empty body */
    const char *content_type; /* static string or NULL */
    char *location;           /* malloc'd Location value or NULL */
    int retry_after_s;        /* > 0: send Retry-After */
    int no_store;             /* send Cache-Control: no-store, Pragma: no-cache */
    int www_authenticate;     /* send WWW-Authenticate: Basic (401 after Basic) */
    const char *allow;        /* 405: the Allow value (static) */
    long delay_ms;            /* wait this long before answering or cutting */
    char code_sha256[65];     /* hex sha256 of the code (or refresh token), "" if none */
    const char *event;        /* static short outcome name for logs */
} sim_core_resp;

/* New simulator state from opts (strings are copied); NULL + e on error. */
sim_core_t *sim_core_new(const sim_core_opts *opts, err_t *e);

/* Free the state; NULL is a no-op. */
void sim_core_free(sim_core_t *c);

/* Decide the answer to one request at time now_ms; -1 + e only on internal
 * failure (out of memory, RNG), then answer 500. out must be freed. */
int sim_core_handle(sim_core_t *c, const sim_core_req *rq, int64_t now_ms, sim_core_resp *out,
                    err_t *e);

/* Release what a response owns and zero it; NULL is a no-op. */
void sim_core_resp_free(sim_core_resp *r);

/* Parse a sim_fault value ("deny", "latency:MS", "429", "500_before",
 * "500_after", "cut_after", "hang"); 0 on success, -1 if malformed. */
int sim_core_parse_fault(const char *s, sim_core_fault *fault, long *ms);

/* Decode an "Authorization: Basic …" value into user and password (each
 * form-urldecoded per RFC 6749 §2.3.1, bounded by its cap); 0 or -1. */
int sim_core_parse_basic(const char *header, char *user, size_t user_cap, char *pass,
                         size_t pass_cap);

/* Lowercase hex sha256 of s into out[65]; 0 or -1. */
int sim_core_sha256_hex(const char *s, size_t len, char out[65]);

#endif
