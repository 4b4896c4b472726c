/* connrec — see connrec.h. Pure decoders; any thread. */
#include "common/connrec.h"

#include <stdio.h>
#include <string.h>

#include "common/records.h"

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* The enum index of name among names[0..n) (skipping NULL entries); -1. */
static int name_index(const char *(*name_of)(int), int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        const char *s = name_of(i);
        if (s && strcmp(s, name) == 0)
            return i;
    }
    return -1;
}

static const char *status_name(int i)
{
    return conn_status_name((conn_status)i);
}
static const char *phase_name(int i)
{
    return conn_phase_name((conn_phase)i);
}
static const char *reason_name(int i)
{
    return conn_reason_name((conn_reason)i);
}

/* A null (-> 0) or a known name (-> its index) into *out; -1 otherwise. */
static int opt_enum(const cJSON *v, const char *(*name_of)(int), int n, int *out)
{
    if (!v || cJSON_IsNull(v)) {
        *out = 0;
        return 0;
    }
    if (!cJSON_IsString(v) || (*out = name_index(name_of, n, v->valuestring)) <= 0)
        return -1;
    return 0;
}

static int is_int_in(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi &&
           v->valuedouble == (double)(int64_t)v->valuedouble;
}

static int status_fields(const cJSON *o, connrec_status *out, err_t *e)
{
    const cJSON *schema = get(o, "schema"), *id = get(o, "id"), *pv = get(o, "provider"),
                *st = get(o, "status"), *ver = get(o, "version"), *upd = get(o, "updated_at");
    int phase = 0, reason = 0, status;
    if (!cJSON_IsString(schema) || strcmp(schema->valuestring, STATUS_SCHEMA) != 0)
        return err_set(e, ERRC_PERMANENT, "status record: schema is not " STATUS_SCHEMA);
    if (!cJSON_IsString(id) || !id->valuestring[0] || strlen(id->valuestring) >= CONN_ID_MAX)
        return err_set(e, ERRC_PERMANENT, "status record: bad id");
    if (pv && !cJSON_IsNull(pv) &&
        (!cJSON_IsString(pv) || strlen(pv->valuestring) >= RECORDS_PROVIDER_MAX))
        return err_set(e, ERRC_PERMANENT, "status record: bad provider");
    if (!cJSON_IsString(st) || (status = name_index(status_name, 5, st->valuestring)) < 0)
        return err_set(e, ERRC_PERMANENT, "status record: bad status");
    if (opt_enum(get(o, "phase"), phase_name, 5, &phase) < 0)
        return err_set(e, ERRC_PERMANENT, "status record: bad phase");
    if (opt_enum(get(o, "reason"), reason_name, 10, &reason) < 0)
        return err_set(e, ERRC_PERMANENT, "status record: bad reason");
    if (!is_int_in(ver, 1, CONNREC_VERSION_MAX))
        return err_set(e, ERRC_PERMANENT, "status record: bad version");
    if (!cJSON_IsString(upd) || strlen(upd->valuestring) >= RECORDS_TIME_MAX)
        return err_set(e, ERRC_PERMANENT, "status record: bad updated_at");
    snprintf(out->id, sizeof out->id, "%s", id->valuestring);
    if (cJSON_IsString(pv))
        snprintf(out->provider, sizeof out->provider, "%s", pv->valuestring);
    out->status = (conn_status)status;
    out->phase = (conn_phase)phase;
    out->reason = (conn_reason)reason;
    out->version = (int64_t)ver->valuedouble;
    snprintf(out->updated_at, sizeof out->updated_at, "%s", upd->valuestring);
    if (records_time_parse(upd->valuestring, &out->updated_at_ms) < 0)
        out->updated_at_ms = 0;
    err_t me = {0};
    if (connmeta_from(o, 0, &out->meta, &me) < 0) {
        memset(&out->meta, 0, sizeof out->meta);
        snprintf(out->meta_error, sizeof out->meta_error, "%s", me.msg[0] ? me.msg : "invalid");
    }
    return 0;
}

int connrec_status_decode(const char *json, size_t len, connrec_status *out, cJSON **doc, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (doc)
        *doc = NULL;
    cJSON *o = json ? cJSON_ParseWithLength(json, len) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return err_set(e, ERRC_PERMANENT, "status record: not a JSON object");
    }
    if (status_fields(o, out, e) < 0) {
        cJSON_Delete(o);
        memset(out, 0, sizeof *out);
        return -1;
    }
    if (doc)
        *doc = o;
    else
        cJSON_Delete(o);
    return 0;
}

/* A string or null member (NULL into *out for null); -1 when absent or
 * another type. */
static int str_or_null(const cJSON *o, const char *k, const char **out)
{
    const cJSON *v = get(o, k);
    *out = cJSON_IsString(v) ? v->valuestring : NULL;
    return cJSON_IsString(v) || cJSON_IsNull(v) ? 0 : -1;
}

int connrec_dlq_from(const cJSON *rec, connrec_dlq *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    const cJSON *schema = get(rec, "schema"), *part = get(rec, "partition"),
                *off = get(rec, "offset"), *att = get(rec, "attempts");
    if (!cJSON_IsObject(rec) || !cJSON_IsString(schema) ||
        strcmp(schema->valuestring, DLQ_SCHEMA) != 0)
        return err_set(e, ERRC_PERMANENT, "dlq record: schema is not " DLQ_SCHEMA);
    const char *bad = NULL;
    if (str_or_null(rec, "reason", &out->reason) < 0 || !out->reason || !out->reason[0])
        bad = "reason";
    else if (str_or_null(rec, "source_topic", &out->source_topic) < 0 || !out->source_topic)
        bad = "source_topic";
    else if (!is_int_in(part, 0, INT32_MAX))
        bad = "partition";
    else if (!is_int_in(off, 0, CONNREC_VERSION_MAX))
        bad = "offset";
    else if (str_or_null(rec, "key", &out->key) < 0)
        bad = "key";
    else if (str_or_null(rec, "original", &out->original) < 0)
        bad = "original";
    else if (!is_int_in(att, 0, INT32_MAX))
        bad = "attempts";
    else if (str_or_null(rec, "first_error", &out->first_error) < 0)
        bad = "first_error";
    else if (str_or_null(rec, "last_error", &out->last_error) < 0)
        bad = "last_error";
    else if (str_or_null(rec, "at", &out->at) < 0 || !out->at ||
             records_time_parse(out->at, &out->at_ms) < 0)
        bad = "at";
    if (bad) {
        memset(out, 0, sizeof *out);
        return err_set(e, ERRC_PERMANENT, "dlq record: bad %s", bad);
    }
    out->source_partition = (int64_t)part->valuedouble;
    out->source_offset = (int64_t)off->valuedouble;
    out->attempts = (int)att->valuedouble;
    return 0;
}
