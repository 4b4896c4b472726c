/* Unit tests of common/: err convention, config loading, log redaction,
 * Kafka error classification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/kafka.h"
#include "common/log.h"

/* ---- err ---------------------------------------------------------------- */

static void test_err_set_and_wrap(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(err_set(&e, ERRC_PERMANENT, "bad %s", "thing"), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_string_equal(e.msg, "bad thing");
    err_wrap(&e, "loading %s", "file.json");
    assert_string_equal(e.msg, "loading file.json: bad thing");
    assert_int_equal(e.cls, ERRC_PERMANENT);
    /* Long messages are truncated, never overflow. */
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(&e, ERRC_FATAL, "%s", big);
    assert_int_equal(strlen(e.msg), ERR_MSG_MAX - 1);
    err_wrap(&e, "%s", big);
    assert_true(strlen(e.msg) < ERR_MSG_MAX);
    err_clear(&e);
    assert_int_equal(e.cls, ERRC_OK);
    assert_string_equal(errc_name(ERRC_RETRIABLE), "retriable");
    assert_int_equal(err_set(NULL, ERRC_FATAL, "x"), -1);
}

/* ---- config ------------------------------------------------------------- */

static const char *fake_env[16][2];

static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < 16 && fake_env[i][0]; i++)
        if (strcmp(fake_env[i][0], name) == 0)
            return fake_env[i][1];
    return NULL;
}

static void set_env(int i, const char *k, const char *v)
{
    fake_env[i][0] = k;
    fake_env[i][1] = v;
    fake_env[i + 1][0] = NULL;
}

static void test_config_defaults(void **state)
{
    (void)state;
    set_env(0, NULL, NULL);
    config_t c;
    err_t e = {0};
    assert_int_equal(config_load(&c, fake_getenv, &e), 0);
    assert_string_equal(c.kafka_bootstrap, "127.0.0.1:9092");
    assert_string_equal(c.topic_prefix, "oauthq.");
    assert_int_equal(c.topic_partitions, 4);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(c.token_refresh_wait_ms, 10000);
    char t[128];
    assert_int_equal(config_topic(&c, "callbacks", t, sizeof t, &e), 0);
    assert_string_equal(t, "oauthq.callbacks");
}

static void test_config_overrides_and_errors(void **state)
{
    (void)state;
    config_t c;
    err_t e = {0};
    set_env(0, "OAUTHQ_TOPIC_PARTITIONS", "12");
    set_env(1, "OAUTHQ_PUBLIC_URL", "https://example.test/");
    assert_int_equal(config_load(&c, fake_getenv, &e), 0);
    assert_int_equal(c.topic_partitions, 12);
    assert_string_equal(c.public_url, "https://example.test");

    set_env(0, "OAUTHQ_TOPIC_PARTITIONS", "12x");
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, "OAUTHQ_TOPIC_PARTITIONS"));

    set_env(0, "OAUTHQ_TOPIC_PARTITIONS", "0");
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);

    set_env(0, "OAUTHQ_PUBLIC_URL", "ftp://x");
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);
    assert_non_null(strstr(e.msg, "OAUTHQ_PUBLIC_URL"));

    /* The token call's refresh wait: bounded by the long-poll limit (30 s). */
    set_env(0, "OAUTHQ_TOKEN_REFRESH_WAIT_MS", "1500");
    assert_int_equal(config_load(&c, fake_getenv, &e), 0);
    assert_int_equal(c.token_refresh_wait_ms, 1500);
    set_env(0, "OAUTHQ_TOKEN_REFRESH_WAIT_MS", "30001");
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);
    assert_non_null(strstr(e.msg, "OAUTHQ_TOKEN_REFRESH_WAIT_MS"));
    assert_non_null(strstr(e.msg, "[100, 30000]"));

    set_env(0, "OAUTHQ_TOPIC_PREFIX", "bad prefix");
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);

    char longv[2000];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    set_env(0, "OAUTHQ_KAFKA_BOOTSTRAP", longv);
    assert_int_equal(config_load(&c, fake_getenv, &e), -1);
    assert_non_null(strstr(e.msg, "too long"));
}

