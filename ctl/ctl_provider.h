/*
 * ctl_provider — `oauthqctl provider check NAME`: is a provider's
 * configuration usable, without spending a real code?
 *
 * Sends one token request with a made-up code (never issued, so nothing at
 * the provider changes) using the configured client credentials, and reads
 * the answer: invalid_grant means the endpoint is reachable and our client
 * is accepted; invalid_client means the credentials are wrong; a transport
 * failure means the endpoint cannot be reached. Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_PROVIDER_H
#define OAUTHQ_CTL_CTL_PROVIDER_H

#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_out.h"

/* Run `provider SUBCOMMAND ...` (argv: the words after "provider"). */
int ctl_provider_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of the provider command. */
void ctl_provider_help(FILE *out);

#endif
