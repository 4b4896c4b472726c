/* Unit tests of producer/query and producer/callback: limits, duplicates,
 * encodings, the code/error exclusivity and the RFC 6749 error allowlist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "producer/callback.h"
#include "producer/query.h"

static int parse(const char *qs, callback_params *p, err_t *e)
{
    return callback_parse(qs, strlen(qs), p, e);
}

static void test_query_decoding(void **state)
{
    (void)state;
    query_t q;
    err_t e = {0};
    const char *s = "a=1&b=hello+world&c=%41%2b%2F&d=&e&&f=x%3D%26y";
    assert_int_equal(query_parse(s, strlen(s), &q, &e), 0);
    assert_int_equal(q.n, 6);
    assert_string_equal(query_get(&q, "b", NULL), "hello world");
    assert_string_equal(query_get(&q, "c", NULL), "A+/");
    size_t n = 99;
    assert_string_equal(query_get(&q, "d", &n), "");
    assert_int_equal(n, 0);
    assert_string_equal(query_get(&q, "e", NULL), "");
    assert_string_equal(query_get(&q, "f", NULL), "x=&y");
    assert_null(query_get(&q, "zz", NULL));
}

static void test_query_rejections(void **state)
{
    (void)state;
    query_t q;
    err_t e = {0};
    const char *bad[] = {
        "a=1&a=2",   /* duplicate */
        "a=%4",      /* truncated escape */
        "a=%zz",     /* bad hex */
        "a=%00",     /* NUL */
        "a%00=1",    /* NUL in name */
        "=1",        /* empty name */
        "a b=1",     /* bad name char */
        "%61=1&a=2", /* duplicate after decoding the name */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(query_parse(bad[i], strlen(bad[i]), &q, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
    }
    char many[512] = "";
    for (int i = 0; i < QUERY_MAX_PARAMS + 1; i++) {
        char part[16];
        snprintf(part, sizeof part, "p%d=1&", i);
        strcat(many, part);
    }
    assert_int_equal(query_parse(many, strlen(many), &q, &e), -1);
    static char huge[QUERY_MAX_BYTES + 10];
    memset(huge, 'a', sizeof huge - 1);
    huge[0] = 'x';
    huge[1] = '=';
    assert_int_equal(query_parse(huge, strlen(huge), &q, &e), -1);
    char longname[64];
    memset(longname, 'n', 40);
    strcpy(longname + 40, "=1");
    assert_int_equal(query_parse(longname, strlen(longname), &q, &e), -1);
}

static void test_callback_code_variant(void **state)
{
    (void)state;
    callback_params p;
    err_t e = {0};
    assert_int_equal(parse("scope=read_write&code=ac_123ABC&state=1.k1.abc.def", &p, &e), 0);
    assert_int_equal(p.kind, CALLBACK_CODE);
    assert_string_equal(p.code, "ac_123ABC");
    assert_string_equal(p.state, "1.k1.abc.def");
    assert_string_equal(p.scope, "read_write");
    assert_false(p.has_iss);
    assert_int_equal(parse("code=x&state=s&iss=https%3A%2F%2Fissuer.example", &p, &e), 0);
    assert_true(p.has_iss);
    assert_string_equal(p.iss, "https://issuer.example");
}

static void test_callback_error_variant_and_allowlist(void **state)
{
    (void)state;
    callback_params p;
    err_t e = {0};
    assert_int_equal(
        parse("error=access_denied&error_description=The+user+denied&state=s1", &p, &e), 0);
    assert_int_equal(p.kind, CALLBACK_ERROR);
    assert_string_equal(p.error, "access_denied");
    assert_string_equal(p.error_description, "The user denied");
    const char *ok[] = {"invalid_request",           "unauthorized_client", "access_denied",
                        "unsupported_response_type", "invalid_scope",       "server_error",
                        "temporarily_unavailable"};
    for (size_t i = 0; i < 7; i++)
        assert_true(callback_error_code_ok(ok[i]));
    assert_false(callback_error_code_ok("invalid_grant")); /* token endpoint only */
    assert_false(callback_error_code_ok("ACCESS_DENIED"));
    assert_int_equal(parse("error=hacked&state=s", &p, &e), -1);
    assert_non_null(strstr(e.msg, "RFC 6749"));
    /* Non-ASCII in the description is neutralised, not passed on. */
    assert_int_equal(parse("error=server_error&error_description=caf%C3%A9%0A&state=s", &p, &e), 0);
    assert_string_equal(p.error_description, "caf???");
}

static void test_callback_rejections(void **state)
{
    (void)state;
    callback_params p;
    err_t e = {0};
    const char *bad[] = {
        "code=a&error=access_denied&state=s", /* both */
        "state=s",                            /* neither */
        "code=a",                             /* no state */
        "code=a&state=",                      /* empty state */
        "code=&state=s",                      /* empty code */
        "code=a&code=b&state=s",              /* duplicate code */
        "code=a&state=s&state=s",             /* duplicate state */
        "code=a%20b&state=s",                 /* space in code */
        "code=a%01&state=s",                  /* control char */
        "code=a&state=s%3Cscript",            /* state charset */
        "code=a&state=s&error_description=x", /* description without error */
        "code=a&state=s&iss=a%20b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear(&e);
        assert_int_equal(parse(bad[i], &p, &e), -1);
        assert_int_equal(e.cls, ERRC_PERMANENT);
    }
    char longcode[CALLBACK_CODE_MAX + 32];
    strcpy(longcode, "state=s&code=");
    size_t n = strlen(longcode);
    memset(longcode + n, 'c', CALLBACK_CODE_MAX + 1);
    longcode[n + CALLBACK_CODE_MAX + 1] = '\0';
    assert_int_equal(parse(longcode, &p, &e), -1);
    assert_non_null(strstr(e.msg, "code"));
    assert_null(strstr(e.msg, "ccccc")); /* the value never appears */
    longcode[n + CALLBACK_CODE_MAX] = '\0';
    assert_int_equal(parse(longcode, &p, &e), 0); /* exactly at the limit */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_decoding),
        cmocka_unit_test(test_query_rejections),
        cmocka_unit_test(test_callback_code_variant),
        cmocka_unit_test(test_callback_error_variant_and_allowlist),
        cmocka_unit_test(test_callback_rejections),
    };
    return cmocka_run_group_tests_name("unit_callback", tests, NULL, NULL);
}
