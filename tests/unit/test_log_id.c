/* Unit test of log_code_id: the one id under which every process logs a code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/crypto.h"
#include "common/log.h"

static void test_code_id_is_the_hash_prefix(void **state)
{
    (void)state;
    char hex[CRYPTO_SHA256_HEX], id[LOG_CODE_ID_LEN + 1];
    crypto_sha256_hex("abc", 3, hex);
    /* SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad:
     * the id is its first 12 digits (the worker used to log the last 12). */
    assert_string_equal(log_code_id(hex, id), "ba7816bf8f01");
    assert_string_equal(id, "ba7816bf8f01");
    assert_string_equal(log_code_id("", id), "-");
    assert_string_equal(log_code_id(NULL, id), "-");
    assert_string_equal(log_code_id("abc", id), "abc"); /* shorter input: as it is */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_id_is_the_hash_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
