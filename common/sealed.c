/* sealed — see sealed.h. */
#include "common/sealed.h"

#include <stdio.h>
#include <string.h>

#include "common/crypto.h"

static size_t aad(const char *conn_id, const char *field, char *out, size_t cap)
{
    int n = snprintf(out, cap, "oauthq-sealed-v1|%s|%s", conn_id, field);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

int sealed_seal(const keyring_t *kr, const char *conn_id, const char *field, const char *plain,
                size_t n, char *out, size_t cap, err_t *e)
{
    if (n > SEALED_PLAIN_MAX)
        return err_set(e, ERRC_PERMANENT, "sealing %s: value longer than %d bytes", field,
                       SEALED_PLAIN_MAX);
    uint8_t box[SEALED_PLAIN_MAX + CRYPTO_GCM_NONCE + CRYPTO_GCM_TAG];
    char a[256];
    size_t alen = aad(conn_id, field, a, sizeof a);
    long bl = crypto_gcm_seal(keyring_active_key(kr), a, alen, plain, n, box, sizeof box, e);
    if (bl < 0)
        return -1;
    int h = snprintf(out, cap, "v1.%s.", keyring_active_kid(kr));
    if (h < 0 || (size_t)h >= cap ||
        crypto_b64url_encode(box, (size_t)bl, out + h, cap - (size_t)h) < 0) {
        crypto_wipe(box, sizeof box);
        return err_set(e, ERRC_PERMANENT, "sealing %s: output buffer too small", field);
    }
    crypto_wipe(box, sizeof box);
    return 0;
}

long sealed_open(const keyring_t *kr, const char *conn_id, const char *field, const char *text,
                 char *out, size_t cap, err_t *e)
{
    if (strncmp(text, "v1.", 3) != 0)
        return err_set(e, ERRC_PERMANENT, "opening %s: not a sealed value", field);
    const char *kid = text + 3;
    const char *dot = strchr(kid, '.');
    if (!dot || dot == kid || (size_t)(dot - kid) >= KEYRING_KID_MAX)
        return err_set(e, ERRC_PERMANENT, "opening %s: malformed sealed value", field);
    char kidbuf[KEYRING_KID_MAX];
    memcpy(kidbuf, kid, (size_t)(dot - kid));
    kidbuf[dot - kid] = '\0';
    const uint8_t *key = keyring_find(kr, kidbuf);
    if (!key)
        return err_set(e, ERRC_FATAL, "opening %s: data key '%s' is not in the keyring", field,
                       kidbuf);
    uint8_t box[SEALED_PLAIN_MAX + CRYPTO_GCM_NONCE + CRYPTO_GCM_TAG + 4];
    long bl = crypto_b64url_decode(dot + 1, strlen(dot + 1), box, sizeof box);
    if (bl < 0)
        return err_set(e, ERRC_PERMANENT, "opening %s: malformed sealed value", field);
    char a[256];
    size_t alen = aad(conn_id, field, a, sizeof a);
    uint8_t plain[SEALED_PLAIN_MAX + 1];
    long pl = crypto_gcm_open(key, a, alen, box, (size_t)bl, plain, sizeof plain, e);
    if (pl < 0)
        return err_wrap(e, "opening %s", field);
    if ((size_t)pl >= cap) {
        crypto_wipe(plain, sizeof plain);
        return err_set(e, ERRC_PERMANENT, "opening %s: output buffer too small", field);
    }
    memcpy(out, plain, (size_t)pl);
    out[pl] = '\0';
    crypto_wipe(plain, sizeof plain);
    return pl;
}
