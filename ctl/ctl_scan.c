/* ctl_scan — see ctl_scan.h: oauthqctl's bounds on kafka_scan. */
#include "ctl/ctl_scan.h"

long ctl_scan_topic(const config_t *c, const char *topic, int32_t partition, int64_t start_offset,
                    ctl_scan_fn fn, void *ud, err_t *e)
{
    /* Read to the end once; no progress for kafka_timeout_ms is an error, and so is not being
     * at the end after 10 min (a topic growing faster than it is read). */
    kafka_scan_opts o = {partition, start_offset, 0, c->kafka_timeout_ms, 600000};
    return kafka_scan(c, topic, &o, fn, ud, e);
}
