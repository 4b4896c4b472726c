/* ctl_replay — see ctl_replay.h. Single-threaded (delivery reports are
 * served by rd_kafka_flush on this thread). */
#include "ctl/ctl_replay.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/records.h"
#include "ctl/ctl_args.h"

/* One record to publish and what became of it. */
typedef struct {
    char key[RECORDS_ID_MAX];
    char *value; /* owned; may hold a code (DLQ originals): never printed */
    size_t len;
    int done;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
} pub_t;

int ctl_replay_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= RECORDS_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f || id[i] == '?')
            return 0;
    return 1;
}

int ctl_replay_usable(const ctl_dlq_entry *d, char *schema, size_t cap, char why[CTL_WHY_MAX])
{
    if (cap)
        schema[0] = '\0';
    if (!d->original) {
        snprintf(why, CTL_WHY_MAX, "no original record");
        return 0;
    }
    if (!d->key || !ctl_replay_id_ok(d->key)) {
        snprintf(why, CTL_WHY_MAX, "no usable key");
        return 0;
    }
    cJSON *o = cJSON_Parse(d->original);
    int ok = 0;
    if (!cJSON_IsObject(o)) {
        snprintf(why, CTL_WHY_MAX, "original is not a JSON object");
    } else if (records_schema_of(d->original, strlen(d->original), schema, cap) < 0) {
        snprintf(why, CTL_WHY_MAX, "original has no schema");
    } else {
        const cJSON *cid = cJSON_GetObjectItemCaseSensitive(o, "connection_id");
        if (cid && (!cJSON_IsString(cid) || strcmp(cid->valuestring, d->key) != 0))
            snprintf(why, CTL_WHY_MAX, "key differs from the original's connection_id");
        else
            ok = 1;
    }
    cJSON_Delete(o);
    if (ok)
        why[0] = '\0';
    return ok;
}

/* ---- publishing ------------------------------------------------------------ */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    pub_t *p = m->_private;
    if (!p)
        return;
    p->done = 1;
    p->err = m->err;
    p->partition = m->partition;
    p->offset = m->offset;
}

/* Produce pubs[0..n) to topic and wait for every report (bounded). Fails
 * with the class of the first undelivered record; pubs[i].done/err tell
 * which ones made it. */
static int publish(const config_t *c, const char *topic, pub_t *pubs, long n, err_t *e)
{
    char errstr[256], tmo[16];
    rd_kafka_conf_t *conf = kafka_conf_producer(c, NULL, e);
    if (!conf)
        return -1;
    snprintf(tmo, sizeof tmo, "%d", c->produce_timeout_ms);
    if (kafka_conf_set(conf, "message.timeout.ms", tmo, e) < 0 ||
        kafka_conf_set(conf, "allow.auto.create.topics", "false", e) < 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "kafka producer: %s", errstr);
    }
    int64_t deadline = clock_mono_ms() + c->produce_timeout_ms + 2000;
    for (long i = 0; i < n; i++) {
        rd_kafka_resp_err_t err;
        for (;;) {
            err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION(kafka_partition_for(
                                        pubs[i].key, strlen(pubs[i].key), c->topic_partitions)),
                                    RD_KAFKA_V_KEY(pubs[i].key, strlen(pubs[i].key)),
                                    RD_KAFKA_V_VALUE(pubs[i].value, pubs[i].len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_OPAQUE(&pubs[i]), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || clock_mono_ms() > deadline)
                break;
            rd_kafka_poll(rk, 50);
        }
        if (err) {
            pubs[i].done = 1;
            pubs[i].err = err;
        }
    }
    int64_t left = deadline - clock_mono_ms();
    rd_kafka_flush(rk, left > 0 ? (int)left : 0);
    int rc = 0;
    for (long i = 0; i < n && rc == 0; i++) {
        if (!pubs[i].done)
            rc = err_set(e, ERRC_RETRIABLE, "%s: no delivery report within %d ms", topic,
                         c->produce_timeout_ms + 2000);
        else if (pubs[i].err)
            rc = err_set(e, kafka_errc(pubs[i].err) == ERRC_FATAL ? ERRC_FATAL : ERRC_RETRIABLE,
                         "producing to %s: %s", topic, rd_kafka_err2str(pubs[i].err));
    }
    /* Reports not served yet must not touch pubs after we return. */
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, 1000);
    rd_kafka_destroy(rk);
    return rc;
}

