/*
 * ctl — the oauthqctl command dispatcher (operations CLI).
 *
 * Commands (each with --help, a table by default and --json for one JSON
 * document on stdout):
 *   topics create|describe         ctl_topics.h
 *   status ID                      ctl_status.h
 *   dlq list|show                  ctl_dlq.h
 *   replay ID... | --dlq           ctl_replay.h
 *   provider check|pause|resume    ctl_provider.h
 *   token ID                       ctl_token.h
 *   disconnect ID...               ctl_disconnect.h
 *   apikey create --scopes S       ctl_apikey.h
 *   webhooks list|replay           ctl_webhooks.h
 * (the table in ctl.c is the list; this one follows it in the same order,
 * which unit_ctl checks against `oauthqctl --help`).
 * Every command returns an err_t class, mapped here and only here to the
 * exit code: 0 ok, 1 retriable (Kafka unreachable, not delivered: try
 * again), 2 usage, permanent error, not found or drift, 3 fatal
 * (configuration). Results go to `out`, diagnostics to `errout`, logs to
 * stderr. Single-threaded.
 */
#ifndef OAUTHQ_CTL_CTL_H
#define OAUTHQ_CTL_CTL_H

#include <stdio.h>

#include "common/err.h"

#define CTL_EXIT_OK        0
#define CTL_EXIT_RETRIABLE 1
#define CTL_EXIT_PERMANENT 2
#define CTL_EXIT_FATAL     3

/* Run oauthqctl with argv (argv[0] is the program name); returns the exit
 * code. Output goes to out, diagnostics to errout. */
int ctl_main(int argc, char **argv, FILE *out, FILE *errout);

/* The exit code of an error class (ERRC_OK → 0). */
int ctl_exit_code(errc cls);

#endif
