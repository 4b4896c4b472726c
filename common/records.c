/* records — see records.h. Pure; any thread. */
#include "common/records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#define RECORD_MAX 16384 /* largest record any decoder accepts, bytes */

void records_time_format(int64_t ms, char out[RECORDS_TIME_MAX])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, RECORDS_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, RECORDS_TIME_MAX - n, ".%03dZ", (int)(ms % 1000));
}

int records_time_parse(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, milli, used = 0;
    if (!s || strlen(s) != 24 ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi, &sec, &milli, &used) !=
            7 ||
        used != 24)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *ms = (int64_t)t * 1000 + milli;
    return 0;
}

static void add_opt(cJSON *o, const char *k, const char *v)
{
    if (v && v[0])
        cJSON_AddStringToObject(o, k, v);
}

static void add_time(cJSON *o, const char *k, int64_t ms)
{
    char ts[RECORDS_TIME_MAX];
    records_time_format(ms, ts);
    cJSON_AddStringToObject(o, k, ts);
}

/* The opening and the end every encoder shares: an object whose first member is "schema";
 * then the compact JSON (the caller frees it), o deleted, or NULL + ERRC_RETRIABLE (out of
 * memory: cJSON's adds into a NULL object are no-ops, so only the print needs checking). */
static cJSON *new_record(const char *schema_name)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", schema_name);
    return o;
}

static char *end_record(cJSON *o, const char *schema_name, err_t *e)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding %s record: out of memory", schema_name);
    return s;
}

char *records_callback_encode(const records_callback *r, err_t *e)
{
    cJSON *o = new_record(RECORDS_CALLBACK_SCHEMA);
    cJSON_AddStringToObject(o, "connection_id", r->connection_id);
    cJSON_AddStringToObject(o, "provider", r->provider);
    cJSON_AddStringToObject(o, "kind", r->kind == RECORDS_CB_CODE ? "code" : "error");
    if (r->kind == RECORDS_CB_CODE) {
        cJSON_AddStringToObject(o, "code", r->code);
        add_opt(o, "code_verifier", r->code_verifier);
    } else {
        cJSON_AddStringToObject(o, "error", r->error);
        add_opt(o, "error_description", r->error_description);
    }
    add_opt(o, "iss", r->iss);
    add_opt(o, "scope", r->scope);
    add_opt(o, "return_to", r->return_to);
    add_time(o, "received_at", r->received_at_ms);
    cJSON_AddStringToObject(o, "intake_id", r->intake_id);
    cJSON_AddStringToObject(o, "request_id", r->request_id);
    connmeta_add(o, &r->meta);
    return end_record(o, RECORDS_CALLBACK_SCHEMA, e);
}

/* Every member of o is named in known (NULL-terminated); else PERMANENT
 * naming the first stranger. */
static int only_known(const cJSON *o, const char *const *known, err_t *e)
{
    for (const cJSON *it = o->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= strcmp(it->string, known[i]) == 0;
        if (!ok)
            return err_set(e, ERRC_PERMANENT, "unknown field %.40s", it->string);
    }
    return 0;
}

/* Copy a string field: required or optional, bounded, no control bytes. */
static int field(const cJSON *o, const char *k, char *out, size_t cap, int required, err_t *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    out[0] = '\0';
    if (!v) {
        if (required)
            return err_set(e, ERRC_PERMANENT, "missing field %s", k);
        return 0;
    }
    if (!cJSON_IsString(v))
        return err_set(e, ERRC_PERMANENT, "field %s is not a string", k);
    size_t n = strlen(v->valuestring);
    if (n >= cap || (required && n == 0))
        return err_set(e, ERRC_PERMANENT, "field %s has invalid length %zu", k, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v->valuestring[i] < 0x20)
            return err_set(e, ERRC_PERMANENT, "field %s has a control character", k);
    memcpy(out, v->valuestring, n + 1);
    return 1;
}

/* A timestamp field (RFC 3339 UTC with milliseconds, records_time_format) into *ms: 1 read,
 * 0 absent and optional, -1 + ERRC_PERMANENT. */
static int time_field(const cJSON *o, const char *k, int64_t *ms, int required, err_t *e)
{
    char ts[RECORDS_TIME_MAX];
    int n = field(o, k, ts, sizeof ts, required, e);
    if (n <= 0 || !ts[0]) /* an optional field may be present and empty */
        return n < 0 ? -1 : 0;
    if (records_time_parse(ts, ms) < 0)
        return err_set(e, ERRC_PERMANENT, "field %s is not RFC 3339 UTC with milliseconds", k);
    return 1;
}

/* The opening every decoder shares: at most RECORD_MAX bytes, a JSON object, no member
 * outside known (NULL: members are not checked), "schema" equal to schema_name. Returns the
 * parsed object (the caller deletes it) or NULL + ERRC_PERMANENT. */
