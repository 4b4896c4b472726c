/* Unit tests of the pure parts of oauthqctl: argument parsing and times,
 * exit-code mapping, redaction of DLQ originals, the status projection
 * (sealed fields never printed), DLQ filters and replay eligibility, and
 * topic drift detection from a described configuration, `apikey create`
 * (its printed key verifies against its printed entry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/apikeys.h"
#include "ctl/ctl.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_dlq.h"
#include "ctl/ctl_replay.h"
#include "ctl/ctl_status.h"
#include "ctl/ctl_topics.h"

#define NOW 1800000000000LL

static void test_args_flags_and_positionals(void **state)
{
    (void)state;
    char *argv[] = {"a", "--json", "--reason=why not", "b", "--", "--c"};
    ctl_opts o;
    err_t e = {0};
    assert_int_equal(ctl_args_parse(6, argv, CTL_OPT_JSON | CTL_OPT_REASON, NOW, &o, &e), 0);
    assert_true(o.seen & CTL_OPT_JSON);
    assert_string_equal(o.reason, "why not");
    assert_int_equal(o.npos, 3);
    assert_string_equal(o.pos[0], "a");
    assert_string_equal(o.pos[1], "b");
    assert_string_equal(o.pos[2], "--c");
}

static void test_args_rejects_bad_usage(void **state)
{
    (void)state;
    ctl_opts o;
    err_t e = {0};
    char *unknown[] = {"--frobnicate"};
    assert_int_equal(ctl_args_parse(1, unknown, CTL_OPT_JSON, NOW, &o, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    char *not_allowed[] = {"--dry-run"};
    assert_int_equal(ctl_args_parse(1, not_allowed, CTL_OPT_JSON, NOW, &o, &e), -1);
    char *missing[] = {"--limit"};
    assert_int_equal(ctl_args_parse(1, missing, CTL_OPT_LIMIT, NOW, &o, &e), -1);
    char *zero[] = {"--limit", "0"};
    assert_int_equal(ctl_args_parse(2, zero, CTL_OPT_LIMIT, NOW, &o, &e), -1);
    char *twice[] = {"--json", "--json"};
    assert_int_equal(ctl_args_parse(2, twice, CTL_OPT_JSON, NOW, &o, &e), -1);
    char *value_on_bool[] = {"--json=1"};
    assert_int_equal(ctl_args_parse(1, value_on_bool, CTL_OPT_JSON, NOW, &o, &e), -1);
    char *bad_time[] = {"--since", "yesterday"};
    assert_int_equal(ctl_args_parse(2, bad_time, CTL_OPT_SINCE, NOW, &o, &e), -1);
    char *ok[] = {"--limit", "25", "--since", "2h"};
    assert_int_equal(ctl_args_parse(4, ok, CTL_OPT_LIMIT | CTL_OPT_SINCE, NOW, &o, &e), 0);
    assert_int_equal(o.limit, 25);
    assert_true(o.since_ms == NOW - 2 * 3600 * 1000LL);
    char *help[] = {"x", "--help"};
    assert_true(ctl_args_wants_help(2, help));
    char *nohelp[] = {"--", "--help"};
    assert_false(ctl_args_wants_help(2, nohelp));
}

static void test_args_times(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(ctl_args_rfc3339("2025-01-02T03:04:05Z", &ms), 0);
    assert_true(ms == 1735787045000LL);
    assert_int_equal(ctl_args_rfc3339("2025-01-02T03:04:05.5Z", &ms), 0);
    assert_true(ms == 1735787045500LL);
    assert_int_equal(ctl_args_rfc3339("2025-01-02T04:04:05.123+01:00", &ms), 0);
    assert_true(ms == 1735787045123LL);
    assert_int_equal(ctl_args_rfc3339("2025-01-02T03:04:05", &ms), -1); /* no zone */
    assert_int_equal(ctl_args_rfc3339("2025-13-02T03:04:05Z", &ms), -1);
    assert_int_equal(ctl_args_rfc3339("2025-01-02T03:04:05Zjunk", &ms), -1);
    err_t e = {0};
    assert_int_equal(ctl_args_time("15m", NOW, &ms, &e), 0);
    assert_true(ms == NOW - 15 * 60 * 1000LL);
    assert_int_equal(ctl_args_time("7d", NOW, &ms, &e), 0);
    assert_int_equal(ctl_args_time("7w", NOW, &ms, &e), -1);
    assert_int_equal(ctl_args_time("-5m", NOW, &ms, &e), -1);
}

