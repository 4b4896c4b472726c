/*
 * testkafka — read a topic for assertions in integration tests and tools.
 *
 * Reads every partition of a topic from the beginning with a
 * read_committed consumer (no group, no commits) until each partition
 * reached its end and at least `min_records` records were seen, or until
 * `timeout_ms` passed. Records are handed to the caller one by one.
 */
#ifndef OAUTHQ_TESTS_SUPPORT_TESTKAFKA_H
#define OAUTHQ_TESTS_SUPPORT_TESTKAFKA_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

typedef struct {
    int32_t partition;
    int64_t offset;
    const char *key; /* NUL-terminated copy, NULL for a null key */
    size_t key_len;
    const char *value; /* NUL-terminated copy, NULL for a tombstone */
    size_t value_len;
} testkafka_record;

/* Called per record; return non-zero to stop early. */
typedef int (*testkafka_fn)(const testkafka_record *r, void *ud);

/* Read `topic` (full name); returns the number of records seen, -1 on error
 * (e filled). Fewer than min_records by the deadline is not an error: the
 * caller asserts on the count. */
long testkafka_read(const config_t *c, const char *topic, long min_records, int timeout_ms,
                    testkafka_fn fn, void *ud, err_t *e);

#endif
