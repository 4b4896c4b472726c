/* Unit tests of common/providers: the SPEC §7 file shape, strict validation
 * (unknown keys, wrong types, ranges, duplicates), error messages naming the
 * file, entry and key, and client secret loading without leaking values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/providers.h"

#define ORIGIN "providers.json"

/* The SPEC §7 example, verbatim except for a concrete ASCII client_id. */
static const char spec_example[] =
    "{\"providers\": [\n"
    "  {\"name\": \"stripe\", \"profile\": \"stripe\",\n"
    "   \"authorize_url\": \"https://connect.stripe.com/oauth/authorize\",\n"
    "   \"token_url\": \"https://connect.stripe.com/oauth/token\",\n"
    "   \"deauthorize_url\": \"https://connect.stripe.com/oauth/deauthorize\",\n"
    "   \"client_id\": \"ca_32D88BD1qLklliziD7gYQvctJIhWBSQ7\", \"client_secret_file\": "
    "\"/run/secrets/stripe\",\n"
    "   \"scope\": \"read_write\", \"pkce\": false, \"token_auth\": \"client_secret_post\",\n"
    "   \"code_ttl_s\": 300, \"issuer\": null}\n"
    "]}\n";

/* A minimal valid entry as key/value JSON fragments. */
static const char *const base_kv[][2] = {
    {"name", "\"sim\""},
    {"profile", "\"sim\""},
    {"authorize_url", "\"http://127.0.0.1:9000/oauth/authorize\""},
    {"token_url", "\"http://127.0.0.1:9000/oauth/token\""},
    {"client_id", "\"ca_sim\""},
    {"client_secret_env", "\"SIM_SECRET\""},
    {"token_auth", "\"client_secret_basic\""},
    {"code_ttl_s", "60"},
};
#define NBASE (sizeof base_kv / sizeof base_kv[0])

static char doc[8192];

/* {"providers":[<entry>]} where entry = base minus `omit`, with `key` set to `val` (replacing
 * or adding; val NULL = no override). */
static const char *one(const char *omit, const char *key, const char *val)
{
    size_t n = (size_t)snprintf(doc, sizeof doc, "{\"providers\": [{");
    int first = 1, replaced = 0;
    for (size_t i = 0; i < NBASE; i++) {
        const char *k = base_kv[i][0], *v = base_kv[i][1];
        if (omit && strcmp(omit, k) == 0)
            continue;
        if (key && strcmp(key, k) == 0) {
            v = val;
            replaced = 1;
        }
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s\"%s\": %s", first ? "" : ", ", k, v);
        first = 0;
    }
    if (key && !replaced)
        n += (size_t)snprintf(doc + n, sizeof doc - n, ", \"%s\": %s", key, val);
    snprintf(doc + n, sizeof doc - n, "}]}");
    return doc;
}

static providers_t *parse(const char *json, err_t *e)
{
    err_clear(e);
    return providers_parse(json, strlen(json), ORIGIN, e);
}

/* Parsing must fail with ERRC_FATAL and a message containing each of the needles. */
static void expect_fail(const char *json, const char *needle1, const char *needle2)
{
    err_t e = {0};
    providers_t *p = parse(json, &e);
    if (p)
        fail_msg("parsed but should not: %s", json);
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, ORIGIN));
    if (needle1 && !strstr(e.msg, needle1))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle1);
    if (needle2 && !strstr(e.msg, needle2))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, needle2);
}

static void expect_ok(const char *json)
{
    err_t e = {0};
    providers_t *p = parse(json, &e);
    if (!p)
        fail_msg("refused: %s (%s)", e.msg, json);
    providers_free(p);
}

/* ---- shape -------------------------------------------------------------------- */

