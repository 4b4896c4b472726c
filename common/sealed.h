/*
 * sealed — secrets at rest: AES-256-GCM under a keyring (G5).
 *
 * A sealed value is text: "v1.<kid>.<base64url(nonce | ciphertext | tag)>",
 * with a random 96-bit nonce per value and AAD = "oauthq-sealed-v1|" +
 * connection id + "|" + field name, so a sealed access token cannot be
 * replayed as another connection's token or as a refresh token. Sealing uses
 * the keyring's active key; opening uses whichever key the kid names, so
 * keys rotate by adding a new active key and keeping old ones listed.
 * Pure given the keyring; any thread.
 */
#ifndef OAUTHQ_COMMON_SEALED_H
#define OAUTHQ_COMMON_SEALED_H

#include <stddef.h>

#include "common/err.h"
#include "common/keyring.h"

#define SEALED_PLAIN_MAX 4096
#define SEALED_TEXT_MAX  5600 /* enough for SEALED_PLAIN_MAX sealed */

/* Seal plain[n] for (conn_id, field) into out[cap] (NUL-terminated). */
int sealed_seal(const keyring_t *kr, const char *conn_id, const char *field, const char *plain,
                size_t n, char *out, size_t cap, err_t *e);

/* Open a sealed text into out[cap] (NUL-terminated); returns the plaintext
 * length or -1: unknown kid (ERRC_FATAL: a key is missing from the
 * keyring), malformed or failed authentication (ERRC_PERMANENT). */
long sealed_open(const keyring_t *kr, const char *conn_id, const char *field, const char *text,
                 char *out, size_t cap, err_t *e);

#endif
