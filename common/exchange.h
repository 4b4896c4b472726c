/*
 * exchange — the token-endpoint client (SPEC §3 G1, §5, §6): the worker's
 * exchange step and `oauthqctl provider check` use it, so it lives in
 * common/ (ctl never depends on the worker).
 *
 * What: sends authorization_code grants (RFC 6749 §4.1.3), and refresh_token
 * grants (§6) for SPEC §5b, to a provider's
 * token_url with libcurl multi, many at once, and classifies every outcome
 * into one exchange_class that tells the caller whether the code may have
 * been consumed. The classifiers (exchange_classify_http/_transport) are
 * pure functions, tested on their own and fuzzed.
 *
 * G1 rules this module enforces on the wire: a request is sent at most once
 * per exchange_add (no redirects followed, a fresh connection per request so
 * libcurl never silently re-sends a POST on a dead reused connection, HTTP/1.1,
 * no "Expect: 100-continue"), and any doubt about whether the provider saw the
 * request yields EXCH_UNKNOWN, never EXCH_RETRY_SAFE.
 *
 * Ownership: exchange_t is owned by its creator and freed with
 * exchange_free. An exchange_req and every string it points to are owned by
 * the caller and must stay valid until exchange_run returns; the module
 * writes only req->result. Request bodies and response buffers (codes,
 * secrets, tokens) are wiped before they are freed; result tokens are the
 * caller's to wipe (crypto_wipe) after use.
 *
 * Threads: one exchange_t is used by one thread at a time (the worker's
 * loop). Different exchange_t may run in different threads. After
 * exchange_spawn a driver thread of its own owns the curl multi handle:
 * exchange_start hands a request over (the driver adds it at once) and
 * exchange_perform collects the finished ones on the caller's thread, so
 * the done callback always runs on the caller's thread; a request's
 * result is written by the driver before it is handed back (under the
 * module's mutex). Why: the worker blocks in its Kafka transactions, and
 * without a driver no byte moves meanwhile — every step of a request
 * (connect, send, read) waited for the next loop turn.
 * exchange_new calls curl_global_init (reference-counted by libcurl; the
 * process should also call it once at start-up, before other threads).
 *
 * Logging: one "token_exchange" event per finished request with the
 * provider name, class, status, operator-safe detail and the code's id
 * (code_sha256 = log_code_id, as the intake and the worker log it); never
 * a code, token, secret or error_description.
 */
#ifndef OAUTHQ_COMMON_EXCHANGE_H
#define OAUTHQ_COMMON_EXCHANGE_H

#include <stddef.h>

#include <stdint.h>

#include "common/err.h"
#include "common/providers.h"

#define EXCHANGE_BODY_MAX        (64 * 1024) /* largest token response accepted */
#define EXCHANGE_RETRY_AFTER_MAX 3600        /* Retry-After cap, seconds */
#define EXCHANGE_CODE_MAX        2048        /* longest code accepted by exchange_add */
#define EXCHANGE_TOKEN_MAX       4095 /* longest refresh token sent (the result buffers hold 4096) */
#define EXCHANGE_FIELD_MAX       2048 /* longest secret / verifier / redirect_uri */
#define EXCHANGE_LANES_MAX       64   /* per-provider in-flight limits (exchange_set_lanes) */

typedef enum {
    EXCH_SUCCESS,       /* 2xx with an access_token: definitive success */
    EXCH_REJECTED,      /* invalid_grant: the code is spent/expired/unknown: definitive */
    EXCH_MISCONFIGURED, /* invalid_client (any status), bad token_url: code likely unused */
    EXCH_FAILED,        /* other definitive errors (RFC 6749 §5.2), unparseable 4xx, 3xx */
    EXCH_RETRY_SAFE,    /* the code was certainly not consumed (not sent, 429) */
    EXCH_UNKNOWN,       /* outcome unknown: sent then timeout/cut, 5xx, 2xx without tokens */
} exchange_class;

typedef struct {
    exchange_class cls;
    long http_status;  /* 0 when no HTTP answer */
    int retry_after_s; /* from Retry-After (seconds form; cap 3600), else 0; 429: ≥ 1 */
    char error[64];    /* RFC 6749 error code when one was parsed ([A-Za-z0-9_.-]), else "" */
    int expired_hint;  /* invalid_grant whose description says the code expired */
    char access_token[4096], refresh_token[4096]; /* secrets: never log; only on SUCCESS */
    char token_type[32], scope[512];
    long expires_in;      /* -1 when absent */
    char account_id[128]; /* Stripe stripe_user_id; generic oauth2: "" */
    int livemode;         /* 1/0, -1 when absent */
    char detail[160];     /* operator-safe summary; never a code, token, secret or description */
    int not_sent;         /* RETRY_SAFE because send_by_mono_ms passed before the request left */
} exchange_result;

