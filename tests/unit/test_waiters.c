/* Unit tests of producer/waiters: the bounds that hold before any request is
 * touched (a full table, an id too long), and the no-op paths (waking or
 * unwatching what is not there). Waking real suspended requests is covered
 * by itest_status (long polls) and itest_tokens (refresh waits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "producer/waiters.h"

static void test_bounds_before_any_request(void **state)
{
    (void)state;
    waiters_t *full = waiters_new(0);
    assert_non_null(full);
    /* max 0: refused before the request is referenced (NULL would crash otherwise). */
    assert_int_equal(waiters_watch(full, "conn1", NULL), -1);
    assert_int_equal(waiters_count(full), 0);
    waiters_free(full);
    waiters_t *ws = waiters_new(10);
    assert_non_null(ws);
    char id[WAITERS_ID_MAX + 1];
    memset(id, 'a', WAITERS_ID_MAX);
    id[WAITERS_ID_MAX] = '\0';
    /* An id that would be cut could never be woken: refused. */
    assert_int_equal(waiters_watch(ws, id, NULL), -1);
    assert_int_equal(waiters_count(ws), 0);
    waiters_wake_id(ws, "nobody");
    waiters_unwatch(ws, NULL);
    waiters_wake_all(ws);
    assert_int_equal(waiters_count(ws), 0);
    waiters_free(ws);
    waiters_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_before_any_request),
    };
    return cmocka_run_group_tests_name("unit_waiters", tests, NULL, NULL);
}
