/*
 * ident — unforgeable connection ids and OAuth state tokens (RFC 6749
 * §10.12, RFC 9700 §4.7), and the PKCE verifier derived from them.
 *
 * Connection id: base64url(version | created_at (8 bytes, BE seconds) |
 *   16 random bytes | 16-byte HMAC-SHA256 tag), 55 characters. Anyone can
 *   read its creation time; only holders of the state keyring can mint one,
 *   so the status API tells genuine ids (pending/expired) from forged ones
 *   (404) without any storage. Verified against every key in the keyring,
 *   so ids outlive a key rotation as long as the old key stays listed.
 * State token: "1.<kid>.<base64url(payload JSON)>.<base64url(HMAC)>", the
 *   payload naming the connection id, provider, expiry, the hash of the
 *   browser-binding cookie (absent for server-side flows) and return_to.
 *   Verification is constant-time and checks the MAC before parsing.
 * Connect session (SPEC §4a): "s1.<kid>.<base64url(payload JSON)>.<base64url(
 *   HMAC)>", minted by POST /v1/connections and opened by the browser at
 *   /oauth/start?session=: the connection id, provider, expiry, return_to
 *   and the platform's metadata (common/connmeta). Its MAC has its own
 *   domain, so a session is never accepted as a state or the reverse. The
 *   state of a session's flow carries the SHA-256 of the metadata, and the
 *   metadata rides in a cookie of the same browser until the callback, so
 *   the provider never sees it and no server-side store holds it.
 * PKCE (RFC 7636): verifier = base64url(HMAC(key[kid], "pkce"|conn id)). The
 *   intake derives it at /oauth/start (to send the S256 challenge) and again
 *   at the callback (to put it in the callback record for the worker), so no
 *   verifier is stored anywhere before the code exists.
 * All functions are pure given the keyring; any thread.
 */
#ifndef OAUTHQ_COMMON_IDENT_H
#define OAUTHQ_COMMON_IDENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/connmeta.h"
#include "common/err.h"
#include "common/keyring.h"

#define IDENT_CONN_ID_LEN   55
#define IDENT_CONN_ID_MAX   64 /* buffer size for an id */
#define IDENT_STATE_MAX     1024
#define IDENT_RETURN_TO_MAX 512
#define IDENT_PROVIDER_MAX  33
#define IDENT_PKCE_VERIFIER 44   /* 43 chars + NUL */
#define IDENT_SESSION_MAX   4000 /* fits /oauth/start?session= in the query bound */

typedef enum {
    IDENT_OK = 0,
    IDENT_MALFORMED,   /* not a token of ours at all */
    IDENT_UNKNOWN_KID, /* made with a key no longer (or never) in the keyring */
    IDENT_BAD_MAC,     /* tampered or forged */
    IDENT_EXPIRED,     /* genuine but past its expiry */
} ident_result;

typedef struct {
    char conn_id[IDENT_CONN_ID_MAX];
    char provider[IDENT_PROVIDER_MAX];
    int64_t expires_at;                  /* unix seconds */
    int has_binding;                     /* 1 for browser flows (/oauth/start) */
    uint8_t binding[32];                 /* SHA-256 of the binding cookie value */
    char return_to[IDENT_RETURN_TO_MAX]; /* "" when none */
    int has_meta;                        /* 1: a session's flow with metadata */
    uint8_t meta_hash[32];               /* SHA-256 of its connmeta JSON */
    char kid[KEYRING_KID_MAX];           /* set by verify: key that signed it */
} ident_state;

typedef struct {
    char conn_id[IDENT_CONN_ID_MAX];
    char provider[IDENT_PROVIDER_MAX];
    int64_t expires_at; /* unix seconds; the flow's state expires then too */
    char return_to[IDENT_RETURN_TO_MAX];
    connmeta meta;
} ident_session;

/* Mint a new connection id created at `now` with the active key. */
int ident_conn_new(const keyring_t *kr, int64_t now, char out[IDENT_CONN_ID_MAX], err_t *e);

/* Check a connection id's tag against every key; on IDENT_OK *created_at
 * is its creation time. Never IDENT_EXPIRED (callers apply their TTL). */
ident_result ident_conn_verify(const keyring_t *kr, const char *id, int64_t *created_at);

/* Encode and sign st (kid ignored: the active key signs) into out[cap]. */
int ident_state_issue(const keyring_t *kr, const ident_state *st, char *out, size_t cap, err_t *e);

/* Verify token (len bytes) and decode it into *st; expired when
 * now > expires_at. Constant-time MAC check before any parsing. */
ident_result ident_state_verify(const keyring_t *kr, const char *token, size_t len, int64_t now,
                                ident_state *st);

/* Encode and sign a connect session into out[cap] (active key). */
int ident_session_issue(const keyring_t *kr, const ident_session *s, char *out, size_t cap,
                        err_t *e);

/* Verify a session token and decode it; constant-time MAC check first;
 * IDENT_EXPIRED when now > expires_at. */
ident_result ident_session_verify(const keyring_t *kr, const char *token, size_t len, int64_t now,
                                  ident_session *s);

/* SHA-256 of a binding cookie value, as carried in the state. */
void ident_binding_hash(const char *cookie, size_t len, uint8_t out[32]);

/* PKCE verifier for conn_id under key kid (-1 when kid unknown). */
int ident_pkce_verifier(const keyring_t *kr, const char *kid, const char *conn_id,
                        char out[IDENT_PKCE_VERIFIER]);

/* Short stable name of a result ("ok", "malformed", ...). */
const char *ident_result_name(ident_result r);

#endif
