/*
 * ctl_args — pure command-line parsing for oauthqctl subcommands.
 *
 * ctl_args_parse reads the options after a subcommand ("--json",
 * "--since T", "--reason TEXT", "--limit N", "--dry-run", "--dlq", "--help";
 * "--flag=value" works too, "--" ends options) into a ctl_opts, accepting
 * only the flags a command allows; the rest are positional arguments.
 * Times are RFC 3339 ("2025-01-02T03:04:05Z", fraction and offsets allowed)
 * or a relative age ("90s", "15m", "2h", "7d": that long before now).
 * No I/O, no globals: every function is pure and thread-safe. Errors are
 * ERRC_PERMANENT (usage) with a message naming the argument.
 */
#ifndef OAUTHQ_CTL_CTL_ARGS_H
#define OAUTHQ_CTL_CTL_ARGS_H

#include <stdint.h>

#include "common/err.h"
#include "common/records.h"

#define CTL_OPT_JSON    0x01u
#define CTL_OPT_SINCE   0x02u
#define CTL_OPT_REASON  0x04u
#define CTL_OPT_LIMIT   0x08u
#define CTL_OPT_DRY_RUN 0x10u
#define CTL_OPT_DLQ     0x20u
#define CTL_OPT_HELP    0x40u /* always allowed */

#define CTL_POS_MAX   256
#define CTL_LIMIT_MAX 100000L

typedef struct {
    unsigned seen;                     /* CTL_OPT_* flags that were given */
    int64_t since_ms;                  /* CTL_OPT_SINCE: unix ms */
    char reason[RECORDS_TEXT_MAX + 1]; /* CTL_OPT_REASON: text or prefix */
    long limit;                        /* CTL_OPT_LIMIT: 1..CTL_LIMIT_MAX */
    int npos;
    const char *pos[CTL_POS_MAX]; /* positional arguments (point into argv) */
} ctl_opts;

/* Parse argv[0..argc) with the flags in `allowed`; now_ms resolves
 * relative --since values. Unknown or repeated flags, missing or bad
 * values, too many positionals: ERRC_PERMANENT. */
int ctl_args_parse(int argc, char **argv, unsigned allowed, int64_t now_ms, ctl_opts *o, err_t *e);

/* True when argv[0..argc) holds "--help" or "-h" (before any "--"). */
int ctl_args_wants_help(int argc, char **argv);

/* Parse a strict RFC 3339 date-time into unix ms; -1 when malformed. */
int ctl_args_rfc3339(const char *s, int64_t *ms);

/* Parse an RFC 3339 time or a relative age before now_ms ("15m"). */
int ctl_args_time(const char *s, int64_t now_ms, int64_t *ms, err_t *e);

/* Parse "PARTITION:OFFSET" (both non-negative decimal). */
int ctl_args_partoff(const char *s, int32_t *partition, int64_t *offset, err_t *e);

#endif
