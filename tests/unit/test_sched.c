/* Unit tests of the pipeline's scheduling rules (worker/sched.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "worker/sched.h"

/* Default shares: concurrency split evenly, at least one slot each. */
static void test_default_shares(void **state)
{
    (void)state;
    sched_t s;
    sched_init(&s, 64, 2, NULL);
    assert_int_equal(sched_free(&s, 0), 32);
    assert_int_equal(sched_free(&s, 1), 32);
    sched_init(&s, 1, 3, NULL);
    assert_int_equal(sched_free(&s, 2), 1);
    assert_int_equal(sched_free(&s, 3), 0); /* unknown provider */
    assert_int_equal(sched_free(&s, -1), 0);
}

/* A slow provider fills its own slots, never the other's (bulkhead). */
static void test_bulkhead(void **state)
{
    (void)state;
    sched_t s;
    int limits[2] = {3, 0};
    sched_init(&s, 8, 2, limits);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 0), 0);
    assert_int_equal(sched_free(&s, 0), 0);
    assert_int_equal(sched_free(&s, 1), 4); /* its default share */
    for (int i = 0; i < 4; i++)
        assert_int_equal(sched_take(&s, 1), 1);
    assert_int_equal(sched_take(&s, 1), 0);
    sched_release(&s, 0);
    assert_int_equal(sched_free(&s, 0), 1);
    assert_int_equal(sched_take(&s, 0), 1);
    /* Releasing more than taken never goes negative. */
    sched_init(&s, 2, 1, NULL);
    sched_release(&s, 0);
    assert_int_equal(sched_free(&s, 0), 2);
}

/* The total concurrency caps the sum of provider limits. */
static void test_total_cap(void **state)
{
    (void)state;
    sched_t s;
    int limits[2] = {10, 10};
    sched_init(&s, 4, 2, limits);
    assert_int_equal(sched_free(&s, 0), 4);
    assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 1), 1);
    assert_int_equal(sched_take(&s, 1), 1);
    assert_int_equal(sched_take(&s, 1), 0);
    assert_int_equal(sched_free(&s, 0), 0);
}

/* A request leaves only inside its lease on the monotonic clock. */
static void test_lease(void **state)
{
    (void)state;
    assert_true(sched_lease_valid(1000, 1000, 2000));
    assert_true(sched_lease_valid(1000, 3000, 2000));
    assert_false(sched_lease_valid(1000, 3001, 2000));
    assert_false(sched_lease_valid(1000, 999, 2000)); /* clock went back: refuse */
    assert_int_equal(sched_takeover_hold_ms(2000, 10000, 5000), 17000);
}

static void test_commit_cadence(void **state)
{
    (void)state;
    assert_false(sched_commit_due(-1, 0, 20, 0));
    assert_true(sched_commit_due(-1, 0, 20, 1));
    assert_false(sched_commit_due(100, 119, 20, 1));
    assert_true(sched_commit_due(100, 120, 20, 1));
    assert_false(sched_commit_due(100, 500, 20, 0));
    assert_int_equal(sched_wait_ms(100, 105, 20, 1, 50), 15);
    assert_int_equal(sched_wait_ms(100, 130, 20, 1, 50), 0);
    assert_int_equal(sched_wait_ms(100, 105, 20, 0, 50), 50);
    assert_int_equal(sched_wait_ms(100, 101, 200, 1, 50), 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_shares), cmocka_unit_test(test_bulkhead),
        cmocka_unit_test(test_total_cap),      cmocka_unit_test(test_lease),
        cmocka_unit_test(test_commit_cadence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
