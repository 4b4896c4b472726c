/* ident — see ident.h. */
#include "common/ident.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/crypto.h"

#define CONN_VERSION 1
#define CONN_RAW     41 /* 1 + 8 + 16 + 16 */
#define CONN_TAGGED  25 /* bytes covered by the tag */

static void conn_tag(const uint8_t *key, const uint8_t *raw, uint8_t tag[16])
{
    uint8_t msg[14 + CONN_TAGGED];
    memcpy(msg, "oauthq-conn-v1", 14);
    memcpy(msg + 14, raw, CONN_TAGGED);
    uint8_t full[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256(key, KEYRING_KEY_LEN, msg, sizeof msg, full);
    memcpy(tag, full, 16);
}

int ident_conn_new(const keyring_t *kr, int64_t now, char out[IDENT_CONN_ID_MAX], err_t *e)
{
    uint8_t raw[CONN_RAW];
    raw[0] = CONN_VERSION;
    uint64_t t = (uint64_t)now;
    for (int i = 0; i < 8; i++)
        raw[1 + i] = (uint8_t)(t >> (56 - 8 * i));
    if (crypto_random(raw + 9, 16, e) < 0)
        return -1;
    conn_tag(keyring_active_key(kr), raw, raw + CONN_TAGGED);
    crypto_b64url_encode(raw, sizeof raw, out, IDENT_CONN_ID_MAX);
    return 0;
}

ident_result ident_conn_verify(const keyring_t *kr, const char *id, int64_t *created_at)
{
    size_t n = strnlen(id, IDENT_CONN_ID_MAX);
    uint8_t raw[CONN_RAW + 3];
    if (n != IDENT_CONN_ID_LEN || crypto_b64url_decode(id, n, raw, sizeof raw) != CONN_RAW ||
        raw[0] != CONN_VERSION)
        return IDENT_MALFORMED;
    int ok = 0;
    for (size_t i = 0; i < keyring_count(kr); i++) {
        uint8_t tag[16];
        conn_tag(keyring_key_at(kr, i), raw, tag);
        ok |= crypto_ct_equal(tag, raw + CONN_TAGGED, 16);
    }
    if (!ok)
        return IDENT_BAD_MAC;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | raw[1 + i];
    if (created_at)
        *created_at = (int64_t)t;
    return IDENT_OK;
}

#define STATE_DOMAIN   "oauthq-state-v1|"
#define SESSION_DOMAIN "oauthq-session-v1|"

static void token_mac(const uint8_t *key, const char *domain, const char *signed_part, size_t len,
                      uint8_t out[32])
{
    /* Domain separation: a state MAC can never be a connection-id tag or
     * a session's MAC, and the reverse. */
    char msg[IDENT_SESSION_MAX + 32];
    int h = snprintf(msg, sizeof msg, "%s", domain);
    if (len > sizeof msg - (size_t)h)
        len = sizeof msg - (size_t)h; /* callers bound len below this */
    memcpy(msg + h, signed_part, len);
    crypto_hmac_sha256(key, KEYRING_KEY_LEN, msg, (size_t)h + len, out);
}

static void state_mac(const uint8_t *key, const char *signed_part, size_t len, uint8_t out[32])
{
    token_mac(key, STATE_DOMAIN, signed_part, len, out);
}

/* The shape "<prefix><kid>.<payload>.<43 chars of MAC>" of states and
 * sessions: split it and check the MAC (constant time) before anything is
 * parsed. IDENT_OK sets kid, *payload and *dot2 (the dot before the MAC). */
static ident_result token_check(const keyring_t *kr, const char *token, size_t len,
                                const char *prefix, size_t max, const char *domain,
                                char kid[KEYRING_KID_MAX], const char **payload, const char **dot2)
{
    size_t pl = strlen(prefix);
    if (len < pl + 6 || len >= max || memcmp(token, prefix, pl) != 0)
        return IDENT_MALFORMED;
    const char *k = token + pl;
    const char *dot1 = memchr(k, '.', len - pl);
    if (!dot1 || dot1 == k || (size_t)(dot1 - k) >= KEYRING_KID_MAX)
        return IDENT_MALFORMED;
    *payload = dot1 + 1;
    const char *end = token + len;
    *dot2 = memchr(*payload, '.', (size_t)(end - *payload));
    if (!*dot2 || (size_t)(end - *dot2 - 1) != 43)
        return IDENT_MALFORMED;
    memcpy(kid, k, (size_t)(dot1 - k));
    kid[dot1 - k] = '\0';
    const uint8_t *key = keyring_find(kr, kid);
    if (!key)
        return IDENT_UNKNOWN_KID;
    uint8_t given[33], want[32];
    if (crypto_b64url_decode(*dot2 + 1, 43, given, sizeof given) != 32)
        return IDENT_MALFORMED;
    token_mac(key, domain, token, (size_t)(*dot2 - token), want);
    return crypto_ct_equal(given, want, 32) ? IDENT_OK : IDENT_BAD_MAC;
}

int ident_state_issue(const keyring_t *kr, const ident_state *st, char *out, size_t cap, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "c", st->conn_id);
    cJSON_AddStringToObject(o, "p", st->provider);
    cJSON_AddNumberToObject(o, "x", (double)st->expires_at);
    if (st->has_binding) {
        char b[48];
        crypto_b64url_encode(st->binding, sizeof st->binding, b, sizeof b);
        cJSON_AddStringToObject(o, "b", b);
    }
    if (st->return_to[0])
        cJSON_AddStringToObject(o, "r", st->return_to);
    if (st->has_meta) {
        char m[48];
        crypto_b64url_encode(st->meta_hash, sizeof st->meta_hash, m, sizeof m);
        cJSON_AddStringToObject(o, "m", m);
    }
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json)
        return err_set(e, ERRC_FATAL, "state: out of memory");
    char buf[IDENT_STATE_MAX];
    const char *kid = keyring_active_kid(kr);
    int h = snprintf(buf, sizeof buf, "1.%s.", kid);
    long pl = crypto_b64url_encode(json, strlen(json), buf + h, sizeof buf - (size_t)h);
    free(json);
    if (pl < 0 || (size_t)h + (size_t)pl + 1 + 43 + 1 > sizeof buf || (size_t)h + pl + 45 > cap)
        return err_set(e, ERRC_PERMANENT, "state: token longer than %d bytes", IDENT_STATE_MAX);
    size_t signed_len = (size_t)h + (size_t)pl;
    uint8_t mac[32];
    state_mac(keyring_active_key(kr), buf, signed_len, mac);
    buf[signed_len] = '.';
    crypto_b64url_encode(mac, sizeof mac, buf + signed_len + 1, sizeof buf - signed_len - 1);
    snprintf(out, cap, "%s", buf);
    return 0;
}

