/*
 * apikeys — the platform's API keys (SPEC §4a, G7).
 *
 * Key: "oq_<kid>_<secret>", kid [a-z0-9]{1,16}, secret [A-Za-z0-9_-]{16,128}
 * (apikeys_generate makes base64url of 32 random bytes). Presented as
 * "Authorization: Bearer <key>" (RFC 6750 §2.1).
 * File (OAUTHQ_API_KEYS_FILE), keys never in clear:
 *   {"keys": {"<kid>": {"sha256": "<hex of the whole key>",
 *                       "scopes": ["connections:write", ...]}}}
 * Several kids may be listed at once, so a key is rotated by adding the new
 * one, moving the platform over, then removing the old one. The hash of the
 * presented key is compared in constant time with the listed one. Unknown
 * fields, scopes or malformed entries are start-up errors naming the file and
 * the kid. A set is immutable after load; any thread may check against it.
 */
#ifndef OAUTHQ_COMMON_APIKEYS_H
#define OAUTHQ_COMMON_APIKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define APIKEYS_MAX        64
#define APIKEYS_KID_MAX    17 /* 16 chars + NUL */
#define APIKEYS_SECRET_MIN 16
#define APIKEYS_SECRET_MAX 128
#define APIKEYS_KEY_MAX    (3 + 16 + 1 + APIKEYS_SECRET_MAX + 1)

/* Scopes, a bit each. */
#define APIKEYS_CONNECTIONS_WRITE 1u
#define APIKEYS_CONNECTIONS_READ  2u
#define APIKEYS_TOKENS_READ       4u

typedef struct apikeys apikeys_t;

typedef enum {
    APIKEYS_OK = 0,
    APIKEYS_MISSING,   /* no Authorization header → 401 */
    APIKEYS_MALFORMED, /* not "Bearer oq_<kid>_<secret>" → 401 */
    APIKEYS_UNKNOWN,   /* no such kid, or the hash differs → 401 */
    APIKEYS_FORBIDDEN, /* genuine key without the scope → 403 */
} apikeys_result;

/* Load and validate a keys file; ERRC_FATAL naming the file and the kid. */
apikeys_t *apikeys_load(const char *path, err_t *e);

/* Parse keys JSON text (origin names it in errors). */
apikeys_t *apikeys_parse(const char *json, size_t len, const char *origin, err_t *e);

/* Free; NULL is fine. */
void apikeys_free(apikeys_t *k);

/* Number of keys listed. */
size_t apikeys_count(const apikeys_t *k);

/* Split an Authorization header value (len bytes, not NUL-terminated
 * necessarily) "Bearer oq_<kid>_<secret>" : kid into kid[], *key and *key_len
 * the whole key inside header. 0, or -1 when malformed. Pure. */
int apikeys_parse_bearer(const char *header, size_t len, char kid[APIKEYS_KID_MAX],
                         const char **key, size_t *key_len);

/* Check a request's Authorization header (NULL when absent) for the scopes
 * in `need` (all required). kid_out (may be NULL) gets the presented key id
 * once the header parsed (OK, FORBIDDEN, UNKNOWN; "" otherwise), for logs.
 * k NULL refuses everything. */
apikeys_result apikeys_check(const apikeys_t *k, const char *header, unsigned need,
                             char kid_out[APIKEYS_KID_MAX]);

/* Scope bit of a scope name, 0 when unknown. */
unsigned apikeys_scope_bit(const char *name);

/* Name of one scope bit ("connections:write"), NULL when unknown. */
const char *apikeys_scope_name(unsigned bit);

/* Make a new key for kid: key_out gets "oq_<kid>_<secret>", hex_out its
 * SHA-256 in hex. ERRC_PERMANENT for a bad kid, ERRC_FATAL without
 * randomness. The caller wipes key_out. */
int apikeys_generate(const char *kid, char key_out[APIKEYS_KEY_MAX], char hex_out[65], err_t *e);

#endif
