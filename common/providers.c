/*
 * providers — see providers.h for the contract.
 *
 * Implementation notes: the file is parsed with cJSON, then every key of
 * every object is checked against a fixed table before any value is read,
 * so a typo is reported as an unknown key rather than as a missing one.
 * Keys are compared case-sensitively (cJSON_GetObjectItemCaseSensitive) and
 * duplicate keys are refused, since cJSON would silently keep the first.
 * NUL bytes and \u0000 escapes are refused up front because cJSON would
 * truncate such strings and let e.g. "name\u0000x" pass as "name".
 * Load/parse is single-threaded (start-up); the result is immutable.
 */
#include "common/providers.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"

struct providers {
    size_t n;
    provider_t v[PROVIDERS_MAX];
};

/* Error context of one parse: file, current entry and its name once known. */
typedef struct {
    const char *origin;
    size_t idx;       /* SIZE_MAX at top level */
    const char *name; /* validated provider name, or NULL */
    err_t *e;
} pctx;

static const char *const entry_keys[] = {
    "name",
    "profile",
    "authorize_url",
    "token_url",
    "deauthorize_url",
    "client_id",
    "scope",
    "client_secret_file",
    "client_secret_env",
    "pkce",
    "token_auth",
    "code_ttl_s",
    "issuer",
    "max_in_flight",
    "refresh_rotation",
    "refresh_ahead_s",
};

/* Fill e with "<origin>: providers[i]: <detail> (provider "name")"; returns -1. */
static int fail(const pctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const pctx *c, const char *fmt, ...)
{
    char detail[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (c->idx == SIZE_MAX)
        return err_set(c->e, ERRC_FATAL, "%.120s: %s", c->origin, detail);
    if (c->name)
        return err_set(c->e, ERRC_FATAL, "%.120s: providers[%zu]: %s (provider \"%s\")", c->origin,
                       c->idx, detail, c->name);
    return err_set(c->e, ERRC_FATAL, "%.120s: providers[%zu]: %s", c->origin, c->idx, detail);
}

/* Printable, bounded copy of an untrusted key for messages ("..." when cut). */
static void safe_key(const char *k, char *out, size_t cap)
{
    size_t i = 0;
    for (; k && k[i] && i + 4 < cap; i++) {
        unsigned char ch = (unsigned char)k[i];
        out[i] = (ch < 0x20 || ch > 0x7e || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    size_t o = i;
    if (k && k[i]) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Every key of `obj` must be in keys[] and appear once. */
static int check_keys(const pctx *c, const cJSON *obj, const char *const *keys, size_t nkeys)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        char shown[52];
        safe_key(it->string, shown, sizeof shown);
        int known = 0;
        for (size_t k = 0; it->string && k < nkeys; k++)
            if (strcmp(it->string, keys[k]) == 0)
                known = 1;
        if (!known)
            return fail(c, "unknown key \"%s\"", shown);
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (strcmp(prev->string, it->string) == 0)
                return fail(c, "duplicate key \"%s\"", shown);
    }
    return 0;
}

/* ---- value checks: NULL when fine, else the reason ------------------------ */

static const char *check_url(const char *s)
{
    size_t skip;
    if (strncmp(s, "https://", 8) == 0)
        skip = 8;
    else if (strncmp(s, "http://", 7) == 0)
        skip = 7;
    else
        return "must be an absolute http:// or https:// URL";
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f)
            return "must not contain spaces, control or non-ASCII characters";
        if (ch == '#')
            return "must not contain a fragment";
    }
    if (s[skip] == '\0' || s[skip] == '/' || s[skip] == '?' || s[skip] == ':' || s[skip] == '@')
        return "must name a host";
    return NULL;
}

static const char *check_name(const char *s)
{
    if (!*s)
        return "must not be empty";
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return "must match [a-z0-9_-]{1,32}";
    return NULL;
}

static const char *check_client_id(const char *s)
{
    if (!*s)
        return "must not be empty";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must be printable ASCII without spaces";
    return NULL;
}

static const char *check_path(const char *s)
{
    if (!*s)
        return "must not be empty";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            return "must not contain control characters";
    return NULL;
}

static const char *check_env(const char *s)
{
    if (!*s)
        return "must not be empty";
    if (*s >= '0' && *s <= '9')
        return "must not start with a digit";
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return "must match [A-Z0-9_]+";
    return NULL;
}

