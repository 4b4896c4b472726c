/*
 * providers — strict loader of the providers JSON file (OAUTHQ_PROVIDERS_FILE,
 * SPEC §7 shape):
 *
 *   {"providers": [ {"name": "stripe", "profile": "stripe",
 *     "authorize_url": "https://…", "token_url": "https://…",
 *     "deauthorize_url": "https://…" | null, "client_id": "ca_…",
 *     "client_secret_file": "/run/secrets/stripe"   (or "client_secret_env"),
 *     "scope": "read_write", "pkce": false, "token_auth": "client_secret_post",
 *     "code_ttl_s": 300, "issuer": null | "https://…"} ]}
 *
 * Validation is strict: unknown or duplicate keys anywhere, wrong types,
 * out-of-range values, trailing garbage and NUL bytes are all ERRC_FATAL
 * errors whose message names the file, the entry (providers[i], plus the
 * provider name when it is known) and the key, never a secret value.
 *
 * Ownership: providers_load/providers_parse return a handle the caller owns
 * and releases with providers_free; provider_t pointers from providers_at /
 * providers_find point into it and live as long as the handle. The handle
 * holds no secrets: providers_client_secret reads the secret on demand into a
 * caller buffer (the caller wipes it).
 *
 * Threads: loading and freeing are single-threaded (start-up / shutdown);
 * once loaded the handle is immutable and every read-only accessor may be
 * called from any thread concurrently.
 */
#ifndef OAUTHQ_COMMON_PROVIDERS_H
#define OAUTHQ_COMMON_PROVIDERS_H

#include <stddef.h>

#include "common/err.h"

#define PROVIDERS_MAX         32
#define PROVIDERS_FILE_MAX    (1024 * 1024) /* bytes */
#define PROVIDER_CODE_TTL_MAX 3600

typedef enum {
    PROVIDER_PROFILE_STRIPE,
    PROVIDER_PROFILE_OAUTH2,
    PROVIDER_PROFILE_SIM
} provider_profile;

typedef enum { PROVIDER_AUTH_POST, PROVIDER_AUTH_BASIC } provider_token_auth;

typedef struct {
    char name[33]; /* [a-z0-9_-]{1,32}, unique in the file */
    provider_profile profile;
    char authorize_url[512];
    char token_url[512];
    char deauthorize_url[512]; /* "" when null/absent */
    char client_id[256];
    char client_secret_file[512]; /* exactly one of these two is non-empty */
    char client_secret_env[128];
    char scope[256]; /* "" when absent */
    int pkce;        /* 0/1, default 0 */
    provider_token_auth token_auth;
    int code_ttl_s;    /* 1..3600 */
    char issuer[512];  /* "" = null: no RFC 9207 iss check */
    int max_in_flight; /* 1..4096; 0 = absent (worker default: concurrency / providers) */
    /* Refresh (SPEC §5b). refresh_rotation: the provider rotates refresh
     * tokens, so a refresh whose outcome is unknown is never re-sent (the
     * second use would revoke the family): the connection becomes
     * reconnect_required. Default by profile: stripe 0, oauth2 and sim 1
     * (the safe side). refresh_ahead_s: the owning worker refreshes a
     * connected token this long before it expires (0 = only on demand). */
    int refresh_rotation;
    int refresh_ahead_s; /* 0..86400 */
} provider_t;

typedef struct providers providers_t;

/* Read (≤ PROVIDERS_FILE_MAX bytes) and parse the file at `path`; NULL + ERRC_FATAL on error. */
providers_t *providers_load(const char *path, err_t *e);

/* Parse `len` bytes of JSON; `origin` names the source in messages; NULL + ERRC_FATAL on error. */
providers_t *providers_parse(const char *json, size_t len, const char *origin, err_t *e);

/* Number of providers (1..PROVIDERS_MAX); 0 for NULL. */
size_t providers_count(const providers_t *p);

/* The i-th provider in file order, or NULL when i is out of range. */
const provider_t *providers_at(const providers_t *p, size_t i);

/* The provider named `name`, or NULL if unknown. */
const provider_t *providers_find(const providers_t *p, const char *name);

/* Read the client secret (file: one trailing newline trimmed; env: value) into out[cap], set
 * *len, register it with log_secret(); ERRC_FATAL naming the provider and file/env var, never
 * the value. `out` is wiped on failure; the caller wipes it after use. */
int providers_client_secret(const provider_t *pv, char *out, size_t cap, size_t *len, err_t *e);

/* "stripe", "oauth2" or "sim". */
const char *provider_profile_name(provider_profile p);

/* Release the handle (NULL is fine); pointers obtained from it become invalid. */
void providers_free(providers_t *p);

#endif
