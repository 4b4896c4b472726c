/*
 * testproc — start, probe and stop helper processes in integration tests.
 *
 * Processes are started with fork/exec, their stdout and stderr appended to a
 * log file, and stopped by pid (SIGTERM, bounded wait, then SIGKILL) and
 * always reaped. Nothing here uses process names or broad signals.
 */
#ifndef OAUTHQ_TESTS_SUPPORT_TESTPROC_H
#define OAUTHQ_TESTS_SUPPORT_TESTPROC_H

#include <sys/types.h>

/* fork+execvp argv (argv[0] is the program), stdout+stderr appended to
 * logfile (NULL: inherit); the pid, or -1 when fork fails. An exec failure
 * shows as exit status 127. */
pid_t testproc_spawn(char *const argv[], const char *logfile);

/* Poll url with libcurl until any HTTP answer arrives (any status), at most
 * timeout_ms; 0 when it answered, -1 on timeout. */
int testproc_wait_http(const char *url, int timeout_ms);

/* SIGTERM pid, wait up to timeout_ms, then SIGKILL; always reaps. Returns the
 * exit status (0..255; 128+N if killed by another signal N), or -1 if it had
 * to be SIGKILLed or could not be waited for. */
int testproc_stop(pid_t pid, int timeout_ms);

/* Wait up to timeout_ms for pid to exit by itself and reap it: its exit
 * status (as testproc_stop), or -2 when it was still running at the
 * deadline (it is then stopped with testproc_stop), -1 on a wait error. */
int testproc_wait_exit(pid_t pid, int timeout_ms);

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int testproc_free_port(void);

#endif
