/* apikeys — see apikeys.h. */
#include "common/apikeys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/crypto.h"

struct apikeys {
    size_t n;
    char kid[APIKEYS_MAX][APIKEYS_KID_MAX];
    uint8_t sha[APIKEYS_MAX][CRYPTO_SHA256_LEN];
    unsigned scopes[APIKEYS_MAX];
};

static const struct {
    const char *name;
    unsigned bit;
} SCOPES[] = {
    {"connections:write", APIKEYS_CONNECTIONS_WRITE},
    {"connections:read", APIKEYS_CONNECTIONS_READ},
    {"tokens:read", APIKEYS_TOKENS_READ},
};
#define NSCOPES (sizeof SCOPES / sizeof SCOPES[0])

unsigned apikeys_scope_bit(const char *name)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (strcmp(SCOPES[i].name, name) == 0)
            return SCOPES[i].bit;
    return 0;
}

const char *apikeys_scope_name(unsigned bit)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (SCOPES[i].bit == bit)
            return SCOPES[i].name;
    return NULL;
}

static int kid_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int secret_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int kid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= APIKEYS_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!kid_char(s[i]))
            return 0;
    return 1;
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One "<kid>": {"sha256", "scopes"} entry into slot k->n. */
static int parse_entry(apikeys_t *k, const cJSON *kv, const char *origin, err_t *e)
{
    const char *kid = kv->string;
    if (!kid_ok(kid))
        return err_set(e, ERRC_FATAL, "%s: key id \"%.20s\" must be [a-z0-9]{1,16}", origin, kid);
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->kid[i], kid) == 0)
            return err_set(e, ERRC_FATAL, "%s: key id %s listed twice", origin, kid);
    if (!cJSON_IsObject(kv))
        return err_set(e, ERRC_FATAL, "%s: key %s must be an object {\"sha256\", \"scopes\"}",
                       origin, kid);
    int have_sha = 0, have_scopes = 0;
    unsigned scopes = 0;
    for (const cJSON *f = kv->child; f; f = f->next) {
        if (strcmp(f->string, "sha256") == 0) {
            const char *h = cJSON_IsString(f) ? f->valuestring : "";
            if (strlen(h) != 2 * CRYPTO_SHA256_LEN)
                return err_set(e, ERRC_FATAL, "%s: key %s: sha256 must be 64 hex digits", origin,
                               kid);
            for (size_t i = 0; i < CRYPTO_SHA256_LEN; i++) {
                int hi = hex_nibble(h[2 * i]), lo = hex_nibble(h[2 * i + 1]);
                if (hi < 0 || lo < 0)
                    return err_set(e, ERRC_FATAL, "%s: key %s: sha256 must be 64 hex digits",
                                   origin, kid);
                k->sha[k->n][i] = (uint8_t)(hi << 4 | lo);
            }
            have_sha = 1;
        } else if (strcmp(f->string, "scopes") == 0 && cJSON_IsArray(f)) {
            for (const cJSON *s = f->child; s; s = s->next) {
                unsigned bit = cJSON_IsString(s) ? apikeys_scope_bit(s->valuestring) : 0;
                if (!bit)
                    return err_set(e, ERRC_FATAL,
                                   "%s: key %s: unknown scope \"%.32s\" (connections:write, "
                                   "connections:read, tokens:read)",
                                   origin, kid, cJSON_IsString(s) ? s->valuestring : "?");
                scopes |= bit;
            }
            have_scopes = 1;
        } else {
            return err_set(e, ERRC_FATAL, "%s: key %s: unknown or mistyped field \"%.32s\"", origin,
                           kid, f->string);
        }
    }
    if (!have_sha || !have_scopes)
        return err_set(e, ERRC_FATAL, "%s: key %s needs \"sha256\" and \"scopes\"", origin, kid);
    snprintf(k->kid[k->n], APIKEYS_KID_MAX, "%s", kid);
    k->scopes[k->n] = scopes;
    k->n++;
    return 0;
}

apikeys_t *apikeys_parse(const char *json, size_t len, const char *origin, err_t *e)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    apikeys_t *k = calloc(1, sizeof *k);
    if (!k) {
        cJSON_Delete(root);
        err_set(e, ERRC_FATAL, "%s: out of memory", origin);
        return NULL;
    }
    int have_keys = 0;
    if (!cJSON_IsObject(root)) {
        err_set(e, ERRC_FATAL, "%s: not a JSON object", origin);
        goto fail;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "keys") != 0 || !cJSON_IsObject(it)) {
            err_set(e, ERRC_FATAL, "%s: unknown or mistyped key \"%.32s\"", origin, it->string);
            goto fail;
        }
        have_keys = 1;
        for (const cJSON *kv = it->child; kv; kv = kv->next) {
            if (k->n == APIKEYS_MAX) {
                err_set(e, ERRC_FATAL, "%s: more than %d keys", origin, APIKEYS_MAX);
                goto fail;
            }
            if (parse_entry(k, kv, origin, e) < 0)
                goto fail;
        }
    }
    if (!have_keys) {
        err_set(e, ERRC_FATAL, "%s: needs {\"keys\": {...}}", origin);
        goto fail;
    }
    cJSON_Delete(root);
    return k;