static void test_args_partition_offset(void **state)
{
    (void)state;
    int32_t p;
    int64_t o;
    err_t e = {0};
    assert_int_equal(ctl_args_partoff("3:1234", &p, &o, &e), 0);
    assert_int_equal(p, 3);
    assert_true(o == 1234);
    assert_int_equal(ctl_args_partoff("1234", &p, &o, &e), -1);
    assert_int_equal(ctl_args_partoff("a:1", &p, &o, &e), -1);
    assert_int_equal(ctl_args_partoff("1:-1", &p, &o, &e), -1);
    assert_int_equal(ctl_args_partoff("1:", &p, &o, &e), -1);
}

static void test_exit_codes(void **state)
{
    (void)state;
    assert_int_equal(ctl_exit_code(ERRC_OK), 0);
    assert_int_equal(ctl_exit_code(ERRC_RETRIABLE), 1);
    assert_int_equal(ctl_exit_code(ERRC_PERMANENT), 2);
    assert_int_equal(ctl_exit_code(ERRC_FATAL), 3);
    /* Usage errors need no configuration or broker. */
    char *argv1[] = {"oauthqctl", "nope"};
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(devnull);
    assert_int_equal(ctl_main(2, argv1, devnull, devnull), 2);
    char *argv2[] = {"oauthqctl", "dlq", "--help"};
    assert_int_equal(ctl_main(3, argv2, devnull, devnull), 0);
    char *argv3[] = {"oauthqctl"};
    assert_int_equal(ctl_main(1, argv3, devnull, devnull), 2);
    fclose(devnull);
}

static void test_redact_json_original(void **state)
{
    (void)state;
    const char *orig = "{\"schema\":\"oauthq.callback.v1\",\"connection_id\":\"c1\","
                       "\"code\":\"ac_SECRET1\",\"code_verifier\":\"VERIFIER_SECRET\","
                       "\"nested\":{\"access_token\":\"TOKSECRET\",\"list\":[{\"code\":"
                       "\"ac_SECRET2\"}]},\"note\":\"see code=ac_SECRET3&x=1\","
                       "\"code_sha256\":\"abcd\",\"code\":\"ac_SECRET4\"}";
    char *r = ctl_dlq_redact(orig, strlen(orig));
    assert_non_null(r);
    assert_null(strstr(r, "SECRET"));
    assert_non_null(strstr(r, "\"code\":\"[REDACTED]\""));
    assert_non_null(strstr(r, "\"code_verifier\":\"[REDACTED]\""));
    assert_non_null(strstr(r, "\"connection_id\":\"c1\""));
    assert_non_null(strstr(r, "\"code_sha256\":\"abcd\"")); /* a hash is not a secret */
    assert_non_null(strstr(r, "x=1"));
    free(r);
}

static void test_redact_unparseable_original(void **state)
{
    (void)state;
    const char *cases[] = {
        "{\"schema\":\"oauthq.callback.v1\",\"code\":\"ac_SECRET1", /* truncated */
        "{\"code\" : \"ac_SECRET1\", \"x\":1,,}",                   /* invalid JSON */
        "{\"code\":12345SECRET,}",                                  /* bare value */
        "GET /oauth/callback?code=ac_SECRET1&state=STSECRET HTTP/1.1",
        "{\"wrapped\":\"{\\\"code\\\":\\\"ac_SECRET1\\\"}\",", /* escaped, broken */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *r = ctl_dlq_redact(cases[i], strlen(cases[i]));
        assert_non_null(r);
        if (strstr(r, "SECRET"))
            fail_msg("case %zu leaked: %s", i, r);
        assert_non_null(strstr(r, "[REDACTED]"));
        free(r);
    }
    const char *plain = "not json at all, no secrets here";
    char *r = ctl_dlq_redact(plain, strlen(plain));
    assert_string_equal(r, plain);
    free(r);
}