static void test_spec_example_parses(void **state)
{
    (void)state;
    err_t e = {0};
    providers_t *p = parse(spec_example, &e);
    assert_non_null(p);
    assert_int_equal(providers_count(p), 1);
    const provider_t *pv = providers_at(p, 0);
    assert_non_null(pv);
    assert_null(providers_at(p, 1));
    assert_ptr_equal(providers_find(p, "stripe"), pv);
    assert_null(providers_find(p, "other"));
    assert_null(providers_find(p, NULL));
    assert_string_equal(pv->name, "stripe");
    assert_int_equal(pv->profile, PROVIDER_PROFILE_STRIPE);
    assert_string_equal(provider_profile_name(pv->profile), "stripe");
    assert_string_equal(pv->authorize_url, "https://connect.stripe.com/oauth/authorize");
    assert_string_equal(pv->token_url, "https://connect.stripe.com/oauth/token");
    assert_string_equal(pv->deauthorize_url, "https://connect.stripe.com/oauth/deauthorize");
    assert_string_equal(pv->client_id, "ca_32D88BD1qLklliziD7gYQvctJIhWBSQ7");
    assert_string_equal(pv->client_secret_file, "/run/secrets/stripe");
    assert_string_equal(pv->client_secret_env, "");
    assert_string_equal(pv->scope, "read_write");
    assert_int_equal(pv->pkce, 0);
    assert_int_equal(pv->token_auth, PROVIDER_AUTH_POST);
    assert_int_equal(pv->code_ttl_s, 300);
    assert_string_equal(pv->issuer, "");
    assert_int_equal(pv->refresh_rotation, 0); /* stripe: refresh tokens are not rotated */
    assert_int_equal(pv->refresh_ahead_s, 0);
    providers_free(p);
    providers_free(NULL);
    assert_int_equal(providers_count(NULL), 0);
}

static void test_minimal_entry_defaults(void **state)
{
    (void)state;
    err_t e = {0};
    providers_t *p = parse(one(NULL, NULL, NULL), &e);
    assert_non_null(p);
    const provider_t *pv = providers_find(p, "sim");
    assert_non_null(pv);
    assert_int_equal(pv->profile, PROVIDER_PROFILE_SIM);
    assert_string_equal(provider_profile_name(PROVIDER_PROFILE_OAUTH2), "oauth2");
    assert_string_equal(provider_profile_name(PROVIDER_PROFILE_SIM), "sim");
    assert_string_equal(pv->deauthorize_url, "");
    assert_string_equal(pv->scope, "");
    assert_string_equal(pv->issuer, "");
    assert_string_equal(pv->client_secret_file, "");
    assert_string_equal(pv->client_secret_env, "SIM_SECRET");
    assert_int_equal(pv->pkce, 0);
    assert_int_equal(pv->token_auth, PROVIDER_AUTH_BASIC);
    assert_int_equal(pv->code_ttl_s, 60);
    assert_int_equal(pv->refresh_rotation, 1); /* the safe side by default */
    assert_int_equal(pv->refresh_ahead_s, 0);
    providers_free(p);

    p = parse(one(NULL, "refresh_rotation", "false"), &e);
    assert_non_null(p);
    assert_int_equal(providers_at(p, 0)->refresh_rotation, 0);
    providers_free(p);
    p = parse(one(NULL, "refresh_ahead_s", "300"), &e);
    assert_non_null(p);
    assert_int_equal(providers_at(p, 0)->refresh_ahead_s, 300);
    providers_free(p);
    expect_fail(one(NULL, "refresh_rotation", "1"),
                "key \"refresh_rotation\": must be true or false", NULL);
    expect_fail(one(NULL, "refresh_ahead_s", "-1"), "key \"refresh_ahead_s\"", NULL);
    expect_fail(one(NULL, "refresh_ahead_s", "86401"), "key \"refresh_ahead_s\"", NULL);
    expect_fail(one(NULL, "refresh_ahead_s", "1.5"), "key \"refresh_ahead_s\"", NULL);

    p = parse(one(NULL, "pkce", "true"), &e);
    assert_non_null(p);
    assert_int_equal(providers_at(p, 0)->pkce, 1);
    providers_free(p);
    p = parse(one(NULL, "deauthorize_url", "null"), &e);
    assert_non_null(p);
    assert_string_equal(providers_at(p, 0)->deauthorize_url, "");
    providers_free(p);
    expect_ok(one(NULL, "profile", "\"oauth2\""));
    expect_ok(one(NULL, "scope", "\"openid profile email\""));
}

