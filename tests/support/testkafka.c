/* testkafka — see testkafka.h: the tests' bounds on kafka_scan (common/kafka). */
#include "tests/support/testkafka.h"

#include "common/kafka.h"

typedef struct {
    testkafka_fn fn;
    void *ud;
} relay;

static int relay_rec(const kafka_rec *r, void *ud)
{
    const relay *t = ud;
    testkafka_record rec = {r->partition, r->offset, r->key, r->key_len, r->value, r->value_len};
    return t->fn && t->fn(&rec, t->ud) ? 1 : 0;
}

long testkafka_read(const config_t *c, const char *topic, long min_records, int timeout_ms,
                    testkafka_fn fn, void *ud, err_t *e)
{
    kafka_scan_opts o = {-1, 0, min_records, timeout_ms, timeout_ms};
    relay t = {fn, ud};
    return kafka_scan(c, topic, &o, relay_rec, &t, e);
}