static void test_status_projection_never_prints_sealed(void **state)
{
    (void)state;
    const char *rec =
        "{\"schema\":\"oauthq.connection.v1\",\"id\":\"c1\",\"provider\":\"sim\","
        "\"status\":\"pending\",\"phase\":\"retrying\",\"reason\":null,\"version\":7,"
        "\"created_at_ms\":1735787045000,\"updated_at_ms\":1735787046000,"
        "\"code_sha256\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
        "\"code_sealed\":\"v1.d1.CODESEALED\",\"verifier_sealed\":null,"
        "\"received_at_ms\":1735787045000,\"deadline_ms\":1735787345000,\"attempts\":2,"
        "\"unknown_outcomes\":1,\"claimed\":true,\"retry_at_ms\":0,\"last_error\":\"http 503\","
        "\"ignored_codes\":1,\"last_ignored_sha256\":null,\"account_id\":null,"
        "\"livemode\":null,\"scope\":null,\"token_type\":null,\"expires_in\":-1,"
        "\"access_token_sealed\":\"v1.d1.ACCESSSEALED\",\"refresh_token_sealed\":\"\","
        "\"return_to\":null,\"callback_error\":null,"
        "\"end_user\":{\"id\":\"u_1\",\"email\":null,\"display_name\":null},"
        "\"organization\":null,\"tags\":{\"plan\":\"pro\"}}";
    cJSON *o = cJSON_Parse(rec);
    cJSON *p = ctl_status_project(o);
    char *s = cJSON_PrintUnformatted(p);
    assert_null(strstr(s, "SEALED"));
    assert_null(strstr(s, "v1.d1."));
    assert_non_null(strstr(s, "\"code_sealed\":\"sealed\""));
    assert_non_null(strstr(s, "\"verifier_sealed\":\"none\""));
    assert_non_null(strstr(s, "\"access_token_sealed\":\"sealed\""));
    assert_non_null(strstr(s, "\"refresh_token_sealed\":\"none\""));
    assert_non_null(strstr(s, "\"code_sha256_prefix\":\"0123456789ab\""));
    assert_null(strstr(s, "0123456789abc"));
    assert_non_null(strstr(s, "\"deadline\":\"2025-01-02T03:09:05.000Z\""));
    assert_non_null(strstr(s, "\"retry_at\":null"));
    assert_non_null(strstr(s, "\"claimed\":true"));
    assert_non_null(strstr(s, "\"last_error\":\"http 503\""));
    assert_non_null(strstr(s, "\"version\":7"));
    assert_non_null(strstr(s, "\"end_user\":{\"id\":\"u_1\""));
    assert_non_null(strstr(s, "\"organization\":null"));
    assert_non_null(strstr(s, "\"tags\":{\"plan\":\"pro\"}"));
    free(s);
    cJSON_Delete(p);
    cJSON_Delete(o);
    assert_null(ctl_status_project(NULL));
}

static ctl_dlq_entry entry(const char *key, const char *orig, const char *reason, int64_t at)
{
    ctl_dlq_entry d;
    memset(&d, 0, sizeof d);
    d.key = key;
    d.original = orig;
    d.reason = reason;
    d.at_ms = at;
    return d;
}