static void test_each_required_key_missing(void **state)
{
    (void)state;
    static const char *const required[] = {"name",      "profile",    "authorize_url", "token_url",
                                           "client_id", "token_auth", "code_ttl_s"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "missing required key \"%s\"", required[i]);
        expect_fail(one(required[i], NULL, NULL), "providers[0]", needle);
    }
    expect_fail("{}", "missing required key \"providers\"", NULL);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    /* Top level. */
    err_t e = {0};
    char buf[4200];
    snprintf(buf, sizeof buf, "%.*s, \"extra\": 1}", (int)(strlen(one(NULL, NULL, NULL)) - 1), doc);
    assert_null(parse(buf, &e));
    assert_string_equal(e.msg, ORIGIN ": unknown key \"extra\"");

    /* In the second entry: a typo is reported as unknown, not as a missing key. */
    char first[2048];
    const char *d = one(NULL, "name", "\"a\"");
    snprintf(first, sizeof first, "%.*s", (int)(strlen(d) - 2 - 15), d + 15); /* the {...} */
    one("token_url", "tokn_url", "\"https://x.test/token\"");
    char second[2048];
    snprintf(second, sizeof second, "%.*s", (int)(strlen(doc) - 2 - 15), doc + 15);
    snprintf(buf, sizeof buf, "{\"providers\": [%s, %s]}", first, second);
    assert_null(parse(buf, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_string_equal(e.msg, ORIGIN ": providers[1]: unknown key \"tokn_url\"");

    /* Keys are case-sensitive. */
    expect_fail(one(NULL, "Scope", "\"x\""), "unknown key \"Scope\"", NULL);
    /* Odd key bytes are shown sanitized and bounded. */
    expect_fail(one(NULL, "a\\nb\\\"c", "1"), "unknown key \"a?b?c\"", NULL);
    expect_fail(one(NULL, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "1"),
                "kkkk...\"", NULL);
    /* Duplicate keys are refused (cJSON would keep the first silently). */
    expect_fail(one(NULL, "name", "\"a\", \"name\": \"b\""), "duplicate key \"name\"", NULL);
    expect_fail("{\"providers\": [], \"providers\": []}", "duplicate key \"providers\"", NULL);
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_fail("[]", "top level must be an object", NULL);
    expect_fail("\"providers\"", "top level must be an object", NULL);
    expect_fail("{\"providers\": {}}", "\"providers\": must be an array", NULL);
    expect_fail("{\"providers\": []}", "1..32 entries", NULL);
    expect_fail("{\"providers\": [1]}", "providers[0]: must be an object", NULL);
    expect_fail(one(NULL, "name", "5"), "key \"name\": must be a string", NULL);
    expect_fail(one(NULL, "profile", "null"), "key \"profile\": must be a string", NULL);
    expect_fail(one(NULL, "authorize_url", "[]"), "key \"authorize_url\": must be a string", NULL);
    expect_fail(one(NULL, "client_id", "{}"), "key \"client_id\"", NULL);
    expect_fail(one(NULL, "scope", "null"), "key \"scope\": must be a string", NULL);
    expect_fail(one(NULL, "pkce", "\"true\""), "key \"pkce\": must be true or false", NULL);
    expect_fail(one(NULL, "pkce", "1"), "key \"pkce\"", NULL);
    expect_fail(one(NULL, "pkce", "null"), "key \"pkce\"", NULL);
    expect_fail(one(NULL, "code_ttl_s", "\"300\""), "key \"code_ttl_s\": must be an integer", NULL);
    expect_fail(one(NULL, "code_ttl_s", "1.5"), "key \"code_ttl_s\"", NULL);
    expect_fail(one(NULL, "issuer", "5"), "key \"issuer\": must be a string or null", NULL);
    expect_fail(one(NULL, "deauthorize_url", "false"), "key \"deauthorize_url\"", NULL);
    expect_fail(one(NULL, "client_secret_env", "null"), "key \"client_secret_env\"", NULL);
    /* Errors after the name is known also name the provider. */
    expect_fail(one(NULL, "token_url", "1"), "providers[0]: key \"token_url\"", "\"sim\"");
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_fail(one(NULL, "profile", "\"github\""), "key \"profile\": must be one of", NULL);
    expect_fail(one(NULL, "profile", "\"Stripe\""), "key \"profile\"", NULL);
    expect_fail(one(NULL, "token_auth", "\"private_key_jwt\""), "key \"token_auth\"", NULL);
    expect_fail(one(NULL, "name", "\"Stripe\""), "key \"name\": must match", NULL);
    expect_fail(one(NULL, "name", "\"\""), "key \"name\"", NULL);
    expect_fail(one(NULL, "name", "\"a23456789012345678901234567890123\""), "key \"name\"", NULL);
    expect_ok(one(NULL, "name", "\"a2345678901234567890123456789012\""));
    expect_ok(one(NULL, "name", "\"my_prov-2\""));
    expect_fail(one(NULL, "token_url", "\"ftp://x.test/t\""), "key \"token_url\"", NULL);
    expect_fail(one(NULL, "token_url", "\"/oauth/token\""), "key \"token_url\"", NULL);
    expect_fail(one(NULL, "token_url", "\"https://\""), "must name a host", NULL);
    expect_fail(one(NULL, "token_url", "\"https://x.test/a b\""), "key \"token_url\"", NULL);
    expect_fail(one(NULL, "token_url", "\"https://x.test/\\t\""), "key \"token_url\"", NULL);
    expect_fail(one(NULL, "token_url", "\"https://x.test/#frag\""), "fragment", NULL);
    expect_fail(one(NULL, "deauthorize_url", "\"\""), "key \"deauthorize_url\"", NULL);
    char longurl[700];
    int n = snprintf(longurl, sizeof longurl, "\"https://x.test/");
    memset(longurl + n, 'a', 511 - 15);
    snprintf(longurl + n + 511 - 15, sizeof longurl - (size_t)n - 496, "\"");
    expect_ok(one(NULL, "token_url", longurl)); /* exactly 511 bytes */
    snprintf(longurl + n + 511 - 15, sizeof longurl - (size_t)n - 496, "a\"");
    expect_fail(one(NULL, "token_url", longurl), "key \"token_url\": longer than 511", NULL);
    expect_fail(one(NULL, "client_id", "\"\""), "key \"client_id\"", NULL);
    expect_fail(one(NULL, "client_id", "\"ca x\""), "key \"client_id\"", NULL);
    expect_fail(one(NULL, "client_secret_env", "\"sim_secret\""), "key \"client_secret_env\"",
                NULL);
    expect_fail(one(NULL, "client_secret_env", "\"\""), "key \"client_secret_env\"", NULL);
    expect_fail(one(NULL, "scope", "\"a\\nb\""), "key \"scope\"", NULL);
    char longscope[300];
    longscope[0] = '"';
    memset(longscope + 1, 's', 256);
    snprintf(longscope + 257, sizeof longscope - 257, "\"");
    expect_fail(one(NULL, "scope", longscope), "key \"scope\": longer than 255", NULL);
}

static void test_code_ttl_bounds(void **state)
{
    (void)state;
    expect_fail(one(NULL, "code_ttl_s", "0"), "key \"code_ttl_s\"", "[1, 3600]");
    expect_fail(one(NULL, "code_ttl_s", "-1"), "key \"code_ttl_s\"", NULL);
    expect_fail(one(NULL, "code_ttl_s", "3601"), "key \"code_ttl_s\"", NULL);
    expect_fail(one(NULL, "code_ttl_s", "1e400"), "key \"code_ttl_s\"", NULL);
    err_t e = {0};
    providers_t *p = parse(one(NULL, "code_ttl_s", "1"), &e);
    assert_non_null(p);
    assert_int_equal(providers_at(p, 0)->code_ttl_s, 1);
    providers_free(p);
    p = parse(one(NULL, "code_ttl_s", "3600"), &e);
    assert_non_null(p);
    assert_int_equal(providers_at(p, 0)->code_ttl_s, 3600);
    providers_free(p);
}

static void test_secret_sources(void **state)
{
    (void)state;
    /* Both. */
    expect_fail(one(NULL, "client_secret_file", "\"/run/secrets/x\""), "client_secret_file",
                "client_secret_env");
    /* Neither. */
    expect_fail(one("client_secret_env", NULL, NULL),
                "missing required key \"client_secret_file\" or \"client_secret_env\"", NULL);
    /* File only. */
    err_t e = {0};
    providers_t *p = parse(one("client_secret_env", "client_secret_file", "\"/run/s\""), &e);
    assert_non_null(p);
    assert_string_equal(providers_at(p, 0)->client_secret_file, "/run/s");
    assert_string_equal(providers_at(p, 0)->client_secret_env, "");
    providers_free(p);
    expect_fail(one("client_secret_env", "client_secret_file", "\"\""), "client_secret_file", NULL);
}

static void test_issuer_null_vs_string(void **state)
{
    (void)state;
    err_t e = {0};
    providers_t *p = parse(one(NULL, "issuer", "null"), &e);
    assert_non_null(p);
    assert_string_equal(providers_at(p, 0)->issuer, "");
    providers_free(p);
    p = parse(one(NULL, "issuer", "\"https://issuer.example\""), &e);
    assert_non_null(p);
    assert_string_equal(providers_at(p, 0)->issuer, "https://issuer.example");
    providers_free(p);
    expect_fail(one(NULL, "issuer", "\"\""), "key \"issuer\"", NULL);
    expect_fail(one(NULL, "issuer", "\"issuer.example\""), "key \"issuer\"", NULL);
}

static void test_duplicates_and_count(void **state)
{
    (void)state;
    char entry[2048];
    const char *d = one(NULL, NULL, NULL);
    snprintf(entry, sizeof entry, "%.*s", (int)(strlen(d) - 2 - 15), d + 15);
    static char buf[80000];
    snprintf(buf, sizeof buf, "{\"providers\": [%s, %s]}", entry, entry);
    expect_fail(buf, "providers[1]: duplicate provider name \"sim\"", "providers[0]");

    /* 32 distinct entries parse; 33 do not. */
    size_t n = (size_t)snprintf(buf, sizeof buf, "{\"providers\": [");
    for (int i = 0; i < 33; i++) {
        char name[32];
        snprintf(name, sizeof name, "\"p%d\"", i);
        d = one(NULL, "name", name);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%.*s", i ? ", " : "",
                              (int)(strlen(d) - 2 - 15), d + 15);
        if (i == 31) {
            static char b32[80000 + 8];
            snprintf(b32, sizeof b32, "%s]}", buf);
            err_t e = {0};
            providers_t *p = parse(b32, &e);
            assert_non_null(p);
            assert_int_equal(providers_count(p), 32);
            assert_string_equal(providers_at(p, 31)->name, "p31");
            assert_ptr_equal(providers_find(p, "p17"), providers_at(p, 17));
            providers_free(p);
        }
    }
    snprintf(buf + n, sizeof buf - n, "]}");
    expect_fail(buf, "1..32 entries", NULL);
}

