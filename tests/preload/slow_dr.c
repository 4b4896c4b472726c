/*
 * slow_dr — an LD_PRELOAD library for integration tests: every delivery
 * report librdkafka hands to the application arrives
 * $OAUTHQ_TEST_DR_DELAY_MS later (default 0), as from a broker that
 * acknowledges slowly. Everything else is the real librdkafka and the real
 * broker; the record itself is produced and stored as usual. Used by
 * tests/integration/test_intake.c to reach the intake's path where the
 * HTTP deadline answers before the delivery report (and, under `make tsan`,
 * to check that the two threads involved are ordered).
 *
 * It wraps rd_kafka_conf_set_dr_msg_cb: the application's callback is
 * kept and a delaying one registered in its place (one callback per
 * process: the intake has one producer). Runs on librdkafka's poll caller.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

typedef void (*slow_dr_fn)(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
typedef void (*slow_dr_set_fn)(rd_kafka_conf_t *conf, slow_dr_fn cb);

static slow_dr_fn slow_dr_app_cb;

static void slow_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    const char *v = getenv("OAUTHQ_TEST_DR_DELAY_MS");
    long ms = v ? strtol(v, NULL, 10) : 0;
    if (ms > 0 && ms <= 60000) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    slow_dr_app_cb(rk, m, opaque);
}

void rd_kafka_conf_set_dr_msg_cb(rd_kafka_conf_t *conf, slow_dr_fn cb)
{
    slow_dr_set_fn real = (slow_dr_set_fn)dlsym(RTLD_NEXT, "rd_kafka_conf_set_dr_msg_cb");
    if (!real)
        abort();
    slow_dr_app_cb = cb;
    real(conf, cb ? slow_dr_cb : NULL);
}