static void test_dlq_filter_and_replay_usable(void **state)
{
    (void)state;
    ctl_dlq_entry d = entry("c1", "{\"schema\":\"oauthq.callback.v1\",\"connection_id\":\"c1\"}",
                            "malformed record: bad field", 1000);
    ctl_dlq_filter all = {0, NULL, 0}, since = {2000, NULL, 0}, rs = {0, "malformed", 0},
                   rs2 = {0, "decode", 0};
    assert_true(ctl_dlq_match(&d, &all));
    assert_false(ctl_dlq_match(&d, &since));
    assert_true(ctl_dlq_match(&d, &rs));
    assert_false(ctl_dlq_match(&d, &rs2));

    char schema[64], why[CTL_WHY_MAX];
    assert_int_equal(ctl_replay_usable(&d, schema, sizeof schema, why), 1);
    assert_string_equal(schema, "oauthq.callback.v1");
    ctl_dlq_entry nokey = entry(NULL, d.original, "r", 0);
    assert_int_equal(ctl_replay_usable(&nokey, schema, sizeof schema, why), 0);
    ctl_dlq_entry mangled = entry("c?1", d.original, "r", 0);
    assert_int_equal(ctl_replay_usable(&mangled, schema, sizeof schema, why), 0);
    ctl_dlq_entry notjson = entry("c1", "garbage{", "r", 0);
    assert_int_equal(ctl_replay_usable(&notjson, schema, sizeof schema, why), 0);
    ctl_dlq_entry noschema = entry("c1", "{\"a\":1}", "r", 0);
    assert_int_equal(ctl_replay_usable(&noschema, schema, sizeof schema, why), 0);
    ctl_dlq_entry other = entry("c2", d.original, "r", 0);
    assert_int_equal(ctl_replay_usable(&other, schema, sizeof schema, why), 0);
    assert_non_null(strstr(why, "connection_id"));
    ctl_dlq_entry noorig = entry("c1", NULL, "r", 0);
    assert_int_equal(ctl_replay_usable(&noorig, schema, sizeof schema, why), 0);
    assert_true(ctl_replay_id_ok("AQAAAABrCaZuOgz4zZkTnhZw8fhEH6HftfPb9UrXkJiSZJHEaDQn6wk"));
    assert_false(ctl_replay_id_ok(""));
    assert_false(ctl_replay_id_ok("has space"));
}

static void good_topics(ctl_topic_desc d[CTL_TOPICS])
{
    memset(d, 0, sizeof(ctl_topic_desc) * CTL_TOPICS);
    for (int i = 0; i < CTL_TOPICS; i++) {
        d[i].suffix = ctl_topics_suffix(i);
        snprintf(d[i].name, sizeof d[i].name, "oauthq.%s", d[i].suffix);
        d[i].exists = 1;
        d[i].partitions = 4;
        d[i].replication = 3;
        snprintf(d[i].cleanup_policy, sizeof d[i].cleanup_policy, "%s", ctl_topics_policy(i));
        d[i].retention_ms = i == 3 ? CTL_RETENTION_14D : CTL_RETENTION_7D;
        d[i].min_isr = 2;
    }
}

static int has(const ctl_drift *dr, int n, const char *topic, const char *kind)
{
    for (int i = 0; i < n; i++)
        if (strcmp(dr[i].topic, topic) == 0 && strcmp(dr[i].kind, kind) == 0)
            return 1;
    return 0;
}