ident_result ident_state_verify(const keyring_t *kr, const char *token, size_t len, int64_t now,
                                ident_state *st)
{
    memset(st, 0, sizeof *st);
    char kidbuf[KEYRING_KID_MAX];
    const char *payload, *dot2;
    ident_result vr =
        token_check(kr, token, len, "1.", IDENT_STATE_MAX, STATE_DOMAIN, kidbuf, &payload, &dot2);
    if (vr != IDENT_OK)
        return vr;

    /* Authentic from here on: we made this payload. Still parse defensively. */
    char json[IDENT_STATE_MAX];
    long jl =
        crypto_b64url_decode(payload, (size_t)(dot2 - payload), (uint8_t *)json, sizeof json - 1);
    if (jl < 0)
        return IDENT_MALFORMED;
    json[jl] = '\0';
    cJSON *o = cJSON_ParseWithLength(json, (size_t)jl);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "c");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "p");
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, "x");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "b");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "r");
    const cJSON *mh = cJSON_GetObjectItemCaseSensitive(o, "m");
    ident_result res = IDENT_MALFORMED;
    if (!cJSON_IsString(c) || !cJSON_IsString(p) || !cJSON_IsNumber(x) ||
        strlen(c->valuestring) >= sizeof st->conn_id ||
        strlen(p->valuestring) >= sizeof st->provider)
        goto out;
    snprintf(st->conn_id, sizeof st->conn_id, "%s", c->valuestring);
    snprintf(st->provider, sizeof st->provider, "%s", p->valuestring);
    st->expires_at = (int64_t)x->valuedouble;
    if (cJSON_IsString(b)) {
        if (crypto_b64url_decode(b->valuestring, strlen(b->valuestring), st->binding,
                                 sizeof st->binding) != 32)
            goto out;
        st->has_binding = 1;
    }
    if (cJSON_IsString(r)) {
        if (strlen(r->valuestring) >= sizeof st->return_to)
            goto out;
        snprintf(st->return_to, sizeof st->return_to, "%s", r->valuestring);
    }
    if (cJSON_IsString(mh)) {
        if (crypto_b64url_decode(mh->valuestring, strlen(mh->valuestring), st->meta_hash,
                                 sizeof st->meta_hash) != 32)
            goto out;
        st->has_meta = 1;
    }
    snprintf(st->kid, sizeof st->kid, "%s", kidbuf);
    res = now > st->expires_at ? IDENT_EXPIRED : IDENT_OK;
out:
    cJSON_Delete(o);
    return res;
}

