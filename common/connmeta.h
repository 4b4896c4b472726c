/*
 * connmeta — the platform's metadata of a connection (SPEC §4a): whose it
 * is and how the platform labels it. Given at POST /v1/connections, carried
 * through the connect session, the callback record, the worker's connection
 * and status records and the intake's platform view (never the public
 * status document).
 *
 * JSON members (exact names; every record carries the same three):
 *   "end_user":     {"id", "email", "display_name"}   id required
 *   "organization": {"id", "display_name"} | null     id required when given
 *   "tags":         {string: string}                  may be empty
 * Bounds: ids 1..CONNMETA_ID_MAX bytes, email ≤ CONNMETA_EMAIL_MAX with an
 * '@', display names ≤ CONNMETA_NAME_MAX, no control characters; at most
 * CONNMETA_TAGS_MAX tags, keys [A-Za-z0-9_.:-]{1,CONNMETA_TAG_KEY_MAX},
 * values ≤ CONNMETA_TAG_VALUE_MAX; the canonical JSON ≤ CONNMETA_JSON_MAX
 * bytes (it rides in a browser cookie during the flow).
 * A connmeta is a plain value; functions are pure and thread-safe.
 */
#ifndef OAUTHQ_COMMON_CONNMETA_H
#define OAUTHQ_COMMON_CONNMETA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/err.h"

#define CONNMETA_ID_MAX        128
#define CONNMETA_EMAIL_MAX     254
#define CONNMETA_NAME_MAX      128
#define CONNMETA_TAGS_MAX      16
#define CONNMETA_TAG_KEY_MAX   64
#define CONNMETA_TAG_VALUE_MAX 256
#define CONNMETA_JSON_MAX      2048

typedef struct {
    /* Canonical JSON object {"end_user":…,"organization":…,"tags":…}, or ""
     * when the connection has no metadata (a flow started without a
     * session). */
    char json[CONNMETA_JSON_MAX + 1];
} connmeta;

/* Read and validate the end_user/organization/tags members of `obj` into
 * *m. All absent: m->json = "" (an error when require_end_user). Any defect
 * is ERRC_PERMANENT with a message naming the member, fit for a 400. */
int connmeta_from(const cJSON *obj, int require_end_user, connmeta *m, err_t *e);

/* Parse canonical JSON text (as stored in m->json) back into *m,
 * validating it again. */
int connmeta_parse(const char *json, size_t len, connmeta *m, err_t *e);

/* Add the three members to `obj` (nothing when m has no metadata). */
void connmeta_add(cJSON *obj, const connmeta *m);

/* Add them for a platform view: end_user/organization null and tags {}
 * when m has no metadata. */
void connmeta_add_view(cJSON *obj, const connmeta *m);

/* 1 when name is one of the three member names. */
int connmeta_is_member(const char *name);

/* The end user's / organization's id ("" when none). */
void connmeta_ids(const connmeta *m, char end_user[CONNMETA_ID_MAX + 1],
                  char org[CONNMETA_ID_MAX + 1]);

#endif