static void test_drift(void **state)
{
    (void)state;
    ctl_topic_desc d[CTL_TOPICS];
    ctl_drift dr[CTL_DRIFT_MAX];
    good_topics(d);
    assert_int_equal(ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX), 0);
    /* Partitions added everywhere (equal counts, so the old check passed):
     * keys would remap away from their state, drift on the co-partitioned
     * topics; the dlq is not routed by key. */
    for (int i = 0; i < CTL_TOPICS; i++)
        d[i].partitions = 8;
    int n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 3);
    assert_true(has(dr, n, "callbacks", "partitions_above_config"));
    assert_true(has(dr, n, "connections", "partitions_above_config"));
    assert_true(has(dr, n, "status", "partitions_above_config"));

    good_topics(d);
    snprintf(d[1].cleanup_policy, sizeof d[1].cleanup_policy, "compact,delete");
    snprintf(d[0].cleanup_policy, sizeof d[0].cleanup_policy, "compact");
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 2);
    assert_true(has(dr, n, "connections", "cleanup_policy"));
    assert_true(has(dr, n, "callbacks", "cleanup_policy"));

    good_topics(d);
    d[2].partitions = 2; /* status: fewer than configured and differs */
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_true(has(dr, n, "status", "partitions_below_config"));
    assert_true(has(dr, n, "callbacks", "partitions_mismatch"));

    good_topics(d);
    d[1].partitions = 6; /* more than configured and differs from callbacks */
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 2);
    assert_true(has(dr, n, "connections", "partitions_above_config"));
    assert_true(has(dr, n, "callbacks", "partitions_mismatch"));

    good_topics(d);
    d[3].partitions = 8; /* dlq: more is fine */
    assert_int_equal(ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX), 0);
    d[4].partitions = 6; /* webhooks must match status (the dispatcher) */
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 1);
    assert_true(has(dr, n, "webhooks", "partitions_mismatch"));

    good_topics(d);
    d[3].partitions = 1; /* dlq is not co-partitioned: only below config */
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 1);
    assert_true(has(dr, n, "dlq", "partitions_below_config"));

    good_topics(d);
    d[3].exists = 0;
    d[0].retention_ms = 3600000;
    d[1].min_isr = 1;
    d[2].min_isr = 4;
    d[2].replication = 3;
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_true(has(dr, n, "dlq", "missing"));
    assert_true(has(dr, n, "callbacks", "retention_below_spec"));
    assert_true(has(dr, n, "connections", "min_insync_below_config"));
    assert_true(has(dr, n, "status", "min_insync_above_replication"));
    assert_int_equal(n, 4);

    good_topics(d);
    d[0].retention_ms = -1; /* infinite retention is fine */
    d[1].replication = 1;
    n = ctl_topics_drift(d, 4, 3, dr, CTL_DRIFT_MAX);
    assert_int_equal(n, 2); /* replication below config, and min.insync 2 > 1 */
    assert_true(has(dr, n, "connections", "replication_below_config"));
    /* Single-node defaults: replication 1, min.insync 1. */
    good_topics(d);
    for (int i = 0; i < CTL_TOPICS; i++) {
        d[i].replication = 1;
        d[i].min_isr = 1;
    }
    assert_int_equal(ctl_topics_drift(d, 4, 1, dr, CTL_DRIFT_MAX), 0);
    /* The output is bounded by cap. */
    good_topics(d);
    for (int i = 0; i < CTL_TOPICS; i++)
        d[i].exists = 0;
    assert_int_equal(ctl_topics_drift(d, 4, 1, dr, 2), 2);
}

/* `apikey create`: the key printed once verifies against the entry it
 * prints, with exactly the scopes asked for. */