static const char *check_scope(const char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f || *p == '"' || *p == '\\')
            return "must be printable ASCII without '\"' or '\\'";
    return NULL;
}

typedef const char *(*check_fn)(const char *s);

enum { OPTIONAL = 0, REQUIRED = 1 };
enum { NO_NULL = 0, NULLABLE = 1 };

/* Copy string key `key` of `obj` into out[cap] ("" when absent or null and allowed). */
static int get_string(const pctx *c, const cJSON *obj, const char *key, int required, int nullable,
                      char *out, size_t cap, check_fn check)
{
    out[0] = '\0';
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        if (required)
            return fail(c, "missing required key \"%s\"", key);
        return 0;
    }
    if (nullable && cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(c, "key \"%s\": must be a string%s", key, nullable ? " or null" : "");
    size_t n = strlen(it->valuestring);
    if (n >= cap)
        return fail(c, "key \"%s\": longer than %zu bytes", key, cap - 1);
    const char *why = check ? check(it->valuestring) : NULL;
    if (why)
        return fail(c, "key \"%s\": %s", key, why);
    memcpy(out, it->valuestring, n + 1);
    return 0;
}

/* Map the string at `key` to the index of one of names[]; required. */
static int get_enum(const pctx *c, const cJSON *obj, const char *key, const char *const *names,
                    size_t nnames, const char *expect, int *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it)
        return fail(c, "missing required key \"%s\"", key);
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(c, "key \"%s\": must be a string", key);
    for (size_t i = 0; i < nnames; i++) {
        if (strcmp(it->valuestring, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return fail(c, "key \"%s\": must be one of %s", key, expect);
}

static const char *const profile_names[] = {"stripe", "oauth2", "sim"};
static const char *const auth_names[] = {"client_secret_post", "client_secret_basic"};

static int parse_entry(pctx *c, const cJSON *obj, provider_t *pv)
{
    if (!cJSON_IsObject(obj))
        return fail(c, "must be an object");
    if (check_keys(c, obj, entry_keys, sizeof entry_keys / sizeof entry_keys[0]) < 0)
        return -1;
    if (get_string(c, obj, "name", REQUIRED, NO_NULL, pv->name, sizeof pv->name, check_name) < 0)
        return -1;
    c->name = pv->name;

    int v = 0;
    if (get_enum(c, obj, "profile", profile_names, 3, "stripe|oauth2|sim", &v) < 0)
        return -1;
    pv->profile = (provider_profile)v;
    if (get_string(c, obj, "authorize_url", REQUIRED, NO_NULL, pv->authorize_url,
                   sizeof pv->authorize_url, check_url) < 0 ||
        get_string(c, obj, "token_url", REQUIRED, NO_NULL, pv->token_url, sizeof pv->token_url,
                   check_url) < 0 ||
        get_string(c, obj, "deauthorize_url", OPTIONAL, NULLABLE, pv->deauthorize_url,
                   sizeof pv->deauthorize_url, check_url) < 0 ||
        get_string(c, obj, "client_id", REQUIRED, NO_NULL, pv->client_id, sizeof pv->client_id,
                   check_client_id) < 0)
        return -1;

    int has_file = cJSON_GetObjectItemCaseSensitive(obj, "client_secret_file") != NULL;
    int has_env = cJSON_GetObjectItemCaseSensitive(obj, "client_secret_env") != NULL;
    if (has_file && has_env)
        return fail(c, "keys \"client_secret_file\" and \"client_secret_env\": set exactly one");
    if (!has_file && !has_env)
        return fail(c, "missing required key \"client_secret_file\" or \"client_secret_env\"");
    if (has_file &&
        get_string(c, obj, "client_secret_file", REQUIRED, NO_NULL, pv->client_secret_file,
                   sizeof pv->client_secret_file, check_path) < 0)
        return -1;
    if (has_env && get_string(c, obj, "client_secret_env", REQUIRED, NO_NULL, pv->client_secret_env,
                              sizeof pv->client_secret_env, check_env) < 0)
        return -1;

    if (get_string(c, obj, "scope", OPTIONAL, NO_NULL, pv->scope, sizeof pv->scope, check_scope) <
        0)
        return -1;

    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, "pkce");
    pv->pkce = 0;
    if (it) {
        if (!cJSON_IsBool(it))
            return fail(c, "key \"pkce\": must be true or false");
        pv->pkce = cJSON_IsTrue(it) ? 1 : 0;
    }

    if (get_enum(c, obj, "token_auth", auth_names, 2, "client_secret_post|client_secret_basic",
                 &v) < 0)
        return -1;
    pv->token_auth = (provider_token_auth)v;

    it = cJSON_GetObjectItemCaseSensitive(obj, "code_ttl_s");
    if (!it)
        return fail(c, "missing required key \"code_ttl_s\"");
    if (!cJSON_IsNumber(it))
        return fail(c, "key \"code_ttl_s\": must be an integer");
    double d = it->valuedouble;
    if (!(d >= 1 && d <= PROVIDER_CODE_TTL_MAX) || (double)(int)d != d)
        return fail(c, "key \"code_ttl_s\": must be an integer in [1, %d]", PROVIDER_CODE_TTL_MAX);
    pv->code_ttl_s = (int)d;

    /* Optional bulkhead (SPEC §6): token requests in flight for this
     * provider on one worker; 0 = the worker's default share. */
    it = cJSON_GetObjectItemCaseSensitive(obj, "max_in_flight");
    pv->max_in_flight = 0;
    if (it) {
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 1 && it->valuedouble <= 4096) ||
            (double)(int)it->valuedouble != it->valuedouble)
            return fail(c, "key \"max_in_flight\": must be an integer in [1, 4096]");
        pv->max_in_flight = (int)it->valuedouble;
    }

    it = cJSON_GetObjectItemCaseSensitive(obj, "refresh_rotation");
    pv->refresh_rotation = pv->profile != PROVIDER_PROFILE_STRIPE;
    if (it) {
        if (!cJSON_IsBool(it))
            return fail(c, "key \"refresh_rotation\": must be true or false");
        pv->refresh_rotation = cJSON_IsTrue(it) ? 1 : 0;
    }
    it = cJSON_GetObjectItemCaseSensitive(obj, "refresh_ahead_s");
    pv->refresh_ahead_s = 0;
    if (it) {
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= 86400) ||
            (double)(int)it->valuedouble != it->valuedouble)
            return fail(c, "key \"refresh_ahead_s\": must be an integer in [0, 86400]");
        pv->refresh_ahead_s = (int)it->valuedouble;
    }

    return get_string(c, obj, "issuer", OPTIONAL, NULLABLE, pv->issuer, sizeof pv->issuer,
                      check_url);
}