static cJSON *open_record(const char *json, size_t len, const char *schema_name,
                          const char *const *known, err_t *e)
{
    if (len > RECORD_MAX) {
        err_set(e, ERRC_PERMANENT, "record larger than 16 KiB");
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(json, len);
    char schema[40];
    if (!cJSON_IsObject(o))
        err_set(e, ERRC_PERMANENT, "not a JSON object");
    else if ((known && only_known(o, known, e) < 0) ||
             field(o, "schema", schema, sizeof schema, 1, e) < 0)
        ; /* e is set */
    else if (strcmp(schema, schema_name) != 0)
        err_set(e, ERRC_PERMANENT, "schema is %.40s, expected %s", schema, schema_name);
    else
        return o;
    cJSON_Delete(o);
    return NULL;
}

int records_callback_decode(const char *json, size_t len, records_callback *out, err_t *e)
{
    static const char *const known[] = {
        "schema",    "connection_id",     "provider", "kind",         "code",      "code_verifier",
        "error",     "error_description", "iss",      "scope",        "return_to", "received_at",
        "intake_id", "request_id",        "end_user", "organization", "tags",      NULL};
    memset(out, 0, sizeof *out);
    cJSON *o = open_record(json, len, RECORDS_CALLBACK_SCHEMA, known, e);
    if (!o)
        return -1;
    int rc = -1;
    char kind[8];
    if (field(o, "connection_id", out->connection_id, sizeof out->connection_id, 1, e) < 0 ||
        field(o, "provider", out->provider, sizeof out->provider, 1, e) < 0 ||
        field(o, "kind", kind, sizeof kind, 1, e) < 0 ||
        field(o, "iss", out->iss, sizeof out->iss, 0, e) < 0 ||
        field(o, "scope", out->scope, sizeof out->scope, 0, e) < 0 ||
        field(o, "return_to", out->return_to, sizeof out->return_to, 0, e) < 0 ||
        time_field(o, "received_at", &out->received_at_ms, 1, e) < 0 ||
        field(o, "intake_id", out->intake_id, sizeof out->intake_id, 1, e) < 0 ||
        field(o, "request_id", out->request_id, sizeof out->request_id, 1, e) < 0 ||
        connmeta_from(o, 0, &out->meta, e) < 0)
        goto out;
    if (strcmp(kind, "code") == 0) {
        out->kind = RECORDS_CB_CODE;
        if (field(o, "code", out->code, sizeof out->code, 1, e) < 0 ||
            field(o, "code_verifier", out->code_verifier, sizeof out->code_verifier, 0, e) < 0)
            goto out;
        if (cJSON_GetObjectItemCaseSensitive(o, "error")) {
            err_set(e, ERRC_PERMANENT, "kind code with an error field");
            goto out;
        }
    } else if (strcmp(kind, "error") == 0) {
        out->kind = RECORDS_CB_ERROR;
        if (field(o, "error", out->error, sizeof out->error, 1, e) < 0 ||
            field(o, "error_description", out->error_description, sizeof out->error_description, 0,
                  e) < 0)
            goto out;
        if (cJSON_GetObjectItemCaseSensitive(o, "code")) {
            err_set(e, ERRC_PERMANENT, "kind error with a code field");
            goto out;
        }
    } else {
        err_set(e, ERRC_PERMANENT, "field kind must be code or error");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

static char *command_encode(const char *schema_name, const records_replay *r, err_t *e);
static int command_decode(const char *schema_name, const char *json, size_t len,
                          records_replay *out, err_t *e);

char *records_replay_encode(const records_replay *r, err_t *e)
{
    return command_encode(RECORDS_REPLAY_SCHEMA, r, e);
}

int records_replay_decode(const char *json, size_t len, records_replay *out, err_t *e)
{
    return command_decode(RECORDS_REPLAY_SCHEMA, json, len, out, e);
}

char *records_disconnect_encode(const records_replay *r, err_t *e)
{
    return command_encode(RECORDS_DISCONNECT_SCHEMA, r, e);
}

int records_disconnect_decode(const char *json, size_t len, records_replay *out, err_t *e)
{
    return command_decode(RECORDS_DISCONNECT_SCHEMA, json, len, out, e);
}

static char *command_encode(const char *schema_name, const records_replay *r, err_t *e)
{
    cJSON *o = new_record(schema_name);
    cJSON_AddStringToObject(o, "connection_id", r->connection_id);
    add_time(o, "requested_at", r->requested_at_ms);
    cJSON_AddStringToObject(o, "requested_by", r->requested_by);
    add_opt(o, "reason", r->reason);
    return end_record(o, schema_name, e);
}

static int command_decode(const char *schema_name, const char *json, size_t len,
                          records_replay *out, err_t *e)
{
    static const char *const known[] = {"schema",       "connection_id", "requested_at",
                                        "requested_by", "reason",        NULL};
    memset(out, 0, sizeof *out);
    cJSON *o = open_record(json, len, schema_name, known, e);
    if (!o)
        return -1;
    int rc = -1;
    if (field(o, "connection_id", out->connection_id, sizeof out->connection_id, 1, e) >= 0 &&
        time_field(o, "requested_at", &out->requested_at_ms, 1, e) >= 0 &&
        field(o, "requested_by", out->requested_by, sizeof out->requested_by, 1, e) >= 0 &&
        field(o, "reason", out->reason, sizeof out->reason, 0, e) >= 0)
        rc = 0;
    cJSON_Delete(o);
    return rc;
}

int records_schema_of(const char *json, size_t len, char *out, size_t cap)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "schema");
    int rc = -1;
    if (cJSON_IsString(s) && strlen(s->valuestring) < cap) {
        memcpy(out, s->valuestring, strlen(s->valuestring) + 1);
        rc = 0;
    }
    cJSON_Delete(o);
    return rc;
}

char *records_provider_encode(const records_provider *r, err_t *e)
{
    cJSON *o = new_record(RECORDS_PROVIDER_SCHEMA);
    cJSON_AddStringToObject(o, "provider", r->provider);
    cJSON_AddStringToObject(o, "action", r->pause ? "pause" : "resume");
    add_time(o, "requested_at", r->requested_at_ms);
    cJSON_AddStringToObject(o, "requested_by", r->requested_by);
    return end_record(o, RECORDS_PROVIDER_SCHEMA, e);
}

int records_provider_decode(const char *json, size_t len, records_provider *out, err_t *e)
{
    static const char *const known[] = {"schema",       "provider",     "action",
                                        "requested_at", "requested_by", NULL};
    memset(out, 0, sizeof *out);
    cJSON *o = open_record(json, len, RECORDS_PROVIDER_SCHEMA, known, e);
    if (!o)
        return -1;
    int rc = -1;
    char action[16];
    if (field(o, "provider", out->provider, sizeof out->provider, 1, e) < 0 ||
        field(o, "action", action, sizeof action, 1, e) < 0 ||
        time_field(o, "requested_at", &out->requested_at_ms, 1, e) < 0 ||
        field(o, "requested_by", out->requested_by, sizeof out->requested_by, 1, e) < 0)
        goto out;
    if (strcmp(action, "pause") != 0 && strcmp(action, "resume") != 0) {
        err_set(e, ERRC_PERMANENT, "field action must be pause or resume");
        goto out;
    }
    out->pause = strcmp(action, "pause") == 0;
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

char *records_provider_state_encode(const records_provider_state *r, err_t *e)
{
    cJSON *o = new_record(RECORDS_PROVIDER_STATE_SCHEMA);
    cJSON_AddStringToObject(o, "provider", r->provider);
    cJSON_AddStringToObject(o, "state", r->state);
    if (r->until_ms > 0)
        add_time(o, "until", r->until_ms);
    add_time(o, "as_of", r->as_of_ms);
    cJSON_AddStringToObject(o, "by", r->by);
    return end_record(o, RECORDS_PROVIDER_STATE_SCHEMA, e);
}

int records_provider_state_decode(const char *json, size_t len, records_provider_state *out,
                                  err_t *e)
{
    memset(out, 0, sizeof *out);
    /* Members are not checked: readers accept later additions to provider_state.v1. */
    cJSON *o = open_record(json, len, RECORDS_PROVIDER_STATE_SCHEMA, NULL, e);
    if (!o)
        return -1;
    int rc = -1;
    if (field(o, "provider", out->provider, sizeof out->provider, 1, e) < 0 ||
        field(o, "state", out->state, sizeof out->state, 1, e) < 0 ||
        time_field(o, "until", &out->until_ms, 0, e) < 0 ||
        time_field(o, "as_of", &out->as_of_ms, 1, e) < 0 ||
        field(o, "by", out->by, sizeof out->by, 1, e) < 0)
        goto out;
    if (strcmp(out->state, "running") != 0 && strcmp(out->state, "paused") != 0 &&
        strcmp(out->state, "invalid_client") != 0) {
        err_set(e, ERRC_PERMANENT, "field state must be running, paused or invalid_client");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

char *records_refresh_encode(const records_refresh *r, err_t *e)
{
    cJSON *o = new_record(RECORDS_REFRESH_SCHEMA);
    cJSON_AddStringToObject(o, "connection_id", r->connection_id);
    cJSON_AddStringToObject(o, "provider", r->provider);
    cJSON_AddNumberToObject(o, "seen_version", (double)r->seen_version);
    add_time(o, "requested_at", r->requested_at_ms);
    cJSON_AddStringToObject(o, "intake_id", r->intake_id);
    cJSON_AddStringToObject(o, "request_id", r->request_id);
    return end_record(o, RECORDS_REFRESH_SCHEMA, e);
}

int records_refresh_decode(const char *json, size_t len, records_refresh *out, err_t *e)
{
    static const char *const known[] = {
        "schema",       "connection_id", "provider",   "seen_version",
        "requested_at", "intake_id",     "request_id", NULL};
    memset(out, 0, sizeof *out);
    cJSON *o = open_record(json, len, RECORDS_REFRESH_SCHEMA, known, e);
    if (!o)
        return -1;
    int rc = -1;
    if (field(o, "connection_id", out->connection_id, sizeof out->connection_id, 1, e) < 0 ||
        field(o, "provider", out->provider, sizeof out->provider, 1, e) < 0 ||
        time_field(o, "requested_at", &out->requested_at_ms, 1, e) < 0 ||
        field(o, "intake_id", out->intake_id, sizeof out->intake_id, 1, e) < 0 ||
        field(o, "request_id", out->request_id, sizeof out->request_id, 1, e) < 0)
        goto out;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "seen_version");
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 9007199254740991.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble) {
        err_set(e, ERRC_PERMANENT, "field seen_version must be an integer >= 1");
        goto out;
    }
    out->seen_version = (int64_t)v->valuedouble;
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

char *records_session_encode(const records_session *r, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    char cr[RECORDS_TIME_MAX], ex[RECORDS_TIME_MAX];
    records_time_format(r->created_at_ms, cr);
    records_time_format(r->expires_at_ms, ex);
    cJSON_AddStringToObject(o, "schema", RECORDS_SESSION_SCHEMA);
    cJSON_AddStringToObject(o, "connection_id", r->connection_id);
    cJSON_AddStringToObject(o, "provider", r->provider);
    add_opt(o, "return_to", r->return_to);
    cJSON_AddStringToObject(o, "created_at", cr);
    cJSON_AddStringToObject(o, "expires_at", ex);
    cJSON_AddStringToObject(o, "intake_id", r->intake_id);
    cJSON_AddStringToObject(o, "request_id", r->request_id);
    connmeta_add(o, &r->meta);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding session record: out of memory");
    return s;
}

int records_session_decode(const char *json, size_t len, records_session *out, err_t *e)
{
    static const char *const known[] = {"schema",     "connection_id", "provider",  "return_to",
                                        "created_at", "expires_at",    "intake_id", "request_id",
                                        "end_user",   "organization",  "tags",      NULL};
    memset(out, 0, sizeof *out);
    if (len > 16384)
        return err_set(e, ERRC_PERMANENT, "record larger than 16 KiB");
    cJSON *o = cJSON_ParseWithLength(json, len);
    int rc = -1;
    char schema[40], cr[RECORDS_TIME_MAX], ex[RECORDS_TIME_MAX];
    if (!cJSON_IsObject(o)) {
        err_set(e, ERRC_PERMANENT, "not a JSON object");
        goto out;
    }
    if (only_known(o, known, e) < 0)
        goto out;
    if (field(o, "schema", schema, sizeof schema, 1, e) < 0)
        goto out;
    if (strcmp(schema, RECORDS_SESSION_SCHEMA) != 0) {
        err_set(e, ERRC_PERMANENT, "schema is %.40s, expected %s", schema, RECORDS_SESSION_SCHEMA);
        goto out;
    }
    if (field(o, "connection_id", out->connection_id, sizeof out->connection_id, 1, e) < 0 ||
        field(o, "provider", out->provider, sizeof out->provider, 1, e) < 0 ||
        field(o, "return_to", out->return_to, sizeof out->return_to, 0, e) < 0 ||
        field(o, "created_at", cr, sizeof cr, 1, e) < 0 ||
        field(o, "expires_at", ex, sizeof ex, 1, e) < 0 ||
        field(o, "intake_id", out->intake_id, sizeof out->intake_id, 1, e) < 0 ||
        field(o, "request_id", out->request_id, sizeof out->request_id, 1, e) < 0 ||
        connmeta_from(o, 0, &out->meta, e) < 0)
        goto out;
    if (records_time_parse(cr, &out->created_at_ms) < 0 ||
        records_time_parse(ex, &out->expires_at_ms) < 0) {
        err_set(e, ERRC_PERMANENT,
                "fields created_at and expires_at must be RFC 3339 UTC with "
                "milliseconds");
        goto out;
    }
    if (out->expires_at_ms < out->created_at_ms) {
        err_set(e, ERRC_PERMANENT, "field expires_at is before created_at");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}