int ident_session_issue(const keyring_t *kr, const ident_session *s, char *out, size_t cap,
                        err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "c", s->conn_id);
    cJSON_AddStringToObject(o, "p", s->provider);
    cJSON_AddNumberToObject(o, "x", (double)s->expires_at);
    if (s->return_to[0])
        cJSON_AddStringToObject(o, "r", s->return_to);
    if (s->meta.json[0])
        cJSON_AddItemToObject(o, "m", cJSON_Parse(s->meta.json));
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json)
        return err_set(e, ERRC_FATAL, "session: out of memory");
    char buf[IDENT_SESSION_MAX];
    const char *kid = keyring_active_kid(kr);
    int h = snprintf(buf, sizeof buf, "s1.%s.", kid);
    size_t jl = strlen(json);
    long pl = crypto_b64url_len(jl) + (size_t)h + 45 <= sizeof buf
                  ? crypto_b64url_encode(json, jl, buf + h, sizeof buf - (size_t)h)
                  : -1;
    free(json);
    if (pl < 0 || (size_t)h + (size_t)pl + 45 > sizeof buf || (size_t)h + (size_t)pl + 45 > cap)
        return err_set(e, ERRC_PERMANENT, "session: token longer than %d bytes", IDENT_SESSION_MAX);
    size_t signed_len = (size_t)h + (size_t)pl;
    uint8_t mac[32];
    token_mac(keyring_active_key(kr), SESSION_DOMAIN, buf, signed_len, mac);
    buf[signed_len] = '.';
    crypto_b64url_encode(mac, sizeof mac, buf + signed_len + 1, sizeof buf - signed_len - 1);
    snprintf(out, cap, "%s", buf);
    return 0;
}

ident_result ident_session_verify(const keyring_t *kr, const char *token, size_t len, int64_t now,
                                  ident_session *s)
{
    memset(s, 0, sizeof *s);
    char kidbuf[KEYRING_KID_MAX];
    const char *payload, *dot2;
    ident_result vr = token_check(kr, token, len, "s1.", IDENT_SESSION_MAX, SESSION_DOMAIN, kidbuf,
                                  &payload, &dot2);
    if (vr != IDENT_OK)
        return vr;

    static const size_t json_cap = IDENT_SESSION_MAX;
    char *json = malloc(json_cap);
    if (!json)
        return IDENT_MALFORMED;
    long jl =
        crypto_b64url_decode(payload, (size_t)(dot2 - payload), (uint8_t *)json, json_cap - 1);
    ident_result res = IDENT_MALFORMED;
    cJSON *o = NULL;
    if (jl < 0)
        goto out;
    json[jl] = '\0';
    o = cJSON_ParseWithLength(json, (size_t)jl);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "c");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "p");
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, "x");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "r");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "m");
    if (!cJSON_IsString(c) || !cJSON_IsString(p) || !cJSON_IsNumber(x) ||
        strlen(c->valuestring) >= sizeof s->conn_id ||
        strlen(p->valuestring) >= sizeof s->provider ||
        (r && (!cJSON_IsString(r) || strlen(r->valuestring) >= sizeof s->return_to)))
        goto out;
    snprintf(s->conn_id, sizeof s->conn_id, "%s", c->valuestring);
    snprintf(s->provider, sizeof s->provider, "%s", p->valuestring);
    s->expires_at = (int64_t)x->valuedouble;
    if (r)
        snprintf(s->return_to, sizeof s->return_to, "%s", r->valuestring);
    if (m) {
        err_t e = {0};
        if (!cJSON_IsObject(m) || connmeta_from(m, 1, &s->meta, &e) < 0)
            goto out;
    }
    res = now > s->expires_at ? IDENT_EXPIRED : IDENT_OK;
out:
    cJSON_Delete(o);
    free(json);
    return res;
}

void ident_binding_hash(const char *cookie, size_t len, uint8_t out[32])
{
    uint8_t msg[256 + 16];
    size_t n = len < 256 ? len : 256;
    memcpy(msg, "oauthq-bind-v1|", 15);
    memcpy(msg + 15, cookie, n);
    crypto_sha256(msg, 15 + n, out);
}

int ident_pkce_verifier(const keyring_t *kr, const char *kid, const char *conn_id,
                        char out[IDENT_PKCE_VERIFIER])
{
    const uint8_t *key = keyring_find(kr, kid);
    if (!key)
        return -1;
    char msg[16 + IDENT_CONN_ID_MAX];
    int n = snprintf(msg, sizeof msg, "oauthq-pkce-v1|%s", conn_id);
    uint8_t mac[32];
    crypto_hmac_sha256(key, KEYRING_KEY_LEN, msg, (size_t)n, mac);
    crypto_b64url_encode(mac, sizeof mac, out, IDENT_PKCE_VERIFIER);
    return 0;
}

const char *ident_result_name(ident_result r)
{
    switch (r) {
    case IDENT_OK:
        return "ok";
    case IDENT_MALFORMED:
        return "malformed";
    case IDENT_UNKNOWN_KID:
        return "unknown_key";
    case IDENT_BAD_MAC:
        return "bad_mac";
    case IDENT_EXPIRED:
        return "expired";
    }
    return "unknown";
}