static void test_apikey_create(void **state)
{
    (void)state;
    char *argv[] = {"oauthqctl", "apikey", "create", "--scopes=connections:write,tokens:read",
                    "--kid",     "plat1",  "--json"};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(out);
    assert_int_equal(ctl_main(7, argv, out, devnull), 0);
    fclose(out);
    cJSON *doc = cJSON_Parse(buf);
    assert_non_null(doc);
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(doc, "key");
    const cJSON *entry = cJSON_GetObjectItemCaseSensitive(doc, "entry");
    assert_true(cJSON_IsString(key) && cJSON_IsObject(entry));
    assert_int_equal(strncmp(key->valuestring, "oq_plat1_", 9), 0);
    cJSON *file = cJSON_CreateObject();
    cJSON *keys = cJSON_AddObjectToObject(file, "keys");
    cJSON_AddItemToObject(keys, "plat1", cJSON_Duplicate(entry, 1));
    char *text = cJSON_PrintUnformatted(file);
    err_t e = {0};
    apikeys_t *k = apikeys_parse(text, strlen(text), "t", &e);
    assert_non_null(k);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "Bearer %s", key->valuestring);
    assert_int_equal(apikeys_check(k, hdr, APIKEYS_CONNECTIONS_WRITE | APIKEYS_TOKENS_READ, NULL),
                     APIKEYS_OK);
    assert_int_equal(apikeys_check(k, hdr, APIKEYS_CONNECTIONS_READ, NULL), APIKEYS_FORBIDDEN);
    apikeys_free(k);
    free(text);
    cJSON_Delete(file);
    cJSON_Delete(doc);
    free(buf);
    /* Usage errors: no scopes, an unknown scope, a bad kid. */
    char *bad1[] = {"oauthqctl", "apikey", "create"};
    assert_int_equal(ctl_main(3, bad1, devnull, devnull), 2);
    char *bad2[] = {"oauthqctl", "apikey", "create", "--scopes", "admin"};
    assert_int_equal(ctl_main(5, bad2, devnull, devnull), 2);
    char *bad3[] = {"oauthqctl", "apikey", "create", "--scopes", "tokens:read", "--kid", "A"};
    assert_int_equal(ctl_main(7, bad3, devnull, devnull), 2);
    fclose(devnull);
}

/* ctl.h's command list is the table's, in its order: every command `oauthqctl --help`
 * lists stands in the header (a command added to ctl.c and not to ctl.h fails here). Run
 * from the repository root (scripts/run-tests does). */
static void test_header_lists_every_command(void **state)
{
    (void)state;
    char *help = NULL;
    size_t hlen = 0;
    FILE *out = open_memstream(&help, &hlen);
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(out);
    assert_non_null(devnull);
    char *argv[] = {"oauthqctl", "--help"};
    assert_int_equal(ctl_main(2, argv, out, devnull), 0);
    fclose(out);
    fclose(devnull);
    FILE *h = fopen("ctl/ctl.h", "r");
    assert_non_null(h);
    char header[8192];
    size_t n = fread(header, 1, sizeof header - 1, h);
    fclose(h);
    header[n] = '\0';
    char *list = strstr(header, "Commands (");
    char *end = list ? strstr(list, "(the table in ctl.c") : NULL;
    assert_non_null(end);
    *end = '\0';
    const char *line = strstr(help, "Commands:\n");
    assert_non_null(line);
    int commands = 0;
    char *pos = list; /* header entries must come in the table's order */
    for (line = strchr(line, '\n') + 1; strncmp(line, "  --help", 8) != 0;
         line = strchr(line, '\n') + 1) {
        char name[32], entry[48];
        assert_int_equal(sscanf(line, " %31[a-z]", name), 1);
        snprintf(entry, sizeof entry, " *   %s ", name);
        char *at = strstr(pos, entry);
        if (!at)
            fail_msg("ctl/ctl.h does not list the command %s (or not in the table's order)", name);
        pos = at + strlen(entry);
        commands++;
    }
    assert_true(commands >= 9);
    /* ... and nothing more: as many entries as commands. */
    int entries = 0;
    for (const char *p = list; (p = strstr(p, "\n *   ")) != NULL; p++)
        entries++;
    assert_int_equal(entries, commands);
    free(help);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args_flags_and_positionals),
        cmocka_unit_test(test_args_rejects_bad_usage),
        cmocka_unit_test(test_args_times),
        cmocka_unit_test(test_args_partition_offset),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_redact_json_original),
        cmocka_unit_test(test_redact_unparseable_original),
        cmocka_unit_test(test_status_projection_never_prints_sealed),
        cmocka_unit_test(test_dlq_filter_and_replay_usable),
        cmocka_unit_test(test_drift),
        cmocka_unit_test(test_apikey_create),
        cmocka_unit_test(test_header_lists_every_command),
    };
    return cmocka_run_group_tests_name("unit_ctl", tests, NULL, NULL);
}