static void test_malformed_json(void **state)
{
    (void)state;
    expect_fail("", "empty", NULL);
    expect_fail("{\"providers\": [", "invalid JSON", NULL);
    expect_fail("{\"providers\": []}\n{", "trailing data", NULL);
    expect_fail("{\"providers\": [],}", "invalid JSON", NULL);
    /* \u0000 would let cJSON truncate "name\u0000junk" to "name". */
    expect_fail(one(NULL, "name", "\"sim\\u0000junk\""), "NUL", NULL);
    /* An escaped backslash followed by u0000 is ordinary text (and here an unknown key). */
    expect_fail(one(NULL, "x\\\\u0000", "1"), "unknown key \"x?u0000\"", NULL);
    /* Embedded NUL byte. */
    err_t e = {0};
    const char raw[] = "{\"providers\": [\0]}";
    assert_null(providers_parse(raw, sizeof raw - 1, ORIGIN, &e));
    assert_non_null(strstr(e.msg, "NUL"));
    /* Only `len` bytes are read: a valid prefix parses. */
    const char *d = one(NULL, NULL, NULL);
    char padded[4096];
    snprintf(padded, sizeof padded, "%sGARBAGE", d);
    providers_t *p = providers_parse(padded, strlen(d), ORIGIN, &e);
    assert_non_null(p);
    providers_free(p);
    /* Trailing whitespace is fine. */
    snprintf(padded, sizeof padded, "%s \n\t\r\n", d);
    expect_ok(padded);
}

