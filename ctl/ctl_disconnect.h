/*
 * ctl_disconnect — `oauthqctl disconnect ID...`: the same as DELETE
 * /v1/connections/{id}: a disconnect.v1 record per id, which the worker
 * turns into a provider revocation and status `disconnected`.
 * Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_DISCONNECT_H
#define OAUTHQ_CTL_CTL_DISCONNECT_H

#include <stdio.h>

#include "common/err.h"
#include "ctl/ctl_out.h"

/* Run `disconnect ID...` (argv: the words after "disconnect"). */
int ctl_disconnect_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of the disconnect command. */
void ctl_disconnect_help(FILE *out);

#endif
