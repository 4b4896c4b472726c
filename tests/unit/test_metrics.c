/* Unit tests of common/metrics: exact text exposition of counters, gauges and
 * histograms, get-or-create identity, type conflicts, validation, label
 * escaping, limits, and exact totals under concurrent lock-free updates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/metrics.h"

static char *render(metrics_t *m)
{
    char *out = NULL;
    size_t len = 0;
    err_t e = {0};
    assert_int_equal(metrics_render(m, &out, &len, &e), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_render_exact(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    assert_non_null(m);
    metric_counter *c1 = metrics_counter(m, "oauthq_requests_total", "Requests served.",
                                         "route=\"callback\",status=\"303\"");
    metric_gauge *g = metrics_gauge(m, "oauthq_inflight", "In-flight requests.", NULL);
    metric_counter *c2 = metrics_counter(m, "oauthq_requests_total", "ignored: first help wins",
                                         "route=\"start\",status=\"302\"");
    const double b[] = {0.1, 0.5, 1, 2.5};
    metric_histogram *h = metrics_histogram(
        m, "oauthq_latency_seconds", "Latency.\nSecond line \\ x", "route=\"callback\"", b, 4);
    const double one[] = {1};
    metric_histogram *h2 = metrics_histogram(m, "oauthq_empty_seconds", NULL, "", one, 1);
    metric_gauge *neg = metrics_gauge(m, "oauthq_lag", "", "partition=\"0\"");
    assert_non_null(c1);
    assert_non_null(c2);
    assert_non_null(g);
    assert_non_null(h);
    assert_non_null(h2);
    assert_non_null(neg);
    metrics_counter_add(c1, 3);
    metrics_counter_add(c2, 1);
    metrics_gauge_set(g, 5);
    metrics_gauge_add(g, -2);
    metrics_gauge_add(neg, -7);
    metrics_histogram_observe(h, 0.25);
    metrics_histogram_observe(h, 0.5); /* le is inclusive */
    metrics_histogram_observe(h, 0.5);
    metrics_histogram_observe(h, 4);

    char *out = render(m);
    const char *want = "# HELP oauthq_requests_total Requests served.\n"
                       "# TYPE oauthq_requests_total counter\n"
                       "oauthq_requests_total{route=\"callback\",status=\"303\"} 3\n"
                       "oauthq_requests_total{route=\"start\",status=\"302\"} 1\n"
                       "# HELP oauthq_inflight In-flight requests.\n"
                       "# TYPE oauthq_inflight gauge\n"
                       "oauthq_inflight 3\n"
                       "# HELP oauthq_latency_seconds Latency.\\nSecond line \\\\ x\n"
                       "# TYPE oauthq_latency_seconds histogram\n"
                       "oauthq_latency_seconds_bucket{route=\"callback\",le=\"0.1\"} 0\n"
                       "oauthq_latency_seconds_bucket{route=\"callback\",le=\"0.5\"} 3\n"
                       "oauthq_latency_seconds_bucket{route=\"callback\",le=\"1\"} 3\n"
                       "oauthq_latency_seconds_bucket{route=\"callback\",le=\"2.5\"} 3\n"
                       "oauthq_latency_seconds_bucket{route=\"callback\",le=\"+Inf\"} 4\n"
                       "oauthq_latency_seconds_sum{route=\"callback\"} 5.25\n"
                       "oauthq_latency_seconds_count{route=\"callback\"} 4\n"
                       "# TYPE oauthq_empty_seconds histogram\n"
                       "oauthq_empty_seconds_bucket{le=\"1\"} 0\n"
                       "oauthq_empty_seconds_bucket{le=\"+Inf\"} 0\n"
                       "oauthq_empty_seconds_sum 0\n"
                       "oauthq_empty_seconds_count 0\n"
                       "# TYPE oauthq_lag gauge\n"
                       "oauthq_lag{partition=\"0\"} -7\n";
    assert_string_equal(out, want);
    free(out);
    metrics_free(m);
}