static void add_result(cJSON *o, const pub_t *p)
{
    if (p->done && !p->err) {
        cJSON_AddStringToObject(o, "result", "sent");
        cJSON_AddNumberToObject(o, "partition", p->partition);
        cJSON_AddNumberToObject(o, "offset", (double)p->offset);
    } else {
        cJSON_AddStringToObject(o, "result", "failed");
        cJSON_AddStringToObject(o, "error",
                                p->done ? rd_kafka_err2str(p->err) : "no delivery report");
    }
}

/* ---- replay ID... ----------------------------------------------------------- */

static void requested_by(char out[RECORDS_ID_MAX])
{
    const char *u = getenv("USER");
    if (!u || !ctl_replay_id_ok(u))
        u = "oauthqctl";
    snprintf(out, RECORDS_ID_MAX, "%s", u);
}

static int replay_ids(const ctl_ctx *cx, const ctl_opts *o, const char *topic, err_t *e)
{
    for (int i = 0; i < o->npos; i++)
        if (!ctl_replay_id_ok(o->pos[i]))
            return err_set(e, ERRC_PERMANENT, "replay: bad connection id '%.63s'", o->pos[i]);
    pub_t *pubs = calloc((size_t)o->npos, sizeof *pubs);
    if (!pubs)
        return err_set(e, ERRC_FATAL, "out of memory");
    int rc = 0;
    records_replay r;
    memset(&r, 0, sizeof r);
    r.requested_at_ms = clock_wall_ms();
    requested_by(r.requested_by);
    snprintf(r.reason, sizeof r.reason, "%s", o->reason);
    for (int i = 0; i < o->npos && rc == 0; i++) {
        snprintf(r.connection_id, sizeof r.connection_id, "%s", o->pos[i]);
        snprintf(pubs[i].key, sizeof pubs[i].key, "%s", o->pos[i]);
        pubs[i].value = records_replay_encode(&r, e);
        if (!pubs[i].value)
            rc = -1;
        else
            pubs[i].len = strlen(pubs[i].value);
    }
    if (rc == 0)
        rc = publish(cx->cfg, topic, pubs, o->npos, e);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "topic", topic);
    cJSON *arr = cJSON_AddArrayToObject(doc, "replays");
    for (int i = 0; i < o->npos; i++) {
        if (!pubs[i].value)
            continue;
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "id", pubs[i].key);
        add_result(it, &pubs[i]);
        cJSON_AddItemToObject(it, "record", cJSON_Parse(pubs[i].value));
        cJSON_AddItemToArray(arr, it);
        if (pubs[i].done && !pubs[i].err)
            log_kv(LOGL_INFO, "replay_sent", "connection_id", pubs[i].key, "requested_by",
                   r.requested_by);
    }
    if (cx->json) {
        err_t e2 = {0};
        if (ctl_out_json(cx->out, doc, &e2) < 0 && rc == 0)
            rc = err_set(e, e2.cls, "%s", e2.msg);
    } else {
        char at[RECORDS_TIME_MAX];
        records_time_format(r.requested_at_ms, at);
        fprintf(cx->out, "%-40s %-7s %-12s %s\n", "ID", "RESULT", "PART:OFF", "REQUESTED_AT");
        for (int i = 0; i < o->npos; i++) {
            if (!pubs[i].value)
                continue;
            char po[40] = "-";
            int ok = pubs[i].done && !pubs[i].err;
            if (ok)
                snprintf(po, sizeof po, "%d:%lld", pubs[i].partition, (long long)pubs[i].offset);
            fprintf(cx->out, "%-40s %-7s %-12s %s\n", pubs[i].key, ok ? "sent" : "FAILED", po, at);
        }
        fprintf(cx->out, "replay.v1 to %s, requested_by=%s%s%s\n", topic, r.requested_by,
                r.reason[0] ? ", reason=" : "", r.reason);
    }
    cJSON_Delete(doc);
    for (int i = 0; i < o->npos; i++)
        free(pubs[i].value);
    free(pubs);
    return rc;
}

/* ---- replay --dlq ----------------------------------------------------------- */

typedef struct {
    cJSON *rows; /* array: one object per matching record (no original) */
    pub_t *pubs;
    cJSON **pub_rows; /* row of pubs[i] */
    long npubs, cap;
    int too_many, oom;
} dlq_plan;

