/*
 * ctl_replay — `oauthqctl replay ID...` and `oauthqctl replay --dlq`.
 *
 * replay ID...: one replay.v1 record per id (records_replay_encode;
 * requested_by = $USER or "oauthqctl", --reason as audit text) produced to
 * the callbacks topic keyed by the id.
 * replay --dlq: every dead-letter record that passes the filter (--since,
 * --reason prefix) and whose `original` is a JSON record with a "schema"
 * and a usable key has its original bytes produced again, unchanged, to the
 * callbacks topic under the same key; --dry-run only lists.
 * Both use the idempotent acks=all producer (kafka_conf_producer) and wait
 * for every delivery report, bounded by OAUTHQ_PRODUCE_TIMEOUT_MS; an
 * undelivered record is the class of its error (usually retriable, exit
 * 1). The worker decides what a replay does (its state machine: a code is
 * never exchanged twice); this tool only publishes. It never prints or
 * logs an original record (it may hold a code).
 */
#ifndef OAUTHQ_CTL_CTL_REPLAY_H
#define OAUTHQ_CTL_CTL_REPLAY_H

#include <stddef.h>
#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_dlq.h"
#include "ctl/ctl_out.h"

#define CTL_REPLAY_MAX 10000 /* records per run */
#define CTL_WHY_MAX    96

/* Can this dead-letter record be replayed? 1 yes, 0 no with the reason in
 * why[CTL_WHY_MAX]; schema[cap] gets the original's schema when known.
 * Pure. */
int ctl_replay_usable(const ctl_dlq_entry *d, char *schema, size_t cap, char why[CTL_WHY_MAX]);

/* Is id a connection id this tool will publish (1..63 printable bytes, no
 * spaces)? Pure. */
int ctl_replay_id_ok(const char *id);

/* `replay` command. */
int ctl_replay_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of `replay`. */
void ctl_replay_help(FILE *out);

#endif
