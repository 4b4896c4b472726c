/* keyring — see keyring.h. */
#include "common/keyring.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/crypto.h"
#include "common/log.h"

struct keyring {
    size_t n;
    size_t active;
    char kid[KEYRING_MAX_KEYS][KEYRING_KID_MAX];
    uint8_t key[KEYRING_MAX_KEYS][KEYRING_KEY_LEN];
};

static int kid_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= KEYRING_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

/* Overwrite every string cJSON copied from the file (key material). */
static void wipe_tree(cJSON *n)
{
    for (; n; n = n->next) {
        if (n->valuestring)
            crypto_wipe(n->valuestring, strlen(n->valuestring));
        wipe_tree(n->child);
    }
}

keyring_t *keyring_parse(const char *json, size_t len, const char *origin, err_t *e)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    keyring_t *k = calloc(1, sizeof *k);
    if (!k) {
        cJSON_Delete(root);
        err_set(e, ERRC_FATAL, "%s: out of memory", origin);
        return NULL;
    }
    const char *active = NULL;
    if (!cJSON_IsObject(root)) {
        err_set(e, ERRC_FATAL, "%s: not a JSON object", origin);
        goto fail;
    }
    for (cJSON *it = root->child; it; it = it->next) {
        if (strcmp(it->string, "active") == 0 && cJSON_IsString(it)) {
            active = it->valuestring;
        } else if (strcmp(it->string, "keys") == 0 && cJSON_IsObject(it)) {
            for (cJSON *kv = it->child; kv; kv = kv->next) {
                if (k->n == KEYRING_MAX_KEYS) {
                    err_set(e, ERRC_FATAL, "%s: more than %d keys", origin, KEYRING_MAX_KEYS);
                    goto fail;
                }
                if (!kid_ok(kv->string)) {
                    err_set(e, ERRC_FATAL, "%s: key id must be [A-Za-z0-9_-]{1,16}", origin);
                    goto fail;
                }
                for (size_t i = 0; i < k->n; i++)
                    if (strcmp(k->kid[i], kv->string) == 0) {
                        err_set(e, ERRC_FATAL, "%s: key id %s listed twice", origin, kv->string);
                        goto fail;
                    }
                uint8_t buf[64];
                long got = cJSON_IsString(kv)
                               ? crypto_b64_decode_any(kv->valuestring, strlen(kv->valuestring),
                                                       buf, sizeof buf)
                               : -1;
                if (got != KEYRING_KEY_LEN) {
                    crypto_wipe(buf, sizeof buf);
                    err_set(e, ERRC_FATAL, "%s: key %s is not base64 of exactly %d bytes", origin,
                            kv->string, KEYRING_KEY_LEN);
                    goto fail;
                }
                snprintf(k->kid[k->n], KEYRING_KID_MAX, "%s", kv->string);
                memcpy(k->key[k->n], buf, KEYRING_KEY_LEN);
                crypto_wipe(buf, sizeof buf);
                log_secret(kv->valuestring, strlen(kv->valuestring));
                k->n++;
            }
        } else {
            err_set(e, ERRC_FATAL, "%s: unknown or mistyped key \"%.32s\"", origin, it->string);
            goto fail;
        }
    }
    if (k->n == 0 || !active) {
        err_set(e, ERRC_FATAL, "%s: needs \"active\" and at least one entry in \"keys\"", origin);
        goto fail;
    }
    for (k->active = 0; k->active < k->n; k->active++)
        if (strcmp(k->kid[k->active], active) == 0)
            break;
    if (k->active == k->n) {
        err_set(e, ERRC_FATAL, "%s: active key id \"%.16s\" is not in \"keys\"", origin, active);
        goto fail;
    }
    wipe_tree(root);
    cJSON_Delete(root);
    return k;
fail:
    wipe_tree(root);
    cJSON_Delete(root);
    keyring_free(k);
    return NULL;
}

keyring_t *keyring_load(const char *path, err_t *e)
{
    if (!path || !*path) {
        err_set(e, ERRC_FATAL, "keyring file not configured");
        return NULL;
    }
    char buf[8192];
    size_t n = 0;
    if (config_read_file(path, buf, sizeof buf, &n, e) < 0)
        return NULL;
    keyring_t *k = keyring_parse(buf, n, path, e);
    crypto_wipe(buf, sizeof buf);
    return k;
}

const char *keyring_active_kid(const keyring_t *k)
{
    return k->kid[k->active];
}

const uint8_t *keyring_active_key(const keyring_t *k)
{
    return k->key[k->active];
}

const uint8_t *keyring_find(const keyring_t *k, const char *kid)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->kid[i], kid) == 0)
            return k->key[i];
    return NULL;
}

size_t keyring_count(const keyring_t *k)
{
    return k->n;
}

const uint8_t *keyring_key_at(const keyring_t *k, size_t i)
{
    return i < k->n ? k->key[i] : NULL;
}

void keyring_free(keyring_t *k)
{
    if (!k)
        return;
    crypto_wipe(k, sizeof *k);
    free(k);
}