typedef struct {
    /* inputs, owned by the caller and valid until the result is delivered */
    const provider_t *provider;
    const char *client_secret;
    const char *code;          /* authorization_code grant; NULL when refresh_token is set */
    const char *refresh_token; /* non-empty: a refresh_token grant (RFC 6749 §6) instead */
    const char *code_verifier; /* NULL or "" when no PKCE */
    const char *redirect_uri;  /* sent for profile oauth2 only (RFC 6749 §4.1.3) */
    /* 0, or a monotonic deadline (the claim's lease): checked by curl's
     * pre-request callback once the connection is up, right before the
     * request's bytes are written. Past it the transfer is aborted unsent
     * (RETRY_SAFE, not_sent = 1). The worker's own check before the handoff
     * is not enough: a process stopped between the handoff and curl's first
     * perform would send a stale claim's code after another owner took over. */
    int64_t send_by_mono_ms;
    int lane;               /* driver mode with lanes: its lane (provider index); else unused */
    void *ud;               /* caller's tag */
    exchange_result result; /* filled when done */
} exchange_req;

typedef struct exchange exchange_t;

/* New client: ≤ max_concurrent transfers at once (others queue), per-request timeouts in ms;
 * NULL + ERRC_FATAL on bad arguments or libcurl failure. */
exchange_t *exchange_new(int max_concurrent, int connect_timeout_ms, int total_timeout_ms,
                         err_t *e);

/* Start the driver thread (see Threads above); 0, or -1 + ERRC_FATAL. exchange_run is then
 * unavailable (returns 0). In driver mode up to 2 × max_concurrent requests may be handed over:
 * at most max_concurrent on the wire (and lane_limit[lane] per lane), the rest wait in hand-over
 * order and start the moment a slot frees — on the driver's thread, without the caller — unless
 * their send_by_mono_ms passed first (then: not sent). */
int exchange_spawn(exchange_t *x, err_t *e);
/* Per-lane in-flight limits for driver mode (lane i: limits[i], at least 1); before
 * exchange_spawn. 0, or -1 + ERRC_FATAL. */
int exchange_set_lanes(exchange_t *x, int n, const int *limits, err_t *e);
/* Driver mode: every request still waiting for a slot ends unsent (reported by
 * exchange_perform as RETRY_SAFE / not_sent); those on the wire run on. */
void exchange_cancel_waiting(exchange_t *x);
/* Driver mode: requests handed over and waiting for a slot (0 otherwise). */
int exchange_waiting(const exchange_t *x);
/* Queue req (started by exchange_run); -1 + ERRC_PERMANENT when a field is missing/too long. */
int exchange_add(exchange_t *x, exchange_req *req, err_t *e);

/* Validate req's fields (what exchange_add/_start check); -1 + ERRC_PERMANENT on a defect. */
int exchange_check(const exchange_req *req, err_t *e);

/* Hand req to curl now (the pipeline's entry): 0 started, 1 finished at once without sending
 * (req->result set, e.g. out of memory), -1 + ERRC_PERMANENT on a bad field or ERRC_RETRIABLE
 * when max_concurrent transfers are active. req stays the caller's and must stay valid until
 * exchange_perform reports it done. */
int exchange_start(exchange_t *x, exchange_req *req, err_t *e);

/* Called by exchange_perform for each finished request (req->result filled). */
typedef void (*exchange_done_fn)(exchange_req *req, void *ud);

/* Drive the started transfers, waiting at most wait_ms for socket activity, and report each
 * finished one through done (a request past its timeout plus a margin is ended as a timeout).
 * Never blocks longer than wait_ms plus the time to process what is ready. Returns the number
 * reported. */
int exchange_perform(exchange_t *x, int wait_ms, exchange_done_fn done, void *ud);

/* Transfers started and not yet reported. */
int exchange_active(const exchange_t *x);

/* Run every queued request to completion (each bounded by its timeouts plus a margin), filling
 * each req->result; returns how many completed. The queue is empty afterwards. */
int exchange_run(exchange_t *x);

/* Free the client and any still-queued requests' buffers (their results stay unset); NULL ok. */
void exchange_free(exchange_t *x);

/* PURE: classify an HTTP answer (status, body[len], Retry-After value or NULL) into *out. */
void exchange_classify_http(const provider_t *pv, long status, const char *body, size_t len,
                            const char *retry_after, exchange_result *out);

/* PURE: classify a transport failure (CURLcode, whether any request bytes may have left). */
void exchange_classify_transport(int curl_code, int request_sent, exchange_result *out);

/* "success", "rejected", "misconfigured", "failed", "retry_safe", "unknown" ("?" otherwise). */
const char *exchange_class_name(exchange_class c);

#endif
