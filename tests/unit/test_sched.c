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

/* Claims may run ahead of the free slots by what finished during the
 * last commit cycle, within the provider's limit and the total's room. */
static void test_claim_ahead(void **state)
{
    (void)state;
    sched_t s;
    sched_init(&s, 4, 1, NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_free(&s, 0), 0);
    assert_int_equal(sched_total_free(&s), 0);
    sched_set_ahead(&s, 0, 2); /* two finished during the last cycle */
    assert_int_equal(sched_free(&s, 0), 2);
    assert_int_equal(sched_total_free(&s), 2);
    assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 0), 0); /* 4 + 2 claims at most */
    sched_set_ahead(&s, 0, 100);            /* clamped to the limit: 4 + 4 */
    assert_int_equal(sched_free(&s, 0), 2);
    sched_set_ahead(&s, 0, -3);
    assert_int_equal(sched_free(&s, 0), 0);
    for (int i = 0; i < 10; i++)
        sched_release(&s, 0); /* never below zero */
    assert_int_equal(sched_free(&s, 0), 4);
    /* Two providers: one's ahead raises the total's room by as much, never the other's share. */
    int limits[2] = {3, 3};
    sched_init(&s, 4, 2, limits);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sched_take(&s, 0), 1);
    assert_int_equal(sched_take(&s, 1), 1);
    assert_int_equal(sched_total_free(&s), 0);
    sched_set_ahead(&s, 1, 1);
    assert_int_equal(sched_free(&s, 0), 0);
    assert_int_equal(sched_free(&s, 1), 1);
    assert_int_equal(sched_total_free(&s), 1);
    assert_int_equal(sched_take(&s, 1), 1);
    assert_int_equal(sched_take(&s, 1), 0);
    sched_set_ahead(&s, 0, 1);
    assert_int_equal(sched_total_free(&s), 1); /* provider 0: 3 + 1 - 3 */
    assert_int_equal(sched_free(&s, 5), 0);
    sched_set_ahead(&s, 5, 1); /* unknown: ignored */
    assert_int_equal(sched_total_free(&s), 1);
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
    /* Urgent work (settles, claims) goes gap_ms after the last one ended. */
    assert_false(sched_commit_due_urgent(100, 115, 116, 20, 2, 1));
    assert_true(sched_commit_due_urgent(100, 115, 117, 20, 2, 1));
    assert_false(sched_commit_due_urgent(100, 115, 117, 20, 2, 0)); /* offsets only: the tick */
    assert_true(sched_commit_due_urgent(100, 115, 120, 20, 2, 0));
    assert_true(sched_commit_due_urgent(-1, -1, 0, 20, 2, 1));
}

/* Defect 6: after invalid_client exactly one held code goes out as a probe
 * per interval; the rest wait for its answer. */
static void test_invalid_client_probe(void **state)
{
    (void)state;
    sched_t s;
    sched_init(&s, 8, 2, NULL);
    assert_int_equal(sched_claimable(&s, 0, 1000), 4);
    assert_int_equal(sched_pause_set(&s, 0, SCHED_PAUSED_INVALID_CLIENT, 31000, 1000), 1);
    assert_int_equal(sched_paused_until(&s, 0, 1000), 31000);
    assert_int_equal(sched_claimable(&s, 0, 30999), 0);
    assert_int_equal(sched_claimable(&s, 1, 30999), 4); /* the other provider runs */
    /* Probe time: one claim, and it is the probe. */
    assert_int_equal(sched_paused_until(&s, 0, 31000), 0);
    assert_int_equal(sched_claimable(&s, 0, 31000), 1);
    assert_int_equal(sched_claim_note(&s, 0, 31000), 1);
    assert_int_equal(sched_claimable(&s, 0, 31001), 0); /* only one out */
    /* Still invalid: paused another interval, then one more probe. */
    sched_probe_done(&s, 0, 1, 31100, 30000);
    assert_int_equal(sched_claimable(&s, 0, 61099), 0);
    assert_int_equal(sched_claimable(&s, 0, 61100), 1);
    assert_int_equal(sched_claim_note(&s, 0, 61100), 1);
    /* Not sent: the next probe may go at once. */
    sched_probe_done(&s, 0, -1, 61200, 30000);
    assert_int_equal(sched_claimable(&s, 0, 61200), 1);
    assert_int_equal(sched_claim_note(&s, 0, 61200), 1);
    /* A probe that never reports is forgotten after the probe timeout. */
    sched_set_probe_timeout(&s, 5000);
    assert_int_equal(sched_claimable(&s, 0, 66199), 0);
    assert_int_equal(sched_claimable(&s, 0, 66200), 1);
    assert_int_equal(sched_claim_note(&s, 0, 66200), 1);
    /* Success: running again, every slot free, claims are not probes. */
    sched_probe_done(&s, 0, 0, 66300, 30000);
    assert_int_equal(sched_claimable(&s, 0, 66300), 4);
    assert_int_equal(sched_claim_note(&s, 0, 66300), 0);
    assert_int_equal(sched_paused_until(&s, 0, 66300), 0);
}

/* Defect 2: pauses restored from several changelogs and read late agree
 * (the newest decision wins); an operator pause holds until a resume. */
static void test_pause_ordering(void **state)
{
    (void)state;
    sched_t s;
    sched_init(&s, 4, 1, NULL);
    assert_int_equal(sched_pause_set(&s, 0, SCHED_PAUSED_OPERATOR, 0, 5000), 1);
    assert_true(sched_paused_until(&s, 0, 1000000000) > 1000000000);
    assert_int_equal(sched_claimable(&s, 0, 6000), 0);
    /* An older resume (another partition's copy, read late) changes nothing. */
    assert_int_equal(sched_pause_set(&s, 0, SCHED_RUNNING, 0, 4000), 0);
    assert_int_equal(sched_pause_set(&s, 0, SCHED_RUNNING, 0, 5000), 0); /* same decision */
    assert_int_equal(sched_claimable(&s, 0, 6000), 0);
    /* The newer resume applies; a later copy of the old pause does not. */
    assert_int_equal(sched_pause_set(&s, 0, SCHED_RUNNING, 0, 7000), 1);
    assert_int_equal(sched_claimable(&s, 0, 7001), 4);
    assert_int_equal(sched_pause_set(&s, 0, SCHED_PAUSED_OPERATOR, 0, 5000), 0);
    assert_int_equal(sched_paused_until(&s, 0, 7001), 0);
    /* An operator resume ends an invalid_client pause decided before it. */
    assert_int_equal(sched_pause_set(&s, 0, SCHED_PAUSED_INVALID_CLIENT, 40000, 10000), 1);
    assert_int_equal(sched_pause_set(&s, 0, SCHED_RUNNING, 0, 11000), 1);
    assert_int_equal(sched_claimable(&s, 0, 11001), 4);
    /* Unknown providers are never claimable nor paused. */
    assert_int_equal(sched_pause_set(&s, 3, SCHED_PAUSED_OPERATOR, 0, 1), 0);
    assert_int_equal(sched_claimable(&s, -1, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_shares),
        cmocka_unit_test(test_bulkhead),
        cmocka_unit_test(test_total_cap),
        cmocka_unit_test(test_claim_ahead),
        cmocka_unit_test(test_lease),
        cmocka_unit_test(test_commit_cadence),
        cmocka_unit_test(test_invalid_client_probe),
        cmocka_unit_test(test_pause_ordering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