static int on_candidate(const ctl_dlq_entry *d, void *ud)
{
    dlq_plan *p = ud;
    char schema[64], why[CTL_WHY_MAX];
    int ok = ctl_replay_usable(d, schema, sizeof schema, why);
    cJSON *row = cJSON_CreateObject();
    cJSON_AddNumberToObject(row, "dlq_partition", d->partition);
    cJSON_AddNumberToObject(row, "dlq_offset", (double)d->offset);
    if (d->key)
        cJSON_AddStringToObject(row, "key", d->key);
    else
        cJSON_AddNullToObject(row, "key");
    cJSON_AddStringToObject(row, "reason", d->reason ? d->reason : "");
    if (schema[0])
        cJSON_AddStringToObject(row, "schema", schema);
    else
        cJSON_AddNullToObject(row, "schema");
    cJSON_AddItemToArray(p->rows, row);
    if (!ok) {
        cJSON_AddStringToObject(row, "result", "skipped");
        cJSON_AddStringToObject(row, "why", why);
        return 0;
    }
    if (p->npubs == CTL_REPLAY_MAX) {
        p->too_many = 1;
        return -1;
    }
    if (p->npubs == p->cap) {
        long cap = p->cap ? p->cap * 2 : 64;
        pub_t *np = realloc(p->pubs, (size_t)cap * sizeof *np);
        if (np)
            p->pubs = np;
        cJSON **nr = np ? realloc(p->pub_rows, (size_t)cap * sizeof *nr) : NULL;
        if (nr)
            p->pub_rows = nr;
        if (!np || !nr) {
            p->oom = 1;
            return -1;
        }
        p->cap = cap;
    }
    pub_t *pub = &p->pubs[p->npubs];
    memset(pub, 0, sizeof *pub);
    snprintf(pub->key, sizeof pub->key, "%s", d->key);
    pub->len = strlen(d->original);
    pub->value = strdup(d->original);
    if (!pub->value) {
        p->oom = 1;
        return -1;
    }
    p->pub_rows[p->npubs++] = row;
    return 0;
}

static int replay_dlq(const ctl_ctx *cx, const ctl_opts *o, const char *topic, err_t *e)
{
    int dry = (o->seen & CTL_OPT_DRY_RUN) != 0;
    ctl_dlq_filter f = {(o->seen & CTL_OPT_SINCE) ? o->since_ms : 0, o->reason, 0};
    dlq_plan p = {0};
    p.rows = cJSON_CreateArray();
    int rc = 0;
    if (ctl_dlq_scan(cx->cfg, &f, on_candidate, &p, NULL, e) < 0) {
        if (p.too_many)
            err_set(e, ERRC_PERMANENT,
                    "more than %d records to replay: narrow with --since or "
                    "--reason",
                    CTL_REPLAY_MAX);
        else if (p.oom)
            err_set(e, ERRC_FATAL, "out of memory");
        rc = -1;
        goto out;
    }
    if (dry) {
        for (long i = 0; i < p.npubs; i++)
            cJSON_AddStringToObject(p.pub_rows[i], "result", "would_replay");
    } else if (p.npubs > 0) {
        rc = publish(cx->cfg, topic, p.pubs, p.npubs, e);
        for (long i = 0; i < p.npubs; i++) {
            add_result(p.pub_rows[i], &p.pubs[i]);
            if (p.pubs[i].done && !p.pubs[i].err)
                log_kv(LOGL_INFO, "dlq_replayed", "connection_id", p.pubs[i].key);
        }
    }
    long skipped = cJSON_GetArraySize(p.rows) - p.npubs;
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "topic", topic);
        cJSON_AddBoolToObject(doc, "dry_run", dry);
        cJSON_AddNumberToObject(doc, "matched", cJSON_GetArraySize(p.rows));
        cJSON_AddNumberToObject(doc, dry ? "would_replay" : "replayed", (double)p.npubs);
        cJSON_AddNumberToObject(doc, "skipped", (double)skipped);
        cJSON_AddItemToObject(doc, "records", p.rows);
        p.rows = NULL;
        err_t e2 = {0};
        if (ctl_out_json(cx->out, doc, &e2) < 0 && rc == 0)
            rc = err_set(e, e2.cls, "%s", e2.msg);
        cJSON_Delete(doc);
    } else {
        fprintf(cx->out, "%-10s %-40s %-22s %-13s %s\n", "DLQ", "KEY", "SCHEMA", "RESULT",
                "DETAIL");
        for (const cJSON *r = p.rows->child; r; r = r->next) {
            char po[48], key[260], schema[64], result[24], detail[CTL_WHY_MAX + 60];
            snprintf(po, sizeof po, "%.0f:%.0f",
                     cJSON_GetObjectItem(r, "dlq_partition")->valuedouble,
                     cJSON_GetObjectItem(r, "dlq_offset")->valuedouble);
            ctl_out_cell(r, "result", result, sizeof result);
            if (cJSON_GetObjectItem(r, "why"))
                ctl_out_cell(r, "why", detail, sizeof detail);
            else if (cJSON_GetObjectItem(r, "error"))
                ctl_out_cell(r, "error", detail, sizeof detail);
            else if (cJSON_GetObjectItem(r, "offset"))
                snprintf(detail, sizeof detail, "-> %.0f:%.0f",
                         cJSON_GetObjectItem(r, "partition")->valuedouble,
                         cJSON_GetObjectItem(r, "offset")->valuedouble);
            else
                snprintf(detail, sizeof detail, "-");
            fprintf(cx->out, "%-10s %-40s %-22s %-13s %s\n", po,
                    ctl_out_cell(r, "key", key, sizeof key),
                    ctl_out_cell(r, "schema", schema, sizeof schema), result, detail);
        }
        fprintf(cx->out, "%d matched, %ld %s, %ld skipped%s\n", cJSON_GetArraySize(p.rows), p.npubs,
                dry ? "would be replayed" : "replayed", skipped,
                dry ? " (dry run: nothing produced)" : "");
    }
