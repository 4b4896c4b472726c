/*
 * ctl — the oauthqctl command dispatcher (operations CLI).
 *
 * Commands so far:
 *   topics create   create the oauthq topics (idempotent)
 * Each command maps error classes to exit codes: 0 ok, 1 retriable (try
 * again), 2 usage or permanent error, 3 fatal (configuration).
 */
#ifndef OAUTHQ_CTL_CTL_H
#define OAUTHQ_CTL_CTL_H

#include <stdio.h>

/* Run oauthqctl with argv (argv[0] is the program name); returns the exit
 * code. Output goes to out, diagnostics to errout. */
int ctl_main(int argc, char **argv, FILE *out, FILE *errout);

#endif