static void test_config_secret_value_and_file(void **state)
{
    (void)state;
    char path[] = "/tmp/oauthq-secret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cr3t-from-file\n", 17), 17);
    close(fd);
    char out[64];
    size_t len = 0;
    err_t e = {0};

    set_env(0, "OAUTHQ_X_FILE", path);
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, sizeof out, &len, &e), 0);
    assert_string_equal(out, "s3cr3t-from-file");
    assert_int_equal(len, 16);

    set_env(0, "OAUTHQ_X", "direct-value");
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, sizeof out, &len, &e), 0);
    assert_string_equal(out, "direct-value");

    /* Both set: refused, and the message names variables, not values. */
    set_env(0, "OAUTHQ_X", "direct-value");
    set_env(1, "OAUTHQ_X_FILE", path);
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, sizeof out, &len, &e), -1);
    assert_null(strstr(e.msg, "direct-value"));
    assert_non_null(strstr(e.msg, "OAUTHQ_X_FILE"));

    set_env(0, NULL, NULL);
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, sizeof out, &len, &e), -1);

    /* Too big for the buffer. */
    set_env(0, "OAUTHQ_X_FILE", path);
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, 8, &len, &e), -1);
    assert_null(strstr(e.msg, "s3cr3t"));

    set_env(0, "OAUTHQ_X_FILE", "/nonexistent/oauthq");
    assert_int_equal(config_secret("OAUTHQ_X", fake_getenv, out, sizeof out, &len, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/oauthq"));
    unlink(path);
}

/* ---- log ---------------------------------------------------------------- */

static char captured[8][LOG_LINE_MAX];
static int ncaptured;

static void sink(const char *line, void *ud)
{
    (void)ud;
    if (ncaptured < 8)
        snprintf(captured[ncaptured++], LOG_LINE_MAX, "%s", line);
}

static void capture_start(const char *format)
{
    err_t e = {0};
    assert_int_equal(log_init("unit", "debug", format, &e), 0);
    ncaptured = 0;
    log_set_sink(sink, NULL);
}

static void test_log_redacts_secret_keys(void **state)
{
    (void)state;
    capture_start("json");
    log_kv(LOGL_INFO, "exchange", "connection_id", "c1", "code", "ac_live_code_value",
           "access_token", "sk_live_abc", "client_secret", "shh-secret", "code_sha256", "ab12");
    assert_int_equal(ncaptured, 1);
    assert_null(strstr(captured[0], "ac_live_code_value"));
    assert_null(strstr(captured[0], "sk_live_abc"));
    assert_null(strstr(captured[0], "shh-secret"));
    assert_non_null(strstr(captured[0], "\"connection_id\":\"c1\""));
    assert_non_null(strstr(captured[0], "\"code_sha256\":\"ab12\""));
    assert_non_null(strstr(captured[0], "\"code\":\"[REDACTED]\""));
    assert_true(log_key_is_secret("refresh_token"));
    assert_true(log_key_is_secret("Code_Verifier"));
    assert_false(log_key_is_secret("code_sha256"));
    assert_false(log_key_is_secret("connection_id"));
    log_set_sink(NULL, NULL);
}

static void test_log_scrubs_registered_secrets_everywhere(void **state)
{
    (void)state;
    capture_start("text");
    assert_int_equal(log_secret("topsecretvalue", 14), 0);
    assert_int_equal(log_secret("short", 5), -1); /* would redact ordinary words */
    log_kv(LOGL_ERROR, "x", "msg", "provider said topsecretvalue twice: topsecretvalue!");
    log_kv(LOGL_WARN, "x", "detail", "prefix-topsecretvalue-suffix");
    assert_int_equal(ncaptured, 2);
    assert_null(strstr(captured[0], "topsecretvalue"));
    assert_non_null(strstr(captured[0], "[REDACTED] twice: [REDACTED]!"));
    assert_null(strstr(captured[1], "topsecretvalue"));
    log_secrets_clear();
    log_set_sink(NULL, NULL);
}

static void test_log_json_escaping_and_levels(void **state)
{
    (void)state;
    capture_start("json");
    log_kv(LOGL_INFO, "evt", "msg", "line1\nline2 \"q\" \\ \x01");
    assert_int_equal(ncaptured, 1);
    assert_non_null(strstr(captured[0], "line1\\nline2 \\\"q\\\" \\\\ \\u0001"));
    assert_null(strchr(captured[0], '\n'));
    err_t e = {0};
    assert_int_equal(log_init("unit", "warn", "json", &e), 0);
    log_kv(LOGL_INFO, "not_shown");
    assert_int_equal(ncaptured, 1);
    assert_int_equal(log_init("unit", "verbose", "json", &e), -1);
    assert_int_equal(log_init("unit", "info", "xml", &e), -1);
    log_set_sink(NULL, NULL);
}

static void test_log_truncates_long_lines_as_valid_json(void **state)
{
    (void)state;
    capture_start("json");
    static char big[LOG_LINE_MAX * 2];
    memset(big, 'v', sizeof big - 1);
    log_kv(LOGL_INFO, "big", "a", "1", "b", big);
    assert_int_equal(ncaptured, 1);
    size_t n = strlen(captured[0]);
    assert_true(n < LOG_LINE_MAX);
    assert_non_null(strstr(captured[0], "\"truncated\":true}"));
    assert_non_null(strstr(captured[0], "\"a\":\"1\""));
    log_set_sink(NULL, NULL);
}

/* ---- kafka error classes -------------------------------------------------- */

static void test_kafka_errc_classes(void **state)
{
    (void)state;
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR_NO_ERROR), ERRC_OK);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR__TRANSPORT), ERRC_RETRIABLE);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR__MSG_TIMED_OUT), ERRC_RETRIABLE);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN), ERRC_RETRIABLE);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR__FENCED), ERRC_FATAL);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR_PRODUCER_FENCED), ERRC_FATAL);
    assert_int_equal(kafka_errc(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE), ERRC_PERMANENT);
    assert_int_equal(kafka_error_errc(NULL), ERRC_OK);
}