/* Refuse NUL bytes and \u0000 escapes (cJSON would silently truncate at them). */
static int has_nul(const char *json, size_t len)
{
    if (memchr(json, '\0', len))
        return 1;
    for (size_t i = 0; i + 1 < len; i++) {
        if (json[i] != '\\')
            continue;
        if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* skip the escaped character (handles "\\\\u0000") */
    }
    return 0;
}

providers_t *providers_parse(const char *json, size_t len, const char *origin, err_t *e)
{
    pctx c = {origin ? origin : "providers", SIZE_MAX, NULL, e};
    if (!json || len == 0) {
        fail(&c, "empty file");
        return NULL;
    }
    if (len > PROVIDERS_FILE_MAX) {
        fail(&c, "larger than %d bytes", PROVIDERS_FILE_MAX);
        return NULL;
    }
    if (has_nul(json, len)) {
        fail(&c, "NUL bytes and \\u0000 escapes are not allowed");
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        size_t line = 1;
        for (size_t i = 0; i < off; i++)
            line += json[i] == '\n';
        fail(&c, "invalid JSON near line %zu (byte %zu)", line, off);
        return NULL;
    }
    providers_t *p = NULL;
    for (const char *q = end; q && q < json + len; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            fail(&c, "trailing data after the JSON value");
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        fail(&c, "top level must be an object {\"providers\": [...]}");
        goto out;
    }
    static const char *const top_keys[] = {"providers"};
    if (check_keys(&c, root, top_keys, 1) < 0)
        goto out;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (!arr) {
        fail(&c, "missing required key \"providers\"");
        goto out;
    }
    if (!cJSON_IsArray(arr)) {
        fail(&c, "key \"providers\": must be an array");
        goto out;
    }
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > PROVIDERS_MAX) {
        fail(&c, "key \"providers\": must have 1..%d entries, has %d", PROVIDERS_MAX, n);
        goto out;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
        fail(&c, "out of memory");
        goto out;
    }
    for (const cJSON *it = arr->child; it; it = it->next) {
        c.idx = p->n;
        c.name = NULL;
        provider_t *pv = &p->v[p->n];
        if (parse_entry(&c, it, pv) < 0)
            goto bad;
        for (size_t j = 0; j < p->n; j++) {
            if (strcmp(p->v[j].name, pv->name) == 0) {
                c.name = NULL;
                fail(&c, "duplicate provider name \"%s\" (also providers[%zu])", pv->name, j);
                goto bad;
            }
        }
        p->n++;
    }
    goto out;
