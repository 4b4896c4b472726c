/* ctl_status — see ctl_status.h. Single-threaded. */
#include "ctl/ctl_status.h"

#include <string.h>

#include "common/clock.h"
#include "common/conn.h"
#include "common/kafka.h"
#include "common/records.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_scan.h"

static void copy_field(cJSON *dst, const cJSON *rec, const char *from, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, from);
    if (cJSON_IsString(v))
        cJSON_AddStringToObject(dst, to, v->valuestring);
    else if (cJSON_IsNumber(v))
        cJSON_AddNumberToObject(dst, to, v->valuedouble);
    else if (cJSON_IsBool(v))
        cJSON_AddBoolToObject(dst, to, cJSON_IsTrue(v));
    else
        cJSON_AddNullToObject(dst, to);
}

static void copy_time(cJSON *dst, const cJSON *rec, const char *from, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, from);
    ctl_out_add_time(dst, to, cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0);
}

/* "sealed" when the record holds a non-empty sealed value, else "none";
 * the value itself is never read beyond its presence. */
static void sealed_flag(cJSON *dst, const cJSON *rec, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, name);
    int present = cJSON_IsString(v) && v->valuestring[0] != '\0';
    cJSON_AddStringToObject(dst, name, present ? "sealed" : "none");
}

cJSON *ctl_status_project(const cJSON *rec)
{
    if (!cJSON_IsObject(rec))
        return NULL;
    cJSON *o = cJSON_CreateObject();
    copy_field(o, rec, "id", "id");
    copy_field(o, rec, "provider", "provider");
    copy_field(o, rec, "status", "status");
    copy_field(o, rec, "phase", "phase");
    copy_field(o, rec, "reason", "reason");
    copy_field(o, rec, "version", "version");
    copy_field(o, rec, "attempts", "attempts");
    copy_field(o, rec, "unknown_outcomes", "unknown_outcomes");
    copy_field(o, rec, "claimed", "claimed");
    copy_time(o, rec, "retry_at_ms", "retry_at");
    copy_time(o, rec, "deadline_ms", "deadline");
    copy_time(o, rec, "received_at_ms", "received_at");
    copy_time(o, rec, "created_at_ms", "created_at");
    copy_time(o, rec, "updated_at_ms", "updated_at");
    copy_field(o, rec, "last_error", "last_error");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(rec, "code_sha256");
    if (cJSON_IsString(h) && h->valuestring[0]) {
        char prefix[CTL_HASH_PREFIX + 1];
        snprintf(prefix, sizeof prefix, "%s", h->valuestring);
        cJSON_AddStringToObject(o, "code_sha256_prefix", prefix);
    } else {
        cJSON_AddNullToObject(o, "code_sha256_prefix");
    }
    copy_field(o, rec, "ignored_codes", "ignored_codes");
    copy_field(o, rec, "account_id", "account_id");
    copy_field(o, rec, "livemode", "livemode");
    copy_field(o, rec, "scope", "scope");
    copy_field(o, rec, "callback_error", "callback_error");
    sealed_flag(o, rec, "code_sealed");
    sealed_flag(o, rec, "verifier_sealed");
    sealed_flag(o, rec, "access_token_sealed");
    sealed_flag(o, rec, "refresh_token_sealed");
    /* The platform's metadata (SPEC §4a): whose connection it is. */
    const char *meta[] = {"end_user", "organization", "tags"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, meta[i]);
        if (cJSON_IsObject(v))
            cJSON_AddItemToObject(o, meta[i], cJSON_Duplicate(v, 1));
        else
            cJSON_AddNullToObject(o, meta[i]);
    }
    return o;
}

typedef struct {
    const char *id;
    cJSON *best; /* parsed record with the highest version */
    double best_version;
    int32_t partition;
    int64_t offset;
    long seen;     /* records of this key */
    long bad;      /* of which not a usable connections.v1 record */
    int tombstone; /* the latest record of the key was a tombstone */
} status_scan;

