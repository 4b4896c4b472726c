/* sign — see sign.h. Pure and thread-safe. */
#include "webhooks/sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/config.h"
#include "common/crypto.h"

#define PREFIX "whsec_"

int sign_keys_parse(const char *text, size_t len, const char *what, sign_keys_t *k, err_t *e)
{
    memset(k, 0, sizeof *k);
    size_t pos = 0;
    for (int line = 1; pos < len; line++) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        if (n == 0 || *s == '#')
            continue;
        if (n <= strlen(PREFIX) || memcmp(s, PREFIX, strlen(PREFIX)) != 0) {
            sign_keys_wipe(k);
            return err_set(e, ERRC_FATAL, "%s line %d: expected whsec_<base64>", what, line);
        }
        if (k->n == SIGN_KEYS_MAX) {
            sign_keys_wipe(k);
            return err_set(e, ERRC_FATAL, "%s: more than %d secrets", what, SIGN_KEYS_MAX);
        }
        long klen = crypto_b64_decode_any(s + strlen(PREFIX), n - strlen(PREFIX), k->key[k->n],
                                          SIGN_KEY_MAX);
        if (klen < SIGN_KEY_MIN) {
            sign_keys_wipe(k);
            return err_set(e, ERRC_FATAL,
                           "%s line %d: the part after whsec_ must be base64 of %d to %d bytes",
                           what, line, SIGN_KEY_MIN, SIGN_KEY_MAX);
        }
        k->len[k->n++] = (size_t)klen;
    }
    if (k->n == 0)
        return err_set(e, ERRC_FATAL, "%s: no whsec_ secret", what);
    return 0;
}

int sign_keys_load(const char *path, sign_keys_t *k, err_t *e)
{
    char buf[SIGN_FILE_MAX + 1];
    size_t n = 0;
    if (config_read_file(path, buf, sizeof buf, &n, e) < 0)
        return -1;
    int rc = sign_keys_parse(buf, n, "OAUTHQ_WEBHOOK_SECRET_FILE", k, e);
    crypto_wipe(buf, sizeof buf);
    return rc;
}

int sign_one(const uint8_t *key, size_t klen, const char *id, int64_t ts, const char *body,
             size_t blen, char out[SIGN_ONE_MAX])
{
    char prefix[160];
    int pn = snprintf(prefix, sizeof prefix, "%s.%lld.", id, (long long)ts);
    out[0] = '\0';
    if (pn < 0 || (size_t)pn >= sizeof prefix)
        return -1; /* ids are bounded (CONN_ID_MAX) */
    char *msg = malloc((size_t)pn + blen + 1);
    if (!msg)
        return -1;
    memcpy(msg, prefix, (size_t)pn);
    memcpy(msg + pn, body, blen);
    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, klen, msg, (size_t)pn + blen, mac);
    free(msg);
    memcpy(out, "v1,", 3);
    /* 32 bytes → 44 base64 characters + NUL: fits SIGN_ONE_MAX - 3. */
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)sizeof mac);
    crypto_wipe(mac, sizeof mac);
    return 0;
}

int sign_header(const sign_keys_t *k, const char *id, int64_t ts, const char *body, size_t blen,
                char out[SIGN_HEADER_MAX])
{
    size_t pos = 0;
    out[0] = '\0';
    for (int i = 0; i < k->n; i++) {
        char one[SIGN_ONE_MAX];
        if (sign_one(k->key[i], k->len[i], id, ts, body, blen, one) < 0)
            return -1;
        size_t n = strlen(one);
        if (pos + n + 2 > SIGN_HEADER_MAX)
            break;
        if (pos)
            out[pos++] = ' ';
        memcpy(out + pos, one, n + 1);
        pos += n;
    }
    return pos ? 0 : -1;
}

void sign_keys_wipe(sign_keys_t *k)
{
    crypto_wipe(k, sizeof *k);
}
