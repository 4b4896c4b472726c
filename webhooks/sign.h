/*
 * sign — Standard Webhooks signatures (https://www.standardwebhooks.com/).
 *
 * A signing keyring holds one or more secrets read from
 * OAUTHQ_WEBHOOK_SECRET_FILE, one `whsec_<base64>` per line (blank lines
 * and `#` comments ignored): several secrets for rotation, and every
 * delivery is signed with all of them, so a receiver holding either the old
 * or the new secret verifies it. The key of each secret is the base64
 * decoded part after `whsec_`. A signature is
 * `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`; the header
 * value is the signatures separated by single spaces.
 *
 * sign_keys_t is a plain value owned by the caller (wipe it with
 * sign_keys_wipe); functions are pure and thread-safe. Key bytes never
 * appear in errors: messages name the file and the line number only.
 */
#ifndef OAUTHQ_WEBHOOKS_SIGN_H
#define OAUTHQ_WEBHOOKS_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SIGN_KEYS_MAX   8  /* secrets in rotation at once */
#define SIGN_KEY_MAX    64 /* decoded bytes of one secret */
#define SIGN_KEY_MIN    16 /* shorter secrets are refused */
#define SIGN_ONE_MAX    48 /* "v1," + 44 base64 chars + NUL */
#define SIGN_HEADER_MAX (SIGN_KEYS_MAX * SIGN_ONE_MAX)
#define SIGN_FILE_MAX   8192

typedef struct {
    int n;
    size_t len[SIGN_KEYS_MAX];
    uint8_t key[SIGN_KEYS_MAX][SIGN_KEY_MAX];
} sign_keys_t;

/* Parse the text of a secret file (see above) into k; `what` names the
 * source in errors. No secret, a line that is not whsec_<base64>, a key
 * shorter than SIGN_KEY_MIN or longer than SIGN_KEY_MAX bytes, or more
 * than SIGN_KEYS_MAX secrets: ERRC_FATAL naming the line. */
int sign_keys_parse(const char *text, size_t len, const char *what, sign_keys_t *k, err_t *e);

/* Read and parse the secret file at path (≤ SIGN_FILE_MAX bytes). */
int sign_keys_load(const char *path, sign_keys_t *k, err_t *e);

/* One signature, "v1,<base64>", with key `key` into out[SIGN_ONE_MAX];
 * -1 only when out of memory or id is too long. */
int sign_one(const uint8_t *key, size_t klen, const char *id, int64_t ts, const char *body,
             size_t blen, char out[SIGN_ONE_MAX]);

/* The webhook-signature header value: every key's signature, separated by
 * spaces, into out[SIGN_HEADER_MAX]; -1 as sign_one. */
int sign_header(const sign_keys_t *k, const char *id, int64_t ts, const char *body, size_t blen,
                char out[SIGN_HEADER_MAX]);

/* Overwrite the key material. */
void sign_keys_wipe(sign_keys_t *k);

#endif
