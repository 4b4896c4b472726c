/* readmodel — see readmodel.h. */
#include "producer/readmodel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "common/clock.h"
#include "common/connmeta.h"
#include "common/connrec.h"
#include "common/kafka.h"
#include "common/log.h"
#include "producer/waiters.h"

#define BATCH_MAX   1000
#define MAX_PARTS   1024
#define APPLY_TRIES 5 /* a batch the store refuses this often is fatal */

/* schemas/readmodel.sql, embedded by the build (scripts/embed-assets --text). */
extern const char readmodel_schema_text[];

struct readmodel {
    config_t cfg;
    char topic[256];
    char path[CONFIG_PATH_MAX + 300];
    sqlite3 *wdb; /* apply thread only */
    sqlite3 *rdb; /* readers, under rmu */
    pthread_mutex_t rmu;
    waiters_t *waiters; /* requests waiting for an id (own lock) */
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_int stop;
    atomic_int caught_up;
    int nparts;
    int64_t end_at_start[MAX_PARTS];
    int64_t next_offset[MAX_PARTS]; /* committed to SQLite with the rows: never ahead */
    int64_t staged[MAX_PARTS];      /* apply thread: next_offset of the open transaction */
    int64_t eof_offset[MAX_PARTS];  /* from EOF events: past transaction markers */
    atomic_int fatal;               /* a batch could not be stored: the process must exit */
    metric_counter *m_read, *m_applied, *m_skipped;
    /* Settling (readmodel_settled_ms), on the settle thread: the worker
     * group's committed offsets come from grk, a consumer with the
     * worker's group id that never joins and never commits. */
    char cb_topic[256];
    rd_kafka_t *grk;
    pthread_t settler;
    int settler_started;
    atomic_llong applied[MAX_PARTS];    /* status offset the rows cover (apply thread) */
    atomic_llong settled_ms[MAX_PARTS]; /* wall ms, see readmodel_settled_ms; 0: not yet */
};

