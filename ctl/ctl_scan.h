/*
 * ctl_scan — bounded reads of one topic for oauthqctl, on kafka_scan.
 *
 * An assign-only, read_committed consumer (kafka_conf_consumer with no
 * group; it never commits) reads the chosen partitions from a start offset
 * until every one of them reported its end (partition EOF: the last stable
 * offset at that moment) or the callback asks to stop. Every wait is
 * bounded: no record and no end for cfg->kafka_timeout_ms is ERRC_RETRIABLE,
 * and so is a broker that does not answer metadata. A topic that does not
 * exist is ERRC_PERMANENT (run `oauthqctl topics create`). Records are
 * handed over one at a time; the pointers live until the callback returns.
 * Single-threaded; one consumer per call.
 */
#ifndef OAUTHQ_CTL_CTL_SCAN_H
#define OAUTHQ_CTL_CTL_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/kafka.h"

/* A record (common/kafka's kafka_rec). */
typedef kafka_rec ctl_scan_rec;

/* Per record: as kafka_scan_fn (1 stop, 0 go on, -1 fail). */
typedef kafka_scan_fn ctl_scan_fn;

/* Read `topic` (full name). partition < 0: every partition from the
 * beginning; otherwise only that partition from start_offset. Returns the
 * number of records handed over, or -1 (e filled). */
long ctl_scan_topic(const config_t *c, const char *topic, int32_t partition, int64_t start_offset,
                    ctl_scan_fn fn, void *ud, err_t *e);

#endif