static void test_empty_registry_and_doubles(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    char *out = render(m);
    assert_string_equal(out, "");
    free(out);
    err_t e = {0};
    assert_int_equal(metrics_render(NULL, &out, NULL, &e), -1);

    const double b[] = {0.005, 1e-5, 100000};
    assert_null(metrics_histogram(m, "h", NULL, NULL, b, 3)); /* not ascending */
    const double b2[] = {1e-5, 0.005, 100000, 1e20};
    metric_histogram *h = metrics_histogram(m, "h", NULL, NULL, b2, 4);
    assert_non_null(h);
    metrics_histogram_observe(h, 0.1);
    metrics_histogram_observe(h, 0.2);
    out = render(m);
    assert_string_equal(out, "# TYPE h histogram\n"
                             "h_bucket{le=\"1e-05\"} 0\n"
                             "h_bucket{le=\"0.005\"} 0\n"
                             "h_bucket{le=\"100000\"} 2\n"
                             "h_bucket{le=\"1e+20\"} 2\n"
                             "h_bucket{le=\"+Inf\"} 2\n"
                             "h_sum 0.30000000000000004\n"
                             "h_count 2\n");
    free(out);
    /* Zero bounds: only +Inf. */
    metric_histogram *z = metrics_histogram(m, "z", NULL, NULL, NULL, 0);
    assert_non_null(z);
    metrics_histogram_observe(z, -1.5);
    out = render(m);
    assert_non_null(strstr(out, "z_bucket{le=\"+Inf\"} 1\nz_sum -1.5\nz_count 1\n"));
    free(out);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_get_or_create_and_conflicts(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    metric_counter *a = metrics_counter(m, "x_total", "X.", "k=\"1\"");
    assert_non_null(a);
    assert_ptr_equal(metrics_counter(m, "x_total", "X.", "k=\"1\""), a);
    metric_counter *b = metrics_counter(m, "x_total", "X.", "k=\"2\"");
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    metric_counter *nolabel = metrics_counter(m, "x_total", "X.", NULL);
    assert_ptr_equal(metrics_counter(m, "x_total", "X.", ""), nolabel);
    assert_ptr_not_equal(nolabel, a);

    /* Same name, other type: refused. */
    assert_null(metrics_gauge(m, "x_total", "X.", "k=\"1\""));
    const double bounds[] = {1, 2};
    assert_null(metrics_histogram(m, "x_total", "X.", NULL, bounds, 2));
    metric_gauge *g = metrics_gauge(m, "g", NULL, NULL);
    assert_null(metrics_counter(m, "g", NULL, NULL));

    /* Histogram: same series with other bounds is refused; same bounds returns it. */
    metric_histogram *h = metrics_histogram(m, "h_seconds", NULL, "r=\"a\"", bounds, 2);
    assert_non_null(h);
    assert_ptr_equal(metrics_histogram(m, "h_seconds", NULL, "r=\"a\"", bounds, 2), h);
    const double other[] = {1, 3};
    assert_null(metrics_histogram(m, "h_seconds", NULL, "r=\"a\"", other, 2));
    assert_null(metrics_histogram(m, "h_seconds", NULL, "r=\"a\"", bounds, 1));

    /* Updates on NULL handles are no-ops. */
    metrics_counter_add(NULL, 1);
    metrics_gauge_set(NULL, 1);
    metrics_gauge_add(NULL, 1);
    metrics_histogram_observe(NULL, 1.0);
    assert_null(metrics_counter(NULL, "a", NULL, NULL));

    metrics_counter_add(a, 2);
    metrics_counter_add(metrics_counter(m, "x_total", NULL, "k=\"1\""), 5);
    metrics_gauge_set(g, 9);
    char *out = render(m);
    assert_non_null(strstr(out, "x_total{k=\"1\"} 7\n"));
    assert_non_null(strstr(out, "x_total{k=\"2\"} 0\n"));
    assert_non_null(strstr(out, "x_total 0\n"));
    assert_non_null(strstr(out, "g 9\n"));
    free(out);
    metrics_free(m);
}

static void test_validation(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    assert_null(metrics_counter(m, NULL, NULL, NULL));
    assert_null(metrics_counter(m, "", NULL, NULL));
    assert_null(metrics_counter(m, "1abc", NULL, NULL));
    assert_null(metrics_counter(m, "a-b", NULL, NULL));
    assert_null(metrics_counter(m, "a b", NULL, NULL));
    assert_non_null(metrics_counter(m, "a:b_c9", NULL, NULL));
    assert_non_null(metrics_counter(m, "_x", NULL, NULL));
    assert_non_null(metrics_counter(m, ":x", NULL, NULL));
    char longname[METRICS_NAME_MAX + 1];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_null(metrics_counter(m, longname, NULL, NULL));
    longname[METRICS_NAME_MAX - 1] = '\0';
    assert_non_null(metrics_counter(m, longname, NULL, NULL));

    /* Labels must be well formed. */
    assert_null(metrics_counter(m, "l", NULL, "a=b"));
    assert_null(metrics_counter(m, "l", NULL, "a=\"b\","));
    assert_null(metrics_counter(m, "l", NULL, "a=\"b"));
    assert_null(metrics_counter(m, "l", NULL, "a=\"b\nc\""));
    assert_null(metrics_counter(m, "l", NULL, "a=\"b\\tc\""));
    assert_null(metrics_counter(m, "l", NULL, "1a=\"b\""));
    assert_null(metrics_counter(m, "l", NULL, "a=\"b\"c=\"d\""));
    assert_non_null(metrics_counter(m, "l", NULL, "a=\"b\\\\ \\\" \\n\",c_2=\"\""));
    /* "le" is reserved for histogram buckets. */
    const double b[] = {1};
    assert_null(metrics_histogram(m, "hh", NULL, "le=\"1\"", b, 1));
    assert_non_null(metrics_histogram(m, "hh", NULL, "lex=\"1\"", b, 1));
    assert_non_null(metrics_counter(m, "cc", NULL, "le=\"1\""));
    /* Bounds: finite, ascending, at most 32. */
    double many[METRICS_BUCKETS_MAX + 1];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = (double)i;
    assert_null(metrics_histogram(m, "h1", NULL, NULL, many, METRICS_BUCKETS_MAX + 1));
    assert_non_null(metrics_histogram(m, "h1", NULL, NULL, many, METRICS_BUCKETS_MAX));
    const double dup[] = {1, 1};
    assert_null(metrics_histogram(m, "h2", NULL, NULL, dup, 2));
    assert_null(metrics_histogram(m, "h3", NULL, NULL, NULL, 2));
    metrics_free(m);
}

static void test_label_escape(void **state)
{
    (void)state;
    char out[64];
    metrics_label_escape("a\\b\"c\nd", out, sizeof out);
    assert_string_equal(out, "a\\\\b\\\"c\\nd");
    metrics_label_escape(NULL, out, sizeof out);
    assert_string_equal(out, "");
    /* Truncation never splits an escape sequence... */
    char small[5];
    metrics_label_escape("abc\"", small, sizeof small);
    assert_string_equal(small, "abc");
    metrics_label_escape("ab\"c", small, sizeof small);
    assert_string_equal(small, "ab\\\"");
    /* ...nor a UTF-8 character. */
    metrics_label_escape("ab\xc3\xa9", small, 4);
    assert_string_equal(small, "ab");
    metrics_label_escape("a\xe2\x82\xac", small, 5);
    assert_string_equal(small, "a\xe2\x82\xac");
    metrics_label_escape("a\xe2\x82\xacz", small, 5);
    assert_string_equal(small, "a\xe2\x82\xac");
    metrics_label_escape("ab\xe2\x82\xac", small, 5);
    assert_string_equal(small, "ab");
    char one[1];
    metrics_label_escape("abc", one, 1);
    assert_string_equal(one, "");
    metrics_label_escape("abc", NULL, 0);

    /* An escaped value round-trips through registration and rendering. */
    metrics_t *m = metrics_new();
    char v[64], labels[128];
    metrics_label_escape("he said \"hi\"\n\\", v, sizeof v);
    snprintf(labels, sizeof labels, "msg=\"%s\"", v);
    metric_counter *c = metrics_counter(m, "esc_total", NULL, labels);
    assert_non_null(c);
    metrics_counter_add(c, 1);
    char *text = render(m);
    assert_string_equal(text, "# TYPE esc_total counter\n"
                              "esc_total{msg=\"he said \\\"hi\\\"\\n\\\\\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_series_limit(void **state)
{
    (void)state;
    metrics_t *m = metrics_new();
    char labels[32];
    for (int i = 0; i < METRICS_SERIES_MAX; i++) {
        snprintf(labels, sizeof labels, "i=\"%d\"", i);
        assert_non_null(metrics_counter(m, "many_total", NULL, labels));
    }
    assert_null(metrics_counter(m, "many_total", NULL, "i=\"x\""));
    assert_null(metrics_gauge(m, "other", NULL, NULL));
    /* Existing series are still found. */
    assert_non_null(metrics_counter(m, "many_total", NULL, "i=\"7\""));
    char *out = render(m);
    assert_non_null(strstr(out, "many_total{i=\"511\"} 0\n"));
    free(out);
    metrics_free(m);
}

/* ---- concurrency --------------------------------------------------------------- */

#define THREADS 4
#define ITERS   100000

typedef struct {
    metrics_t *m;
    metric_counter *c;
    metric_gauge *g;
    metric_histogram *h;
} shared_t;

static void *worker(void *arg)
{
    shared_t *s = arg;
    /* Concurrent get-or-create must converge on one series. */
    metric_counter *mine = metrics_counter(s->m, "conc_total", "C.", "k=\"v\"");
    for (int i = 0; i < ITERS; i++) {
        metrics_counter_add(s->c, 1);
        metrics_counter_add(mine, 1);
        metrics_gauge_add(s->g, (i & 1) ? -1 : 2);
        metrics_histogram_observe(s->h, (i & 1) ? 0.5 : 2.0);
    }
    return mine;
}

static void test_concurrent_updates_exact(void **state)
{
    (void)state;
    shared_t s;
    s.m = metrics_new();
    s.c = metrics_counter(s.m, "inc_total", "Increments.", NULL);
    s.g = metrics_gauge(s.m, "level", NULL, NULL);
    const double b[] = {1};
    s.h = metrics_histogram(s.m, "obs_seconds", NULL, NULL, b, 1);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &s), 0);
    void *first = NULL;
    for (int i = 0; i < THREADS; i++) {
        void *r = NULL;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_non_null(r);
        if (i == 0)
            first = r;
        assert_ptr_equal(r, first);
    }
    char *out = render(s.m);
    char want[128];
    snprintf(want, sizeof want, "\ninc_total %d\n", THREADS * ITERS);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "conc_total{k=\"v\"} %d\n", THREADS * ITERS);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want, "\nlevel %d\n", THREADS * ITERS / 2);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof want,
             "obs_seconds_bucket{le=\"1\"} %d\nobs_seconds_bucket{le=\"+Inf\"} %d\n"
             "obs_seconds_sum %d\nobs_seconds_count %d\n",
             THREADS * ITERS / 2, THREADS * ITERS, THREADS * ITERS / 2 * 5 / 2, THREADS * ITERS);
    if (!strstr(out, want))
        fail_msg("histogram mismatch:\n%s\nwanted:\n%s", out, want);
    free(out);
    metrics_free(s.m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_empty_registry_and_doubles),
        cmocka_unit_test(test_get_or_create_and_conflicts),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_series_limit),
        cmocka_unit_test(test_concurrent_updates_exact),
    };
    return cmocka_run_group_tests_name("unit_metrics", tests, NULL, NULL);
}
