/*
 * crypto — the small set of primitives oauthq uses, on OpenSSL's EVP API:
 * random bytes, SHA-256, HMAC-SHA256, constant-time comparison, unpadded
 * base64url (RFC 4648 §5), PKCE S256 (RFC 7636) and AES-256-GCM sealing of
 * secrets at rest. All functions are stateless and thread-safe; buffers are
 * owned by the caller and every output size is checked.
 */
#ifndef OAUTHQ_COMMON_CRYPTO_H
#define OAUTHQ_COMMON_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define CRYPTO_SHA256_LEN  32
#define CRYPTO_SHA256_HEX  65 /* 64 hex digits + NUL */
#define CRYPTO_GCM_KEY_LEN 32
#define CRYPTO_GCM_NONCE   12
#define CRYPTO_GCM_TAG     16

/* Fill buf with n cryptographically secure random bytes (ERRC_FATAL). */
int crypto_random(void *buf, size_t n, err_t *e);

/* out = SHA-256(data). */
void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_LEN]);

/* out = lowercase hex SHA-256(data), NUL-terminated. */
void crypto_sha256_hex(const void *data, size_t len, char out[CRYPTO_SHA256_HEX]);

/* out = HMAC-SHA256(key, msg). */
void crypto_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                        uint8_t out[CRYPTO_SHA256_LEN]);

/* 1 when a and b (n bytes each) are equal, in time independent of content. */
int crypto_ct_equal(const void *a, const void *b, size_t n);

/* Encode n bytes as unpadded base64url into out[cap] (NUL-terminated);
 * returns the length, or -1 when cap is too small. */
/* Encoded length of n bytes in unpadded base64url. */
size_t crypto_b64url_len(size_t n);

long crypto_b64url_encode(const void *in, size_t n, char *out, size_t cap);

/* Decode strict unpadded base64url (no '=', no whitespace, canonical final
 * bits) into out[cap]; returns the byte count or -1. */
long crypto_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* PKCE S256: challenge = base64url(SHA-256(verifier)), 43 chars + NUL. */
void crypto_pkce_s256(const char *verifier, size_t len, char challenge[44]);

/* Decode standard or url-safe base64 (padding optional) into out[cap]; for
 * key files written by common tools. Returns byte count or -1. */
long crypto_b64_decode_any(const char *in, size_t n, uint8_t *out, size_t cap);

/* AES-256-GCM seal: out = nonce(12) | ciphertext(n) | tag(16), random nonce,
 * aad authenticated. out_cap ≥ n + 28. Returns the output length or -1. */
long crypto_gcm_seal(const uint8_t key[CRYPTO_GCM_KEY_LEN], const void *aad, size_t aad_len,
                     const void *plain, size_t n, uint8_t *out, size_t out_cap, err_t *e);

/* AES-256-GCM open of crypto_gcm_seal's output; wrong key, aad or any
 * altered byte → -1 (ERRC_PERMANENT). Returns the plaintext length. */
long crypto_gcm_open(const uint8_t key[CRYPTO_GCM_KEY_LEN], const void *aad, size_t aad_len,
                     const uint8_t *in, size_t n, uint8_t *out, size_t out_cap, err_t *e);

/* Overwrite n bytes so the compiler cannot elide it. */
void crypto_wipe(void *p, size_t n);

#endif
