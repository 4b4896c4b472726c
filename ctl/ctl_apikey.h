/*
 * ctl_apikey — `oauthqctl apikey create --scopes S[,S…] [--kid KID]
 * [--json]`: make a new platform API key (SPEC §4a).
 *
 * Prints the key once (it is stored nowhere) and the entry to add under
 * "keys" in OAUTHQ_API_KEYS_FILE (its SHA-256 and scopes). Without --kid a
 * random 8-character kid is chosen. Nothing is logged; no Kafka.
 * Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_APIKEY_H
#define OAUTHQ_CTL_CTL_APIKEY_H

#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_out.h"

/* Run `apikey create …` (argv: the words after "apikey"). */
int ctl_apikey_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of the apikey command. */
void ctl_apikey_help(FILE *out);

#endif
