/* Unit tests of common/buf (the bounded growable buffer) and common/clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"

static void test_buf_grows_to_its_limit_and_no_further(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 1000, 0);
    assert_string_equal(buf_str(&b), "");
    char chunk[100];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 10; i++)
        assert_int_equal(buf_add(&b, chunk, sizeof chunk), 0);
    assert_int_equal(buf_len(&b), 1000);
    assert_int_equal(strlen(buf_str(&b)), 1000);
    assert_true(b.cap <= 1001);
    /* One byte more is refused and changes nothing. */
    assert_int_equal(buf_add(&b, "x", 1), BUF_TOO_LARGE);
    assert_int_equal(buf_len(&b), 1000);
    assert_int_equal(buf_str(&b)[999], 'a');
    buf_reset(&b);
    assert_int_equal(buf_len(&b), 0);
    assert_string_equal(buf_str(&b), "");
    assert_int_equal(buf_adds(&b, "hello"), 0);
    assert_string_equal(buf_str(&b), "hello");
    buf_free(&b);
    assert_null(b.p);
    assert_int_equal(buf_adds(&b, "again"), 0); /* reusable after free */
    assert_string_equal(buf_str(&b), "again");
    buf_free(&b);
}

static void test_buf_first_error_sticks(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 8, 1);
    assert_int_equal(buf_adds(&b, "12345"), 0);
    assert_int_equal(buf_adds(&b, "6789"), BUF_TOO_LARGE);
    assert_string_equal(buf_str(&b), "12345");
    /* Would fit, but the buffer already failed: the caller checks once at the end. */
    assert_int_equal(buf_adds(&b, "6"), BUF_TOO_LARGE);
    assert_int_equal(buf_error(&b), BUF_TOO_LARGE);
    assert_string_equal(buf_str(&b), "12345");
    assert_null(buf_take(&b, NULL));
    assert_null(b.p);
    assert_int_equal(buf_error(&b), 0);
    assert_int_equal(buf_adds(&b, "678"), 0);
    assert_string_equal(buf_str(&b), "678");
    buf_free(&b);
}

static void test_buf_printf_and_take(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 10000, 0);
    size_t len = 0;
    char *empty = buf_take(&b, &len);
    assert_non_null(empty);
    assert_string_equal(empty, "");
    free(empty);
    assert_int_equal(buf_printf(&b, "%s=%d;", "n", 42), 0);
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "%s", big), 0); /* longer than the stack scratch */
    char *s = buf_take(&b, &len);
    assert_int_equal(len, 5 + 599);
    assert_int_equal(strncmp(s, "n=42;zzz", 8), 0);
    assert_int_equal(strlen(s), len);
    assert_null(b.p);
    free(s);
}

static void test_buf_secret_reset_wipes_the_bytes(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 4096, 1);
    assert_int_equal(buf_adds(&b, "sk_test_secret"), 0);
    char *block = b.p;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_ptr_equal(b.p, block);
    for (size_t i = 0; i < cap; i++)
        assert_int_equal(block[i], 0);
    buf_free(&b);
}

static void test_buf_formenc(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 64, 0);
    assert_int_equal(buf_add_formenc(&b, "a b&c=d/é~-._"), 0);
    assert_string_equal(buf_str(&b), "a+b%26c%3Dd%2F%C3%A9~-._");
    buf_reset(&b);
    char big[40];
    memset(big, '&', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_add_formenc(&b, big), BUF_TOO_LARGE); /* 117 bytes encoded */
    assert_int_equal(buf_len(&b), 0);
    buf_free(&b);
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t w = clock_wall_ms(), m1 = clock_mono_ms(), m2 = clock_mono_ms();
    assert_true(w > 1700000000000LL); /* after 2023: epoch milliseconds */
    assert_true(m2 >= m1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grows_to_its_limit_and_no_further),
        cmocka_unit_test(test_buf_first_error_sticks),
        cmocka_unit_test(test_buf_printf_and_take),
        cmocka_unit_test(test_buf_secret_reset_wipes_the_bytes),
        cmocka_unit_test(test_buf_formenc),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