fail:
    cJSON_Delete(root);
    apikeys_free(k);
    return NULL;
}

apikeys_t *apikeys_load(const char *path, err_t *e)
{
    if (!path || !*path) {
        err_set(e, ERRC_FATAL, "API keys file not configured");
        return NULL;
    }
    char buf[32768];
    size_t n = 0;
    if (config_read_file(path, buf, sizeof buf, &n, e) < 0)
        return NULL;
    return apikeys_parse(buf, n, path, e);
}

void apikeys_free(apikeys_t *k)
{
    if (!k)
        return;
    crypto_wipe(k, sizeof *k);
    free(k);
}

size_t apikeys_count(const apikeys_t *k)
{
    return k ? k->n : 0;
}

int apikeys_parse_bearer(const char *header, size_t len, char kid[APIKEYS_KID_MAX],
                         const char **key, size_t *key_len)
{
    /* The auth-scheme is case-insensitive (RFC 9110 §11.1); one or more
     * spaces; then the token and nothing else. */
    if (len < 7 || strncasecmp(header, "Bearer ", 7) != 0)
        return -1;
    size_t i = 7;
    while (i < len && header[i] == ' ')
        i++;
    const char *k = header + i;
    size_t n = len - i;
    if (n < 3 || n >= APIKEYS_KEY_MAX || memcmp(k, "oq_", 3) != 0)
        return -1;
    size_t j = 3;
    while (j < n && kid_char(k[j]))
        j++;
    size_t kl = j - 3;
    if (kl == 0 || kl >= APIKEYS_KID_MAX || j >= n || k[j] != '_')
        return -1;
    size_t sl = n - j - 1;
    if (sl < APIKEYS_SECRET_MIN || sl > APIKEYS_SECRET_MAX)
        return -1;
    for (size_t s = j + 1; s < n; s++)
        if (!secret_char(k[s]))
            return -1;
    memcpy(kid, k + 3, kl);
    kid[kl] = '\0';
    *key = k;
    *key_len = n;
    return 0;
}

apikeys_result apikeys_check(const apikeys_t *k, const char *header, unsigned need,
                             char kid_out[APIKEYS_KID_MAX])
{
    if (kid_out)
        kid_out[0] = '\0';
    if (!header)
        return APIKEYS_MISSING;
    char kid[APIKEYS_KID_MAX];
    const char *key = NULL;
    size_t key_len = 0;
    if (apikeys_parse_bearer(header, strlen(header), kid, &key, &key_len) < 0)
        return APIKEYS_MALFORMED;
    if (!k) {
        if (kid_out)
            snprintf(kid_out, APIKEYS_KID_MAX, "%s", kid);
        return APIKEYS_UNKNOWN;
    }
    uint8_t h[CRYPTO_SHA256_LEN];
    crypto_sha256(key, key_len, h);
    /* Compare with every entry (the kid is not secret, but the hash
     * comparison must not leak how much of it matched). */
    size_t found = k->n;
    for (size_t i = 0; i < k->n; i++) {
        int same_kid = strcmp(k->kid[i], kid) == 0;
        int same_hash = crypto_ct_equal(h, k->sha[i], sizeof h);
        if (same_kid && same_hash)
            found = i;
    }
    crypto_wipe(h, sizeof h);
    if (kid_out) /* the kid is an identifier, not a secret: for logs */
        snprintf(kid_out, APIKEYS_KID_MAX, "%s", kid);
    if (found == k->n)
        return APIKEYS_UNKNOWN;
    return (k->scopes[found] & need) == need ? APIKEYS_OK : APIKEYS_FORBIDDEN;
}

int apikeys_generate(const char *kid, char key_out[APIKEYS_KEY_MAX], char hex_out[65], err_t *e)
{
    if (!kid || !kid_ok(kid))
        return err_set(e, ERRC_PERMANENT, "key id must be [a-z0-9]{1,16}");
    uint8_t raw[32];
    if (crypto_random(raw, sizeof raw, e) < 0)
        return -1;
    char secret[48];
    crypto_b64url_encode(raw, sizeof raw, secret, sizeof secret);
    crypto_wipe(raw, sizeof raw);
    snprintf(key_out, APIKEYS_KEY_MAX, "oq_%s_%s", kid, secret);
    crypto_wipe(secret, sizeof secret);
    crypto_sha256_hex(key_out, strlen(key_out), hex_out);
    return 0;
}
