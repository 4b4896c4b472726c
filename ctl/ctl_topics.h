/*
 * ctl_topics — `oauthqctl topics create|describe`.
 *
 * create: kafka_topics_ensure (idempotent). describe: for each of the five
 * topics, partitions and replication (metadata) and cleanup.policy,
 * retention.ms and min.insync.replicas (DescribeConfigs), then the drift
 * between what exists and what kafka_topics_ensure would create with this
 * configuration. Drift is an ERRC_PERMANENT result (exit 2) after the
 * report is printed. ctl_topics_drift is pure so it can be unit-tested.
 */
#ifndef OAUTHQ_CTL_CTL_TOPICS_H
#define OAUTHQ_CTL_CTL_TOPICS_H

#include <stdio.h>

#include "common/err.h"
#include "common/kafka.h"
#include "ctl/ctl_out.h"

#define CTL_TOPICS        KAFKA_TOPICS
#define CTL_DRIFT_MAX     32
#define CTL_DRIFT_TEXT    200
#define CTL_TOPIC_NAME    256
#define CTL_RETENTION_7D  KAFKA_RETENTION_7D
#define CTL_RETENTION_14D KAFKA_RETENTION_14D

/* What one topic looks like on the cluster. */
typedef struct {
    const char *suffix;        /* "callbacks", "connections", "status", "dlq" */
    char name[CTL_TOPIC_NAME]; /* full name */
    int exists;                /* 0: none of the fields below is known */
    int partitions;
    int replication;         /* smallest replica count over partitions */
    char cleanup_policy[64]; /* "" when not described */
    long long retention_ms;  /* -1 infinite; LLONG_MIN unknown */
    int min_isr;             /* 0 unknown */
} ctl_topic_desc;

/* One finding: which topic and what is wrong (kind is a stable token). */
typedef struct {
    char topic[32];
    char kind[40];
    char detail[CTL_DRIFT_TEXT];
} ctl_drift;

/* The suffix of topic i (0..CTL_TOPICS-1) in ensure order. */
const char *ctl_topics_suffix(int i);

/* The cleanup.policy kafka_topics_ensure gives topic i. */
const char *ctl_topics_policy(int i);

/* Drift of d[CTL_TOPICS] (indexed like ctl_topics_suffix) against the
 * configured partitions/replication; fills out[0..cap) and returns the
 * number of findings. Pure. */
int ctl_topics_drift(const ctl_topic_desc d[CTL_TOPICS], int want_partitions, int want_replication,
                     ctl_drift *out, int cap);

/* `topics` command: argv[0] is "create" or "describe". */
int ctl_topics_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of `topics`. */
void ctl_topics_help(FILE *out);

#endif
