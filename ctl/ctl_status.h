/*
 * ctl_status — `oauthqctl status ID`: a connection's latest state.
 *
 * Scans the compacted connections topic from the beginning to its end
 * (ctl_scan: read_committed, assign-only, bounded) and keeps the
 * connections.v1 record of key ID with the highest version (a later
 * tombstone erases it). Prints the public fields and the non-secret
 * internal state. Sealed fields (code, verifier, access and refresh token)
 * are never printed, only "sealed" or "none": the projection copies a fixed
 * list of fields, so a field added to the record later is not shown until
 * it is listed here. Not found is ERRC_PERMANENT (exit 2).
 */
#ifndef OAUTHQ_CTL_CTL_STATUS_H
#define OAUTHQ_CTL_CTL_STATUS_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/err.h"
#include "ctl/ctl_out.h"

#define CTL_HASH_PREFIX 12

/* The printable projection of a parsed connections.v1 record (new object,
 * caller deletes; NULL when rec is not an object). Pure. */
cJSON *ctl_status_project(const cJSON *rec);

/* The latest connections.v1 record of id (parsed; caller frees), scanning
 * the compacted topic to its end; *partition and *offset tell where.
 * NULL with ERRC_PERMANENT when absent or deleted by a tombstone. */
cJSON *ctl_status_latest(const config_t *c, const char *id, int32_t *partition, int64_t *offset,
                         err_t *e);

/* `status` command: argv holds ID and options. */
int ctl_status_run(const ctl_ctx *cx, int argc, char **argv, err_t *e);

/* Help text of `status`. */
void ctl_status_help(FILE *out);

#endif
