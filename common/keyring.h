/*
 * keyring — named 256-bit keys with one active key, for rotation.
 *
 * File format (OAUTHQ_STATE_KEY_FILE, OAUTHQ_DATA_KEYS_FILE):
 *   {"active": "k2", "keys": {"k1": "<base64 of 32 bytes>", "k2": "..."}}
 * New material is produced with the active key; anything is verified or
 * decrypted with whichever key its kid names, so old keys stay listed until
 * nothing made with them is alive. Key ids are [A-Za-z0-9_-]{1,16}.
 * A keyring is immutable after load and may be read from any thread; key
 * bytes are registered with log_secret() and wiped on free.
 */
#ifndef OAUTHQ_COMMON_KEYRING_H
#define OAUTHQ_COMMON_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define KEYRING_MAX_KEYS 16
#define KEYRING_KEY_LEN  32
#define KEYRING_KID_MAX  17 /* 16 chars + NUL */

typedef struct keyring keyring_t;

/* Load and validate a keyring file; errors are ERRC_FATAL naming the file
 * and the offending key id, never key material. */
keyring_t *keyring_load(const char *path, err_t *e);

/* Parse keyring JSON text (origin names it in errors). */
keyring_t *keyring_parse(const char *json, size_t len, const char *origin, err_t *e);

/* The active key id and key bytes. */
const char *keyring_active_kid(const keyring_t *k);
const uint8_t *keyring_active_key(const keyring_t *k);

/* Key bytes for kid, or NULL when the keyring does not hold it. */
const uint8_t *keyring_find(const keyring_t *k, const char *kid);

/* Number of keys and the i-th key's bytes (for verify-with-any). */
size_t keyring_count(const keyring_t *k);
const uint8_t *keyring_key_at(const keyring_t *k, size_t i);

/* Wipe and free; NULL is fine. */
void keyring_free(keyring_t *k);

#endif