static int exec(sqlite3 *db, const char *sql, err_t *e, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERRC_FATAL, "read model %s: %s", what, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int open_db(readmodel_t *rm, err_t *e)
{
    if (sqlite3_open_v2(rm->path, &rm->wdb,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return err_set(e, ERRC_FATAL, "cannot open read model %s", rm->path);
    sqlite3_busy_timeout(rm->wdb, 5000);
    if (exec(rm->wdb, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", e, "pragmas") < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(rm->wdb, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version == 1) {
        /* Version 1 had no platform columns: drop it, the topic rebuilds it
         * (offsets go with the rows, so nothing is skipped). */
        if (exec(rm->wdb, "DROP TABLE IF EXISTS status; DROP TABLE IF EXISTS offsets;", e,
                 "migration") < 0)
            return -1;
        log_kv(LOGL_INFO, "read_model_rebuild", "path", rm->path, "reason", "schema 1 -> 2");
        version = 0;
    }
    if (version == 0) {
        /* Everything after the "-- migrate: 2" marker creates version 2. */
        const char *m = strstr(readmodel_schema_text, "-- migrate: 2");
        if (!m || exec(rm->wdb, "BEGIN", e, "migration") < 0 ||
            exec(rm->wdb, m, e, "migration") < 0 || exec(rm->wdb, "COMMIT", e, "migration") < 0)
            return -1;
    } else if (version != 2) {
        return err_set(e, ERRC_FATAL, "read model %s has schema version %d, expected 2", rm->path,
                       version);
    }
    if (sqlite3_open_v2(rm->path, &rm->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return err_set(e, ERRC_FATAL, "cannot open read model %s for reading", rm->path);
    sqlite3_busy_timeout(rm->rdb, 2000);
    return 0;
}

typedef struct {
    char provider[64], state[32];
    connmeta meta;
    char end_user[CONNMETA_ID_MAX + 1], org[CONNMETA_ID_MAX + 1];
} row_extra;

/* The public API document: the status record minus its "schema" field and
 * the platform's metadata, which goes to *x (with the list columns). */
static char *api_doc(const char *value, size_t len, const char **id, int64_t *version, char *idbuf,
                     size_t idcap, row_extra *x)
{
    connrec_status r;
    cJSON *o = NULL;
    err_t e = {0};
    if (connrec_status_decode(value, len, &r, &o, &e) < 0 || strlen(r.id) >= idcap) {
        cJSON_Delete(o);
        return NULL;
    }
    snprintf(idbuf, idcap, "%s", r.id);
    *id = idbuf;
    *version = r.version;
    memset(x, 0, sizeof *x);
    if (r.meta_error[0])
        log_kv(LOGL_WARN, "status_metadata_ignored", "connection_id", idbuf, "reason",
               r.meta_error);
    x->meta = r.meta;
    connmeta_ids(&x->meta, x->end_user, x->org);
    snprintf(x->provider, sizeof x->provider, "%s", r.provider);
    snprintf(x->state, sizeof x->state, "%s", conn_status_name(r.status));
    cJSON_DeleteItemFromObjectCaseSensitive(o, "schema");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "failed_during"); /* the dispatcher's only */
    cJSON_DeleteItemFromObjectCaseSensitive(o, "end_user");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "organization");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "tags");
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static void wake_id(readmodel_t *rm, const char *id)
{
    waiters_wake_id(rm->waiters, id);
}

static void bind_or_null(sqlite3_stmt *st, int i, const char *v)
{
    if (v[0])
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

typedef struct {
    char id[64];
} changed_id;

/* Apply one batch in one transaction; wake waiters of changed ids. */
static int apply(readmodel_t *rm, rd_kafka_message_t **msgs, size_t n, err_t *e)
{
    static changed_id changed[BATCH_MAX];
    size_t nchanged = 0;
    if (exec(rm->wdb, "BEGIN IMMEDIATE", e, "begin") < 0)
        return -1;
    sqlite3_stmt *up = NULL, *off = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(rm->wdb,
                           "INSERT INTO status(id, version, doc, updated_at_ms, meta, provider, "
                           "state, end_user_id, organization_id) VALUES(?,?,?,?,?,?,?,?,?) "
                           "ON CONFLICT(id) DO UPDATE SET version=excluded.version, "
                           "doc=excluded.doc, updated_at_ms=excluded.updated_at_ms, "
                           "meta=excluded.meta, provider=excluded.provider, "
                           "state=excluded.state, end_user_id=excluded.end_user_id, "
                           "organization_id=excluded.organization_id "
                           "WHERE excluded.version > status.version",
                           -1, &up, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(rm->wdb,
                           "INSERT INTO offsets(topic, partition, next_offset) VALUES(?,?,?) "
                           "ON CONFLICT(topic, partition) DO UPDATE SET "
                           "next_offset=excluded.next_offset",
                           -1, &off, NULL) != SQLITE_OK) {
        err_set(e, ERRC_FATAL, "read model prepare: %s", sqlite3_errmsg(rm->wdb));
        goto out;
    }
    /* Offsets move in the transaction's copy; they become next_offset only
     * once the rows that go with them committed. */
    memcpy(rm->staged, rm->next_offset, sizeof rm->staged);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        if (m->partition >= 0 && m->partition < MAX_PARTS &&
            m->offset + 1 > rm->staged[m->partition])
            rm->staged[m->partition] = m->offset + 1;
        if (!m->payload)
            continue; /* tombstone: keep the last document (deletion is explicit) */
        const char *id = NULL;
        int64_t version = 0;
        char idbuf[64];
        static row_extra x; /* apply thread only */
        char *doc = api_doc(m->payload, m->len, &id, &version, idbuf, sizeof idbuf, &x);
        if (!doc) {
            log_kv(LOGL_WARN, "status_record_skipped", "reason", "not a status.v1 record");
            continue;
        }
        sqlite3_reset(up);
        sqlite3_bind_text(up, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 2, version);
        sqlite3_bind_text(up, 3, doc, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 4, clock_wall_ms());
        bind_or_null(up, 5, x.meta.json);
        bind_or_null(up, 6, x.provider);
        bind_or_null(up, 7, x.state);
        bind_or_null(up, 8, x.end_user);
        bind_or_null(up, 9, x.org);
        int s = sqlite3_step(up);
        free(doc);
        if (s != SQLITE_DONE) {
            err_set(e, ERRC_RETRIABLE, "read model upsert: %s", sqlite3_errmsg(rm->wdb));
            goto out;
        }
        if (sqlite3_changes(rm->wdb) > 0) {
            metrics_counter_add(rm->m_applied, 1);
            if (nchanged < BATCH_MAX)
                snprintf(changed[nchanged++].id, sizeof changed[0].id, "%s", id);
        } else {
            metrics_counter_add(rm->m_skipped, 1); /* older or equal version */
        }
    }
    for (int p = 0; p < rm->nparts; p++) {
        sqlite3_reset(off);
        sqlite3_bind_text(off, 1, rm->topic, -1, SQLITE_STATIC);
        sqlite3_bind_int(off, 2, p);
        sqlite3_bind_int64(off, 3, rm->staged[p]);
        if (sqlite3_step(off) != SQLITE_DONE) {
            err_set(e, ERRC_RETRIABLE, "read model offsets: %s", sqlite3_errmsg(rm->wdb));
            goto out;
        }
    }
    rc = 0;
out:
    sqlite3_finalize(up);
    sqlite3_finalize(off);
    if (rc == 0 && exec(rm->wdb, "COMMIT", e, "commit") < 0)
        rc = -1;
    if (rc < 0) {
        err_t ignored = {0};
        if (sqlite3_get_autocommit(rm->wdb) == 0)
            exec(rm->wdb, "ROLLBACK", &ignored, "rollback");
        return -1;
    }
    memcpy(rm->next_offset, rm->staged, sizeof rm->next_offset);
    for (size_t i = 0; i < nchanged; i++)
        wake_id(rm, changed[i].id);
    return 0;
}

static void check_caught_up(readmodel_t *rm)
{
    if (atomic_load(&rm->caught_up))
        return;
    /* The last entries of a transactional topic are commit markers that
     * carry no record, so a partition also counts as read once the
     * consumer reported its end at or past the end seen at start. */
    for (int p = 0; p < rm->nparts; p++)
        if (rm->next_offset[p] < rm->end_at_start[p] && rm->eof_offset[p] < rm->end_at_start[p])
            return;
    atomic_store(&rm->caught_up, 1);
    log_kv(LOGL_INFO, "readmodel_caught_up", "topic", rm->topic);
}

static void *apply_main(void *arg)
{
    readmodel_t *rm = arg;
    rd_kafka_message_t **msgs = calloc(BATCH_MAX, sizeof *msgs);
    while (msgs && !atomic_load(&rm->stop)) {
        size_t n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rm->rk, 100);
        while (m && n < BATCH_MAX) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && m->partition >= 0 &&
                m->partition < MAX_PARTS) {
                rm->eof_offset[m->partition] = m->offset;
                rd_kafka_message_destroy(m);
            } else if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_kv(LOGL_WARN, "readmodel_consumer_error", "reason",
                           rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            m = n < BATCH_MAX ? rd_kafka_consumer_poll(rm->rk, 0) : NULL;
        }
        if (n > 0) {
            err_t e = {0};
            metrics_counter_add(rm->m_read, n);
            int stored = 0;
            for (int tries = 0; tries < APPLY_TRIES && !stored; tries++) {
                stored = apply(rm, msgs, n, &e) == 0;
                if (!stored) {
                    log_kv(LOGL_ERROR, "readmodel_apply_failed", "reason", e.msg);
                    struct timespec ts = {0, 200 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                }
            }
            for (size_t i = 0; i < n; i++)
                rd_kafka_message_destroy(msgs[i]);
            if (!stored) {
                /* The consumer is past records the store does not hold:
                 * going on would commit later offsets over them. Stop; a
                 * restart resumes from the committed offsets. */
                log_kv(LOGL_ERROR, "readmodel_fatal", "reason", e.msg, "path", rm->path);
                atomic_store(&rm->fatal, 1);
                break;
            }
        }
        /* What the rows cover now (this batch committed, EOFs seen). */
        for (int p = 0; p < rm->nparts; p++)
            atomic_store(&rm->applied[p], rm->next_offset[p] > rm->eof_offset[p]
                                              ? rm->next_offset[p]
                                              : rm->eof_offset[p]);
        check_caught_up(rm);
    }
    free(msgs);
    return NULL;
}

/* ---- settling: when a flow without a record may be called expired ------------- */

/* One partition's probe: sampled the callbacks end at t_ms (phase 1), saw
 * the worker group commit past it and sampled the status end (phase 2). */
typedef struct {
    int phase;
    int64_t t_ms, cb_lo, cb_end, st_end;
} settle_probe;

#define SETTLE_EVERY_MS   500
#define SETTLE_TIMEOUT_MS 5000

/* One round over every partition; errors leave the probe for the next. */
static void settle_round(readmodel_t *rm, settle_probe *pr)
{
    int n = rm->nparts, tmo = rm->cfg.kafka_timeout_ms < SETTLE_TIMEOUT_MS
                                  ? rm->cfg.kafka_timeout_ms
                                  : SETTLE_TIMEOUT_MS;
    for (int p = 0; p < n; p++) {
        if (pr[p].phase != 0)
            continue;
        int64_t t = clock_wall_ms(), lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rm->rk, rm->cb_topic, p, &lo, &hi, tmo) == 0)
            pr[p] = (settle_probe){1, t, lo, hi, 0};
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        if (pr[p].phase == 1)
            rd_kafka_topic_partition_list_add(l, rm->cb_topic, p);
    if (l->cnt > 0 && rd_kafka_committed(rm->grk, l, tmo) == 0) {
        for (int i = 0; i < l->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &l->elems[i];
            settle_probe *q = &pr[tp->partition];
            /* No committed offset: the worker starts at the log start. */
            int64_t done = tp->err == 0 && tp->offset >= 0 ? tp->offset : q->cb_lo;
            int64_t lo = 0, hi = 0;
            if (tp->err == 0 && done >= q->cb_end &&
                rd_kafka_query_watermark_offsets(rm->rk, rm->topic, tp->partition, &lo, &hi, tmo) ==
                    0) {
                q->st_end = hi; /* read_committed handle: the last stable offset */
                q->phase = 2;
            }
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    for (int p = 0; p < n; p++)
        if (pr[p].phase == 2 && atomic_load(&rm->applied[p]) >= pr[p].st_end) {
            atomic_store(&rm->settled_ms[p], pr[p].t_ms);
            pr[p].phase = 0;
        }
}

static void *settle_main(void *arg)
{
    readmodel_t *rm = arg;
    settle_probe *pr = calloc(MAX_PARTS, sizeof *pr);
    while (pr && !atomic_load(&rm->stop)) {
        settle_round(rm, pr);
        for (int i = 0; i < SETTLE_EVERY_MS / 50 && !atomic_load(&rm->stop); i++) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    free(pr);
    return NULL;
}

/* The worker group's id (as worker/worker.c names it) and its consumer. */
static int open_group_reader(readmodel_t *rm, err_t *e)
{
    char group[300], errstr[256];
    snprintf(group, sizeof group, "%sworker", rm->cfg.topic_prefix);
    rd_kafka_conf_t *conf = kafka_conf_consumer(&rm->cfg, group, e);
    if (!conf)
        return -1;
    rm->grk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rm->grk) {
        rd_kafka_conf_destroy(conf);
        return err_set(e, ERRC_FATAL, "read model group reader: %s", errstr);
    }
    return 0;
}

int64_t readmodel_settled_ms(readmodel_t *rm, const char *id)
{
    int32_t p = kafka_partition_for(id, strlen(id), rm->cfg.topic_partitions);
    return p >= 0 && p < rm->nparts && p < MAX_PARTS ? atomic_load(&rm->settled_ms[p]) : 0;
}

static int start_consumer(readmodel_t *rm, err_t *e)
{
    rm->rk = kafka_consumer_new(&rm->cfg, NULL, "read model consumer", e);
    if (!rm->rk)
        return -1;
    if (kafka_wait_topic(rm->rk, rm->topic, rm->cfg.kafka_timeout_ms, KAFKA_TOPIC_WAIT_MS,
                         &rm->nparts, e) < 0) {
        if (e && e->cls == ERRC_PERMANENT)
            e->cls = ERRC_FATAL; /* no status topic: the intake cannot serve */
        return -1;
    }
    if (rm->nparts > MAX_PARTS)
        return err_set(e, ERRC_FATAL, "%s has more than %d partitions", rm->topic, MAX_PARTS);
    /* Resume from the offsets stored with the rows. */
    sqlite3_stmt *st = NULL;
    for (int p = 0; p < rm->nparts; p++) {
        rm->next_offset[p] = 0;
        rm->eof_offset[p] = -1;
    }
    if (sqlite3_prepare_v2(rm->wdb, "SELECT partition, next_offset FROM offsets WHERE topic=?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, rm->topic, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int p = sqlite3_column_int(st, 0);
            if (p >= 0 && p < rm->nparts)
                rm->next_offset[p] = sqlite3_column_int64(st, 1);
        }
    }
    sqlite3_finalize(st);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(rm->nparts);
    for (int p = 0; p < rm->nparts; p++) {
        int64_t lo = 0, hi = 0;
        if (kafka_watermarks(rm->rk, rm->topic, p, &lo, &hi, rm->cfg.kafka_timeout_ms, e) < 0) {
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        rm->end_at_start[p] = hi;
        if (rm->next_offset[p] < lo)
            rm->next_offset[p] = lo; /* compacted or deleted away: start at the log start */
        rd_kafka_topic_partition_list_add(parts, rm->topic, p)->offset = rm->next_offset[p];
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(rm->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err)
        return err_set(e, kafka_errc(err), "assign %s: %s", rm->topic, rd_kafka_err2str(err));
    check_caught_up(rm);
    return 0;
}

readmodel_t *readmodel_open(const config_t *cfg, metrics_t *m, err_t *e)
{
    readmodel_t *rm = calloc(1, sizeof *rm);
    if (!rm) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    rm->cfg = *cfg;
    pthread_mutex_init(&rm->rmu, NULL);
    if (!(rm->waiters = waiters_new(READMODEL_WAITERS_MAX))) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto fail;
    }
    if (config_topic(cfg, KAFKA_TOPIC_STATUS, rm->topic, sizeof rm->topic, e) < 0 ||
        config_topic(cfg, KAFKA_TOPIC_CALLBACKS, rm->cb_topic, sizeof rm->cb_topic, e) < 0)
        goto fail;
    mkdir(cfg->data_dir, 0700);
    snprintf(rm->path, sizeof rm->path, "%s/intake-readmodel-%s.db", cfg->data_dir, rm->topic);
    rm->m_read = metrics_counter(m, "oauthq_readmodel_records_read_total",
                                 "Status records read from Kafka", NULL);
    rm->m_applied = metrics_counter(m, "oauthq_readmodel_records_applied_total",
                                    "Status records that moved a version forward", NULL);
    rm->m_skipped = metrics_counter(m, "oauthq_readmodel_records_skipped_total",
                                    "Status records older than the stored version", NULL);
    if (open_db(rm, e) < 0 || start_consumer(rm, e) < 0 || open_group_reader(rm, e) < 0)
        goto fail;
    for (int p = 0; p < rm->nparts; p++)
        atomic_store(&rm->applied[p], rm->next_offset[p]);
    if (pthread_create(&rm->thread, NULL, apply_main, rm) != 0) {
        err_set(e, ERRC_FATAL, "cannot start the read model thread");
        goto fail;
    }
    if (pthread_create(&rm->settler, NULL, settle_main, rm) != 0) {
        err_set(e, ERRC_FATAL, "cannot start the read model settle thread");
        atomic_store(&rm->stop, 1);
        pthread_join(rm->thread, NULL);
        goto fail;
    }
    rm->settler_started = 1;
    log_kv(LOGL_INFO, "readmodel_open", "path", rm->path, "topic", rm->topic);
    return rm;
fail:
    if (rm->grk)
        rd_kafka_destroy(rm->grk);
    if (rm->rk)
        rd_kafka_destroy(rm->rk);
    sqlite3_close(rm->rdb);
    sqlite3_close(rm->wdb);
    waiters_free(rm->waiters);
    free(rm);
    return NULL;
}

void readmodel_close(readmodel_t *rm)
{
    if (!rm)
        return;
    atomic_store(&rm->stop, 1);
    pthread_join(rm->thread, NULL);
    if (rm->settler_started)
        pthread_join(rm->settler, NULL);
    rd_kafka_destroy(rm->grk); /* never subscribed: nothing to leave or commit */
    rd_kafka_consumer_close(rm->rk);
    rd_kafka_destroy(rm->rk);
    waiters_free(rm->waiters);
    sqlite3_close(rm->rdb);
    sqlite3_close(rm->wdb);
    free(rm);
}

int readmodel_get(readmodel_t *rm, const char *id, char **doc, int64_t *version, err_t *e)
{
    pthread_mutex_lock(&rm->rmu);
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(rm->rdb, "SELECT version, doc FROM status WHERE id=?", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
        *doc = strdup((const char *)sqlite3_column_text(st, 1));
        rc = *doc ? 1 : err_set(e, ERRC_FATAL, "out of memory");
    } else if (s != SQLITE_DONE) {
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
    }
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&rm->rmu);
    return rc;
}

/* The platform view of one row: the document plus end_user, organization
 * and tags (null/{} when the connection has none). */
static cJSON *platform_view(const char *doc, const char *meta)
{
    cJSON *o = cJSON_Parse(doc);
    if (!o)
        return NULL;
    connmeta m;
    err_t e = {0};
    if (!meta || connmeta_parse(meta, strlen(meta), &m, &e) < 0)
        m.json[0] = '\0';
    connmeta_add_view(o, &m);
    return o;
}

int readmodel_get_platform(readmodel_t *rm, const char *id, char **doc, int64_t *version, err_t *e)
{
    pthread_mutex_lock(&rm->rmu);
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(rm->rdb, "SELECT version, doc, meta FROM status WHERE id=?", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
        cJSON *o = platform_view((const char *)sqlite3_column_text(st, 1),
                                 (const char *)sqlite3_column_text(st, 2));
        *doc = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        rc = *doc ? 1 : err_set(e, ERRC_RETRIABLE, "read model: unreadable row");
    } else if (s != SQLITE_DONE) {
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
    }
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&rm->rmu);
    return rc;
}

int readmodel_list(readmodel_t *rm, const readmodel_filter *f, cJSON *items, char *next,
                   size_t next_cap, err_t *e)
{
    next[0] = '\0';
    int limit = f->limit < 1 ? 1 : f->limit > READMODEL_PAGE_MAX ? READMODEL_PAGE_MAX : f->limit;
    pthread_mutex_lock(&rm->rmu);
    sqlite3_stmt *st = NULL;
    int rc = 0, n = 0;
    /* Keyset pagination on the primary key: stable under concurrent
     * inserts, no OFFSET scans. One extra row tells whether more exist. */
    if (sqlite3_prepare_v2(rm->rdb,
                           "SELECT id, doc, meta FROM status WHERE id > ?1 "
                           "AND (?2 IS NULL OR end_user_id = ?2) "
                           "AND (?3 IS NULL OR organization_id = ?3) "
                           "AND (?4 IS NULL OR provider = ?4) AND (?5 IS NULL OR state = ?5) "
                           "ORDER BY id LIMIT ?6",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
        goto out;
    }
    sqlite3_bind_text(st, 1, f->after_id ? f->after_id : "", -1, SQLITE_STATIC);
    const char *binds[4] = {f->end_user_id, f->organization_id, f->provider, f->status};
    for (int i = 0; i < 4; i++) {
        if (binds[i])
            sqlite3_bind_text(st, 2 + i, binds[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 2 + i);
    }
    sqlite3_bind_int(st, 6, limit + 1);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (n == limit) {
            /* More rows: the cursor is the last id returned. */
            const cJSON *last = cJSON_GetArrayItem(items, n - 1);
            const cJSON *lid = cJSON_GetObjectItemCaseSensitive(last, "id");
            if (cJSON_IsString(lid))
                snprintf(next, next_cap, "%s", lid->valuestring);
            break;
        }
        cJSON *o = platform_view((const char *)sqlite3_column_text(st, 1),
                                 (const char *)sqlite3_column_text(st, 2));
        if (!o) {
            log_kv(LOGL_WARN, "read_model_row_unreadable", "connection_id", id ? id : "");
            continue;
        }
        cJSON_AddItemToArray(items, o);
        n++;
    }
    if (s != SQLITE_ROW && s != SQLITE_DONE)
        rc = err_set(e, ERRC_RETRIABLE, "read model: %s", sqlite3_errmsg(rm->rdb));
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&rm->rmu);
    return rc < 0 ? -1 : n;
}

int readmodel_watch(readmodel_t *rm, const char *id, httpd_req *req)
{
    return waiters_watch(rm->waiters, id, req);
}

void readmodel_unwatch(readmodel_t *rm, httpd_req *req)
{
    waiters_unwatch(rm->waiters, req);
}

void readmodel_wake_all(readmodel_t *rm)
{
    waiters_wake_all(rm->waiters);
}

int readmodel_fatal(const readmodel_t *rm)
{
    return rm && atomic_load(&rm->fatal);
}

int readmodel_caught_up(readmodel_t *rm)
{
    return atomic_load(&rm->caught_up);
}