out:
    cJSON_Delete(p.rows);
    for (long i = 0; i < p.npubs; i++)
        free(p.pubs[i].value);
    free(p.pubs);
    free(p.pub_rows);
    return rc;
}

int ctl_replay_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    unsigned allowed =
        CTL_OPT_JSON | CTL_OPT_SINCE | CTL_OPT_REASON | CTL_OPT_DRY_RUN | CTL_OPT_DLQ;
    if (ctl_args_parse(argc, argv, allowed, clock_wall_ms(), &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    char topic[256];
    if (config_topic(cx.cfg, KAFKA_TOPIC_CALLBACKS, topic, sizeof topic, e) < 0)
        return -1;
    if (o.seen & CTL_OPT_DLQ) {
        if (o.npos)
            return err_set(e, ERRC_PERMANENT, "replay --dlq takes no connection ids");
        return replay_dlq(&cx, &o, topic, e);
    }
    if (o.seen & (CTL_OPT_SINCE | CTL_OPT_DRY_RUN))
        return err_set(e, ERRC_PERMANENT, "replay: --since and --dry-run need --dlq");
    if (o.npos == 0)
        return err_set(e, ERRC_PERMANENT, "replay: expected connection ids or --dlq");
    return replay_ids(&cx, &o, topic, e);
}

void ctl_replay_help(FILE *out)
{
    fprintf(out,
            "usage: oauthqctl replay ID... [--reason TEXT] [--json]\n"
            "       oauthqctl replay --dlq [--since T] [--reason PREFIX] [--dry-run] [--json]\n"
            "\n"
            "replay ID...  publish one replay.v1 record per connection id to the callbacks\n"
            "              topic (requested_by = $USER, --reason = audit text). The worker\n"
            "              re-attempts only a code never definitively answered and still\n"
            "              inside its deadline; any other replay is recorded, not exchanged.\n"
            "replay --dlq  re-publish, unchanged and under the same key, the original record\n"
            "              of each dead letter matching --since (RFC 3339 or an age: 2h) and\n"
            "              --reason (prefix of the DLQ reason) whose original is a JSON record\n"
            "              with a schema and a usable key; --dry-run lists what would be sent.\n"
            "Delivery is waited for (idempotent producer, acks=all, bounded by\n"
            "OAUTHQ_PRODUCE_TIMEOUT_MS). Original records are never printed.\n"
            "\n"
            "Exit codes: 0 all sent, 1 Kafka unreachable or not delivered (safe to run\n"
            "again), 2 usage error, 3 configuration error.\n");
}
