/*
 * ctl_token — `oauthqctl token ID`: decrypt and print a connection's tokens
 * for an authorised operator (one holding OAUTHQ_DATA_KEYS_FILE).
 *
 * Reads the latest connections.v1 record for ID, opens its sealed access
 * and refresh tokens with the data keyring, prints them to stdout and a
 * warning to stderr. Nothing is logged. Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_TOKEN_H
#define OAUTHQ_CTL_CTL_TOKEN_H

#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_out.h"

/* Run `token ID` (argv: the words after "token"). */
int ctl_token_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of the token command. */
void ctl_token_help(FILE *out);

#endif
