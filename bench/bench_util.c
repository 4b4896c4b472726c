/* bench_util — see bench_util.h. */
#include "bench/bench_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/kafka.h"

double bench_mono_ms(void)
{
    return (double)clock_mono_us() / 1000.0;
}

void bench_sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000.0),
                          (long)((ms - (double)(long)(ms / 1000.0) * 1000.0) * 1e6)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int bench_samples_add(bench_samples *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        double *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

void bench_samples_free(bench_samples *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(bench_samples *s, double q)
{
    if (s->n == 0)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t rank = (size_t)(q / 100.0 * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1];
}

uint64_t bench_rand(uint64_t *state)
{
    if (*state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
        if (*state == 0)
            *state = 0x9e3779b97f4a7c15ULL;
    }
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

void bench_rand_b64url(uint64_t *state, char *out, size_t n)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0)
            r = bench_rand(state);
        out[i] = alpha[r & 63];
        r >>= 6;
    }
    out[n] = '\0';
}

int bench_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int bench_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

rd_kafka_t *bench_consumer(const config_t *c, const char *topic, int timeout_ms, err_t *e)
{
    static const char *const settings[] = {"fetch.wait.max.ms",
                                           "5",
                                           "fetch.error.backoff.ms",
                                           "5",
                                           "enable.partition.eof",
                                           "false",
                                           NULL};
    rd_kafka_t *rk = kafka_consumer_new(c, settings, "consumer", e);
    if (!rk)
        return NULL;
    int n = 0;
    if (kafka_partition_count(rk, topic, timeout_ms, &n, e) < 0) {
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        err_set(e, kafka_errc(err), "assign %s: %s", topic, rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}