bad:
    free(p);
    p = NULL;
out:
    cJSON_Delete(root);
    return p;
}

providers_t *providers_load(const char *path, err_t *e)
{
    if (!path || !*path) {
        err_set(e, ERRC_FATAL, "providers file: no path given (OAUTHQ_PROVIDERS_FILE)");
        return NULL;
    }
    char *buf = malloc((size_t)PROVIDERS_FILE_MAX + 1);
    if (!buf) {
        err_set(e, ERRC_FATAL, "%.120s: out of memory", path);
        return NULL;
    }
    size_t n = 0;
    providers_t *p = NULL;
    if (config_read_file(path, buf, (size_t)PROVIDERS_FILE_MAX + 1, &n, e) == 0)
        p = providers_parse(buf, n, path, e);
    else
        err_wrap(e, "providers file");
    free(buf);
    return p;
}

size_t providers_count(const providers_t *p)
{
    return p ? p->n : 0;
}

const provider_t *providers_at(const providers_t *p, size_t i)
{
    return (p && i < p->n) ? &p->v[i] : NULL;
}

const provider_t *providers_find(const providers_t *p, const char *name)
{
    if (!p || !name)
        return NULL;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->v[i].name, name) == 0)
            return &p->v[i];
    return NULL;
}

/* Wipe the caller's buffer after a failed read; returns -1. */
static int secret_fail(char *out, size_t cap)
{
    explicit_bzero(out, cap);
    return -1;
}

int providers_client_secret(const provider_t *pv, char *out, size_t cap, size_t *len, err_t *e)
{
    if (!pv || !out || cap < 2)
        return err_set(e, ERRC_FATAL, "providers_client_secret: bad arguments");
    size_t n = 0;
    if (pv->client_secret_file[0]) {
        if (config_read_file(pv->client_secret_file, out, cap, &n, e) < 0) {
            err_wrap(e, "provider \"%s\": client_secret_file", pv->name);
            return secret_fail(out, cap);
        }
        if (n > 0 && out[n - 1] == '\n')
            out[--n] = '\0';
        if (n > 0 && out[n - 1] == '\r')
            out[--n] = '\0';
        if (memchr(out, '\0', n)) {
            err_set(e, ERRC_FATAL,
                    "provider \"%s\": client_secret_file %.120s: contains a NUL byte", pv->name,
                    pv->client_secret_file);
            return secret_fail(out, cap);
        }
        if (n == 0) {
            err_set(e, ERRC_FATAL, "provider \"%s\": client_secret_file %.120s: empty secret",
                    pv->name, pv->client_secret_file);
            return secret_fail(out, cap);
        }
    } else if (pv->client_secret_env[0]) {
        const char *val = getenv(pv->client_secret_env);
        if (!val || !*val) {
            err_set(e, ERRC_FATAL, "provider \"%s\": client_secret_env %s is not set or empty",
                    pv->name, pv->client_secret_env);
            return secret_fail(out, cap);
        }
        n = strlen(val);
        if (n >= cap) {
            err_set(e, ERRC_FATAL, "provider \"%s\": client_secret_env %s: longer than %zu bytes",
                    pv->name, pv->client_secret_env, cap - 1);
            return secret_fail(out, cap);
        }
        memcpy(out, val, n + 1);
    } else {
        err_set(e, ERRC_FATAL, "provider \"%s\": no client secret source", pv->name);
        return secret_fail(out, cap);
    }
    if (log_secret(out, n) < 0)
        log_kv(LOGL_WARN, "provider_secret_not_scrubbed", "provider", pv->name, "reason",
               "shorter than LOG_SECRET_MIN_LEN or secret table full");
    if (len)
        *len = n;
    return 0;
}

const char *provider_profile_name(provider_profile p)
{
    switch (p) {
    case PROVIDER_PROFILE_STRIPE:
        return "stripe";
    case PROVIDER_PROFILE_OAUTH2:
        return "oauth2";
    case PROVIDER_PROFILE_SIM:
        return "sim";
    }
    return "unknown";
}

void providers_free(providers_t *p)
{
    free(p);
}