static int on_record(const ctl_scan_rec *r, void *ud)
{
    status_scan *s = ud;
    if (!r->key || strlen(s->id) != r->key_len || memcmp(r->key, s->id, r->key_len) != 0)
        return 0;
    s->seen++;
    if (!r->value) {
        cJSON_Delete(s->best);
        s->best = NULL;
        s->best_version = 0;
        s->tombstone = 1;
        return 0;
    }
    cJSON *o = cJSON_ParseWithLength(r->value, r->value_len);
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(o, "schema");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
    if (!cJSON_IsString(schema) || strcmp(schema->valuestring, CONN_SCHEMA) != 0 ||
        !cJSON_IsNumber(v)) {
        s->bad++;
        cJSON_Delete(o);
        return 0;
    }
    if (s->best && v->valuedouble <= s->best_version) {
        cJSON_Delete(o);
        return 0;
    }
    cJSON_Delete(s->best);
    s->best = o;
    s->best_version = v->valuedouble;
    s->partition = r->partition;
    s->offset = r->offset;
    s->tombstone = 0;
    return 0;
}

cJSON *ctl_status_latest(const config_t *c, const char *id, int32_t *partition, int64_t *offset,
                         err_t *e)
{
    char topic[256];
    if (config_topic(c, KAFKA_TOPIC_CONNECTIONS, topic, sizeof topic, e) < 0)
        return NULL;
    status_scan s = {0};
    s.id = id;
    if (ctl_scan_topic(c, topic, -1, 0, on_record, &s, e) < 0) {
        cJSON_Delete(s.best);
        return NULL;
    }
    if (!s.best) {
        if (s.tombstone)
            err_set(e, ERRC_PERMANENT, "connection %.63s: deleted (tombstone in %s)", id, topic);
        else
            err_set(e, ERRC_PERMANENT, "connection %.63s: not found in %s%s", id, topic,
                    s.bad ? " (only unreadable records)" : "");
        return NULL;
    }
    *partition = s.partition;
    *offset = s.offset;
    return s.best;
}

static const char *const table_fields[] = {"id",
                                           "provider",
                                           "status",
                                           "phase",
                                           "reason",
                                           "version",
                                           "attempts",
                                           "unknown_outcomes",
                                           "claimed",
                                           "retry_at",
                                           "deadline",
                                           "received_at",
                                           "created_at",
                                           "updated_at",
                                           "last_error",
                                           "code_sha256_prefix",
                                           "ignored_codes",
                                           "account_id",
                                           "livemode",
                                           "scope",
                                           "callback_error",
                                           "code_sealed",
                                           "verifier_sealed",
                                           "access_token_sealed",
                                           "refresh_token_sealed",
                                           "partition",
                                           "offset",
                                           NULL};

int ctl_status_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (ctl_args_parse(argc, argv, CTL_OPT_JSON, clock_wall_ms(), &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (o.npos != 1)
        return err_set(e, ERRC_PERMANENT, "status: expected exactly one connection ID");
    const char *id = o.pos[0];
    if (!id[0] || strlen(id) >= RECORDS_ID_MAX)
        return err_set(e, ERRC_PERMANENT, "status: ID must be 1..%d bytes", RECORDS_ID_MAX - 1);
    int32_t partition = -1;
    int64_t offset = -1;
    cJSON *best = ctl_status_latest(cx.cfg, id, &partition, &offset, e);
    if (!best)
        return -1;
    cJSON *doc = ctl_status_project(best);
    cJSON_Delete(best);
    cJSON_AddNumberToObject(doc, "partition", partition);
    cJSON_AddNumberToObject(doc, "offset", (double)offset);
    int rc = 0;
    if (cx.json) {
        rc = ctl_out_json(cx.out, doc, e);
    } else {
        char buf[600];
        for (int i = 0; table_fields[i]; i++)
            fprintf(cx.out, "%-22s %s\n", table_fields[i],
                    ctl_out_cell(doc, table_fields[i], buf, sizeof buf));
    }
    cJSON_Delete(doc);
    return rc;
}

void ctl_status_help(FILE *out)
{
    fprintf(out,
            "usage: oauthqctl status ID [--json]\n"
            "\n"
            "The latest connections.v1 record of connection ID (highest version, read\n"
            "committed, from the connections topic): status, phase, reason, version,\n"
            "attempts, unknown_outcomes, claimed, retry_at, deadline, last_error, the\n"
            "first %d hex digits of the code's SHA-256, ignored_codes, account_id,\n"
            "timestamps. Sealed secrets are shown only as \"sealed\" or \"none\".\n"
            "\n"
            "Exit codes: 0 found, 1 Kafka unreachable, 2 not found or usage error,\n"
            "3 configuration error.\n",
            CTL_HASH_PREFIX);
}
