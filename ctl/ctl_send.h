/*
 * ctl_send — produce operator commands (disconnect.v1, provider.v1) to the
 * callbacks topic with the idempotent producer and wait for Kafka's
 * acknowledgement. Single-threaded; one short-lived producer per call.
 */
#ifndef OAUTHQ_CTL_CTL_SEND_H
#define OAUTHQ_CTL_CTL_SEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

/* Produce value under key to topic: to the key's partition when
 * every_partition is 0, else one copy to every partition (commands every
 * worker must see). Returns the number of copies acknowledged, or -1
 * (retriable when Kafka did not acknowledge in time). */
long ctl_send(const config_t *c, const char *topic, const char *key, const char *value,
              int every_partition, err_t *e);

#endif
