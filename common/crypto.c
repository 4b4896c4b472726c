/* crypto — see crypto.h. */
#include "common/crypto.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

int crypto_random(void *buf, size_t n, err_t *e)
{
    if (n > 0x7fffffff || RAND_bytes(buf, (int)n) != 1)
        return err_set(e, ERRC_FATAL, "random generator failed");
    return 0;
}

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_SHA256_LEN])
{
    unsigned int olen = 0;
    EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL);
}

void crypto_sha256_hex(const void *data, size_t len, char out[CRYPTO_SHA256_HEX])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(data, len, d);
    for (size_t i = 0; i < CRYPTO_SHA256_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

void crypto_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    unsigned int olen = 0;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen);
}

int crypto_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

static const char b64url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encoded length of n bytes in unpadded base64url. */
size_t crypto_b64url_len(size_t n)
{
    return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
}

long crypto_b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
    size_t need = crypto_b64url_len(n);
    if (need + 1 > cap)
        return -1;
    const uint8_t *p = in;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alpha[v >> 18 & 63];
        out[o++] = b64url_alpha[v >> 12 & 63];
        out[o++] = b64url_alpha[v >> 6 & 63];
        out[o++] = b64url_alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alpha[v >> 18 & 63];
        out[o++] = b64url_alpha[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alpha[v >> 18 & 63];
        out[o++] = b64url_alpha[v >> 12 & 63];
        out[o++] = b64url_alpha[v >> 6 & 63];
    }
    out[o] = '\0';
    return (long)o;
}

static int b64val(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

static long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, int url, int strict)
{
    if (n % 4 == 1)
        return -1;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > cap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)in[i], url);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Canonical encoding: the unused low bits must be zero, so each byte
     * string has exactly one accepted encoding (no malleable tokens). */
    if (strict && acc != 0)
        return -1;
    return (long)o;
}

long crypto_b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    return b64_decode(in, n, out, cap, 1, 1);
}

long crypto_b64_decode_any(const char *in, size_t n, uint8_t *out, size_t cap)
{
    while (n > 0 && (in[n - 1] == '=' || in[n - 1] == '\n' || in[n - 1] == '\r'))
        n--;
    int url = memchr(in, '-', n) != NULL || memchr(in, '_', n) != NULL;
    return b64_decode(in, n, out, cap, url, 0);
}

void crypto_pkce_s256(const char *verifier, size_t len, char challenge[44])
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(verifier, len, d);
    crypto_b64url_encode(d, sizeof d, challenge, 44);
}

long crypto_gcm_seal(const uint8_t key[CRYPTO_GCM_KEY_LEN], const void *aad, size_t aad_len,
                     const void *plain, size_t n, uint8_t *out, size_t out_cap, err_t *e)
{
    if (n > 1 << 20 || out_cap < n + CRYPTO_GCM_NONCE + CRYPTO_GCM_TAG)
        return err_set(e, ERRC_PERMANENT, "gcm seal: buffer too small or input too large");
    if (crypto_random(out, CRYPTO_GCM_NONCE, e) < 0)
        return -1;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = ctx != NULL;
    ok = ok && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) == 1;
    ok = ok && (aad_len == 0 || EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aad_len) == 1);
    ok = ok && EVP_EncryptUpdate(ctx, out + CRYPTO_GCM_NONCE, &len, plain, (int)n) == 1;
    ok = ok && EVP_EncryptFinal_ex(ctx, out + CRYPTO_GCM_NONCE + len, &len) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_GCM_TAG,
                                   out + CRYPTO_GCM_NONCE + n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return err_set(e, ERRC_FATAL, "gcm seal failed");
    return (long)(n + CRYPTO_GCM_NONCE + CRYPTO_GCM_TAG);
}

long crypto_gcm_open(const uint8_t key[CRYPTO_GCM_KEY_LEN], const void *aad, size_t aad_len,
                     const uint8_t *in, size_t n, uint8_t *out, size_t out_cap, err_t *e)
{
    if (n < CRYPTO_GCM_NONCE + CRYPTO_GCM_TAG || n > (1 << 20) + 28)
        return err_set(e, ERRC_PERMANENT, "gcm open: input length %zu invalid", n);
    size_t clen = n - CRYPTO_GCM_NONCE - CRYPTO_GCM_TAG;
    if (out_cap < clen)
        return err_set(e, ERRC_PERMANENT, "gcm open: buffer too small");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = ctx != NULL;
    ok = ok && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) == 1;
    ok = ok && (aad_len == 0 || EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aad_len) == 1);
    ok = ok && EVP_DecryptUpdate(ctx, out, &len, in + CRYPTO_GCM_NONCE, (int)clen) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_GCM_TAG,
                                   (void *)(in + CRYPTO_GCM_NONCE + clen)) == 1;
    ok = ok && EVP_DecryptFinal_ex(ctx, out + len, &len) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        crypto_wipe(out, clen);
        return err_set(e, ERRC_PERMANENT, "gcm open: authentication failed");
    }
    return (long)clen;
}

void crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}