static void test_kafka_conf_guarantees(void **state)
{
    (void)state;
    set_env(0, NULL, NULL);
    config_t c;
    err_t e = {0};
    assert_int_equal(config_load(&c, fake_getenv, &e), 0);
    char v[64];
    size_t n;
    rd_kafka_conf_t *p = kafka_conf_producer(&c, NULL, &e);
    assert_non_null(p);
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(p, "enable.idempotence", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "true");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(p, "acks", v, &n), RD_KAFKA_CONF_OK);
    assert_true(strcmp(v, "all") == 0 || strcmp(v, "-1") == 0);
    rd_kafka_conf_destroy(p);
    rd_kafka_conf_t *k = kafka_conf_consumer(&c, "g1", &e);
    assert_non_null(k);
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(k, "isolation.level", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "read_committed");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(k, "enable.auto.commit", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "false");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(k, "partition.assignment.strategy", v, &n),
                     RD_KAFKA_CONF_OK);
    assert_string_equal(v, "range");
    rd_kafka_conf_destroy(k);
}

/* kafka_consumer_new: the assign-only defaults plus the caller's settings (applied last);
 * a bad key or a key without a value is ERRC_FATAL naming the key, never a handle. */
static void test_kafka_consumer_new_settings(void **state)
{
    (void)state;
    set_env(0, NULL, NULL);
    config_t c;
    err_t e = {0};
    assert_int_equal(config_load(&c, fake_getenv, &e), 0);
    const char *const settings[] = {"isolation.level",
                                    "read_uncommitted",
                                    "fetch.wait.max.ms",
                                    "7",
                                    "enable.partition.eof",
                                    "false",
                                    NULL};
    rd_kafka_t *rk = kafka_consumer_new(&c, settings, "test consumer", &e);
    assert_non_null(rk);
    const rd_kafka_conf_t *conf = rd_kafka_conf(rk);
    char v[64];
    size_t n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(conf, "isolation.level", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "read_uncommitted");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(conf, "fetch.wait.max.ms", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "7");
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(conf, "enable.auto.commit", v, &n), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "false");
    rd_kafka_destroy(rk);
    rk = kafka_consumer_new(&c, NULL, "test consumer", &e);
    assert_non_null(rk);
    n = sizeof v;
    assert_int_equal(rd_kafka_conf_get(rd_kafka_conf(rk), "isolation.level", v, &n),
                     RD_KAFKA_CONF_OK);
    assert_string_equal(v, "read_committed");
    rd_kafka_destroy(rk);
    const char *const bad[] = {"no.such.property", "1", NULL};
    memset(&e, 0, sizeof e);
    assert_null(kafka_consumer_new(&c, bad, "test consumer", &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, "no.such.property"));
    const char *const odd[] = {"fetch.wait.max.ms", NULL};
    memset(&e, 0, sizeof e);
    assert_null(kafka_consumer_new(&c, odd, "test consumer", &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, "fetch.wait.max.ms"));
}

/* An assigned partition beyond the start-up count (partitions added while running) is fatal
 * with the way out, not cut off by ERR_MSG_MAX even with a long topic name. */
static void test_kafka_check_assigned(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(kafka_check_assigned("oauthq.status", 0, 4, &e), 0);
    assert_int_equal(kafka_check_assigned("oauthq.status", 3, 4, &e), 0);
    assert_int_equal(kafka_check_assigned("oauthq.status", 4, 4, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, "oauthq.status: partition 4 assigned, the topic had 4 at start"));
    assert_non_null(strstr(e.msg, "added while running"));
    memset(&e, 0, sizeof e);
    const char *longest = "a-very-long-deployment-prefix-for-oauthq-production.connections";
    assert_true(strlen(longest) <= 64);
    assert_int_equal(kafka_check_assigned(longest, -2147483647 - 1, 1024, &e), -1);
    assert_non_null(strstr(e.msg, longest));
    assert_non_null(strstr(e.msg, "(docs/operations.md, Scaling partitions)"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_wrap),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_overrides_and_errors),
        cmocka_unit_test(test_config_secret_value_and_file),
        cmocka_unit_test(test_log_redacts_secret_keys),
        cmocka_unit_test(test_log_scrubs_registered_secrets_everywhere),
        cmocka_unit_test(test_log_json_escaping_and_levels),
        cmocka_unit_test(test_log_truncates_long_lines_as_valid_json),
        cmocka_unit_test(test_kafka_errc_classes),
        cmocka_unit_test(test_kafka_conf_guarantees),
        cmocka_unit_test(test_kafka_consumer_new_settings),
        cmocka_unit_test(test_kafka_check_assigned),
    };
    return cmocka_run_group_tests_name("unit_common", tests, NULL, NULL);
}
