/*
 * ctl_webhooks — `oauthqctl webhooks list|replay`: the webhook dispatcher's
 * delivery states (SPEC §4b) and the operator's way to send events again.
 *
 * list [ID...]: reads the webhooks topic (ctl_scan, bounded,
 * read_committed), keeps each connection's latest webhook.v1 record and
 * prints its queued events (webhook-id, type, state, attempts, next
 * attempt, last answer) and last outcomes; never the bodies.
 * replay ID...|--all: publishes a webhook_replay.v1 request (key
 * "replay/<id>", or "replay/" followed by "*" for --all) to every partition of the webhooks
 * topic; the dispatcher owning the connection makes its failed events and
 * the events a 410 held due again, in version order, with the same
 * webhook-id (receivers deduplicate). Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_WEBHOOKS_H
#define OAUTHQ_CTL_CTL_WEBHOOKS_H

#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_out.h"

/* Run `webhooks SUB ...`; argv[0] is the subcommand. */
int ctl_webhooks_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Usage text. */
void ctl_webhooks_help(FILE *out);

#endif