/* ---- files and secrets ------------------------------------------------------------ */

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/oauthq-providers-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, spec_example);
    err_t e = {0};
    providers_t *p = providers_load(path, &e);
    assert_non_null(p);
    assert_non_null(providers_find(p, "stripe"));
    providers_free(p);

    /* Messages name the file path given. */
    write_file(path, "{\"providers\": [], \"x\": 1}");
    assert_null(providers_load(path, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, path));

    unlink(path);
    assert_null(providers_load(path, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, path));
    assert_null(providers_load("", &e));
    assert_null(providers_load(NULL, &e));
}

static char captured[4][LOG_LINE_MAX];
static int ncaptured;

static void sink(const char *line, void *ud)
{
    (void)ud;
    if (ncaptured < 4)
        snprintf(captured[ncaptured++], LOG_LINE_MAX, "%s", line);
}

static void test_client_secret_file_and_env(void **state)
{
    (void)state;
    char path[] = "/tmp/oauthq-psecret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "sk_file_secret_value\n", 21), 21);
    close(fd);

    char filev[600];
    snprintf(filev, sizeof filev, "\"%s\"", path);
    err_t e = {0};
    providers_t *p = parse(one("client_secret_env", "client_secret_file", filev), &e);
    assert_non_null(p);
    const provider_t *pv = providers_at(p, 0);
    char out[128];
    size_t len = 0;
    log_secrets_clear();
    assert_int_equal(providers_client_secret(pv, out, sizeof out, &len, &e), 0);
    assert_string_equal(out, "sk_file_secret_value");
    assert_int_equal(len, 20);

    /* Registered with the log: scrubbed from any later line. */
    assert_int_equal(log_init("unit", "debug", "text", &e), 0);
    ncaptured = 0;
    log_set_sink(sink, NULL);
    log_kv(LOGL_INFO, "oops", "detail", out);
    log_set_sink(NULL, NULL);
    assert_int_equal(ncaptured, 1);
    assert_null(strstr(captured[0], "sk_file_secret_value"));

    /* Too small a buffer: error without the value, buffer wiped. */
    char small[8];
    assert_int_equal(providers_client_secret(pv, small, sizeof small, &len, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_null(strstr(e.msg, "sk_file"));
    assert_null(strstr(e.msg, "secret_value"));
    for (size_t i = 0; i < sizeof small; i++)
        assert_int_equal(small[i], 0);

    /* Missing file: names provider and path, nothing secret. */
    unlink(path);
    assert_int_equal(providers_client_secret(pv, out, sizeof out, &len, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, "\"sim\""));
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "client_secret_file"));
    assert_null(strstr(e.msg, "sk_file_secret_value"));
    assert_null(strstr(e.msg, "secret_value"));

    /* Empty file. */
    write_file(path, "\n");
    assert_int_equal(providers_client_secret(pv, out, sizeof out, &len, &e), -1);
    assert_non_null(strstr(e.msg, "empty"));
    unlink(path);
    providers_free(p);

    /* Environment variable. */
    p = parse(one(NULL, "client_secret_env", "\"OAUTHQ_TEST_PROVIDER_SECRET\""), &e);
    assert_non_null(p);
    pv = providers_at(p, 0);
    unsetenv("OAUTHQ_TEST_PROVIDER_SECRET");
    assert_int_equal(providers_client_secret(pv, out, sizeof out, &len, &e), -1);
    assert_non_null(strstr(e.msg, "OAUTHQ_TEST_PROVIDER_SECRET"));
    assert_non_null(strstr(e.msg, "\"sim\""));
    setenv("OAUTHQ_TEST_PROVIDER_SECRET", "env-secret-value-123", 1);
    assert_int_equal(providers_client_secret(pv, out, sizeof out, &len, &e), 0);
    assert_string_equal(out, "env-secret-value-123");
    assert_int_equal(len, 20);
    assert_int_equal(providers_client_secret(pv, small, sizeof small, &len, &e), -1);
    assert_null(strstr(e.msg, "env-secret"));
    assert_non_null(strstr(e.msg, "OAUTHQ_TEST_PROVIDER_SECRET"));
    unsetenv("OAUTHQ_TEST_PROVIDER_SECRET");
    providers_free(p);
    log_secrets_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_example_parses),
        cmocka_unit_test(test_minimal_entry_defaults),
        cmocka_unit_test(test_each_required_key_missing),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_code_ttl_bounds),
        cmocka_unit_test(test_secret_sources),
        cmocka_unit_test(test_issuer_null_vs_string),
        cmocka_unit_test(test_duplicates_and_count),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_client_secret_file_and_env),
    };
    return cmocka_run_group_tests_name("unit_providers", tests, NULL, NULL);
}
