/* tokenview — see tokenview.h. */
#include "producer/tokenview.h"

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

#include "common/conn.h"
#include "common/kafka.h"
#include "common/log.h"
#include "producer/waiters.h"

#define BATCH_MAX   500
#define MAX_PARTS   1024
#define APPLY_TRIES 5

typedef struct {
    char id[64];
} changed_id;

/* Version 1 of this file; another version is dropped and rebuilt. */
static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS tokens (id TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL,"
    " status TEXT NOT NULL, provider TEXT NOT NULL, token_type TEXT NOT NULL, scope TEXT NOT NULL,"
    " access_sealed TEXT NOT NULL, expires_at_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS offsets (partition INTEGER NOT NULL PRIMARY KEY,"
    " next_offset INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

struct tokenview {
    config_t cfg;
    char topic[256];
    char path[CONFIG_PATH_MAX + 300];
    sqlite3 *wdb; /* apply thread only */
    sqlite3 *rdb; /* readers, under rmu */
    pthread_mutex_t rmu;
    rd_kafka_t *rk;
    pthread_t thread;
    int started;
    atomic_int stop, caught_up, fatal;
    int nparts;
    int64_t end_at_start[MAX_PARTS];
    int64_t next_offset[MAX_PARTS]; /* committed with the rows: never ahead */
    int64_t staged[MAX_PARTS];
    int64_t eof_offset[MAX_PARTS];
    metric_counter *m_applied;
    changed_id changed[BATCH_MAX]; /* apply thread only: ids of the batch */
    size_t nchanged;
    waiters_t *waiters; /* requests waiting for an id (own lock) */
};

/* Apply thread, after a commit: wake and drop the waiters of id. */
static void wake_id(tokenview_t *tv, const char *id)
{
    waiters_wake_id(tv->waiters, id);
}

static void note_changed(tokenview_t *tv, const char *id, size_t len)
{
    if (tv->nchanged < BATCH_MAX && len < sizeof tv->changed[0].id) {
        memcpy(tv->changed[tv->nchanged].id, id, len);
        tv->changed[tv->nchanged++].id[len] = '\0';
    }
}

static int exec(sqlite3 *db, const char *sql, err_t *e, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERRC_FATAL, "token view %s: %s", what, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int open_db(tokenview_t *tv, err_t *e)
{
    if (sqlite3_open_v2(tv->path, &tv->wdb,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return err_set(e, ERRC_FATAL, "cannot open token view %s", tv->path);
    chmod(tv->path, 0600); /* sealed tokens: the owner only */
    sqlite3_busy_timeout(tv->wdb, 5000);
    if (exec(tv->wdb, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", e, "pragmas") < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (sqlite3_prepare_v2(tv->wdb, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version != 0 && version != 1) {
        log_kv(LOGL_INFO, "token_view_rebuild", "path", tv->path, "reason", "schema version");
        if (exec(tv->wdb, "DROP TABLE IF EXISTS tokens; DROP TABLE IF EXISTS offsets;", e,
                 "migration") < 0)
            return -1;
    }
    if (exec(tv->wdb, SCHEMA, e, "schema") < 0)
        return -1;
    if (sqlite3_open_v2(tv->path, &tv->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return err_set(e, ERRC_FATAL, "cannot open token view %s for reading", tv->path);
    sqlite3_busy_timeout(tv->rdb, 2000);
    return 0;
}

static const char *str_or(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static int64_t num_or(const cJSON *o, const char *k, int64_t dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : dflt;
}

/* Upsert the token fields of one connection.v1 record (older or equal
 * versions change nothing); 1 applied, 0 skipped, -1 store error. */
static int apply_record(tokenview_t *tv, sqlite3_stmt *up, const rd_kafka_message_t *m, err_t *e)
{
    cJSON *o = cJSON_ParseWithLength(m->payload, m->len);
    const char *schema = str_or(o, "schema", "");
    const char *id = str_or(o, "id", "");
    int rc = 0;
    if (strcmp(schema, CONN_SCHEMA) != 0 || !id[0] || strlen(id) >= 64 ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "version")))
        goto out; /* provider_state.v1 ("_provider.*" keys) or malformed: not ours */
    int64_t expires_in = num_or(o, "expires_in", -1);
    int64_t at = num_or(o, "tokens_at_ms", 0);
    int64_t expires_at = expires_in < 0 ? -1 : at > 0 ? at + expires_in * 1000 : 0;
    sqlite3_reset(up);
    sqlite3_bind_text(up, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(up, 2, num_or(o, "version", 0));
    sqlite3_bind_text(up, 3, str_or(o, "status", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(up, 4, str_or(o, "provider", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(up, 5, str_or(o, "token_type", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(up, 6, str_or(o, "scope", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(up, 7, str_or(o, "access_token_sealed", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(up, 8, expires_at);
    if (sqlite3_step(up) != SQLITE_DONE)
        rc = err_set(e, ERRC_RETRIABLE, "token view upsert: %s", sqlite3_errmsg(tv->wdb));
    else
        rc = sqlite3_changes(tv->wdb) > 0;
    if (rc > 0)
        note_changed(tv, id, strlen(id));
out:
    cJSON_Delete(o);
    return rc;
}

static int apply(tokenview_t *tv, rd_kafka_message_t **msgs, size_t n, err_t *e)
{
    if (exec(tv->wdb, "BEGIN IMMEDIATE", e, "begin") < 0)
        return -1;
    sqlite3_stmt *up = NULL, *del = NULL, *off = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(tv->wdb,
                           "INSERT INTO tokens(id, version, status, provider, token_type, scope, "
                           "access_sealed, expires_at_ms) VALUES(?,?,?,?,?,?,?,?) "
                           "ON CONFLICT(id) DO UPDATE SET version=excluded.version, "
                           "status=excluded.status, provider=excluded.provider, "
                           "token_type=excluded.token_type, scope=excluded.scope, "
                           "access_sealed=excluded.access_sealed, "
                           "expires_at_ms=excluded.expires_at_ms "
                           "WHERE excluded.version > tokens.version",
                           -1, &up, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(tv->wdb, "DELETE FROM tokens WHERE id=?", -1, &del, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(tv->wdb,
                           "INSERT INTO offsets(partition, next_offset) VALUES(?,?) "
                           "ON CONFLICT(partition) DO UPDATE SET next_offset=excluded.next_offset",
                           -1, &off, NULL) != SQLITE_OK) {
        err_set(e, ERRC_FATAL, "token view prepare: %s", sqlite3_errmsg(tv->wdb));
        goto out;
    }
    memcpy(tv->staged, tv->next_offset, sizeof tv->staged);
    tv->nchanged = 0;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_message_t *m = msgs[i];
        if (m->partition >= 0 && m->partition < MAX_PARTS &&
            m->offset + 1 > tv->staged[m->partition])
            tv->staged[m->partition] = m->offset + 1;
        if (!m->payload) {
            /* Tombstone: the connection is gone, and so is its token. */
            if (m->key && m->key_len > 0 && m->key_len < 64) {
                sqlite3_reset(del);
                sqlite3_bind_text(del, 1, m->key, (int)m->key_len, SQLITE_TRANSIENT);
                if (sqlite3_step(del) != SQLITE_DONE) {
                    err_set(e, ERRC_RETRIABLE, "token view delete: %s", sqlite3_errmsg(tv->wdb));
                    goto out;
                }
                note_changed(tv, m->key, m->key_len);
            }
            continue;
        }
        int a = apply_record(tv, up, m, e);
        if (a < 0)
            goto out;
        if (a > 0)
            metrics_counter_add(tv->m_applied, 1);
    }
    for (int p = 0; p < tv->nparts; p++) {
        sqlite3_reset(off);
        sqlite3_bind_int(off, 1, p);
        sqlite3_bind_int64(off, 2, tv->staged[p]);
        if (sqlite3_step(off) != SQLITE_DONE) {
            err_set(e, ERRC_RETRIABLE, "token view offsets: %s", sqlite3_errmsg(tv->wdb));
            goto out;
        }
    }
    rc = 0;
out:
    sqlite3_finalize(up);
    sqlite3_finalize(del);
    sqlite3_finalize(off);
    if (rc == 0 && exec(tv->wdb, "COMMIT", e, "commit") < 0)
        rc = -1;
    if (rc < 0) {
        err_t ignored = {0};
        if (sqlite3_get_autocommit(tv->wdb) == 0)
            exec(tv->wdb, "ROLLBACK", &ignored, "rollback");
        return -1;
    }
    memcpy(tv->next_offset, tv->staged, sizeof tv->next_offset);
    /* Committed: readers see the rows now, so the waiters may look. */
    for (size_t i = 0; i < tv->nchanged; i++)
        wake_id(tv, tv->changed[i].id);
    return 0;
}

static void check_caught_up(tokenview_t *tv)
{
    if (atomic_load(&tv->caught_up))
        return;
    for (int p = 0; p < tv->nparts; p++)
        if (tv->next_offset[p] < tv->end_at_start[p] && tv->eof_offset[p] < tv->end_at_start[p])
            return;
    atomic_store(&tv->caught_up, 1);
    log_kv(LOGL_INFO, "tokenview_caught_up", "topic", tv->topic);
}

static void *apply_main(void *arg)
{
    tokenview_t *tv = arg;
    rd_kafka_message_t **msgs = calloc(BATCH_MAX, sizeof *msgs);
    while (msgs && !atomic_load(&tv->stop)) {
        size_t n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(tv->rk, 100);
        while (m && n < BATCH_MAX) {
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (m->partition >= 0 && m->partition < MAX_PARTS)
                    tv->eof_offset[m->partition] = m->offset;
                rd_kafka_message_destroy(m);
            } else if (m->err) {
                log_kv(LOGL_WARN, "tokenview_consumer_error", "reason", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            m = n < BATCH_MAX ? rd_kafka_consumer_poll(tv->rk, 0) : NULL;
        }
        if (n > 0) {
            err_t e = {0};
            int stored = 0;
            for (int tries = 0; tries < APPLY_TRIES && !stored; tries++) {
                stored = apply(tv, msgs, n, &e) == 0;
                if (!stored) {
                    log_kv(LOGL_ERROR, "tokenview_apply_failed", "reason", e.msg);
                    struct timespec ts = {0, 200 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                }
            }
            for (size_t i = 0; i < n; i++)
                rd_kafka_message_destroy(msgs[i]);
            if (!stored) {
                log_kv(LOGL_ERROR, "tokenview_fatal", "reason", e.msg, "path", tv->path);
                atomic_store(&tv->fatal, 1);
                break;
            }
        }
        check_caught_up(tv);
    }
    free(msgs);
    return NULL;
}

static int start_consumer(tokenview_t *tv, err_t *e)
{
    tv->rk = kafka_consumer_new(&tv->cfg, NULL, "token view consumer", e);
    if (!tv->rk)
        return -1;
    if (kafka_wait_topic(tv->rk, tv->topic, tv->cfg.kafka_timeout_ms, KAFKA_TOPIC_WAIT_MS,
                         &tv->nparts, e) < 0) {
        if (e && e->cls == ERRC_PERMANENT)
            e->cls = ERRC_FATAL;
        return -1;
    }
    if (tv->nparts > MAX_PARTS)
        return err_set(e, ERRC_FATAL, "%s has more than %d partitions", tv->topic, MAX_PARTS);
    for (int p = 0; p < tv->nparts; p++) {
        tv->next_offset[p] = 0;
        tv->eof_offset[p] = -1;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(tv->wdb, "SELECT partition, next_offset FROM offsets", -1, &st, NULL) ==
        SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            int p = sqlite3_column_int(st, 0);
            if (p >= 0 && p < tv->nparts)
                tv->next_offset[p] = sqlite3_column_int64(st, 1);
        }
    }
    sqlite3_finalize(st);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(tv->nparts);
    for (int p = 0; p < tv->nparts; p++) {
        int64_t lo = 0, hi = 0;
        if (kafka_watermarks(tv->rk, tv->topic, p, &lo, &hi, tv->cfg.kafka_timeout_ms, e) < 0) {
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        tv->end_at_start[p] = hi;
        if (tv->next_offset[p] < lo)
            tv->next_offset[p] = lo;
        rd_kafka_topic_partition_list_add(parts, tv->topic, p)->offset = tv->next_offset[p];
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(tv->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err)
        return err_set(e, kafka_errc(err), "assign %s: %s", tv->topic, rd_kafka_err2str(err));
    check_caught_up(tv);
    return 0;
}

tokenview_t *tokenview_open(const config_t *cfg, metrics_t *m, err_t *e)
{
    tokenview_t *tv = calloc(1, sizeof *tv);
    if (!tv) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    tv->cfg = *cfg;
    pthread_mutex_init(&tv->rmu, NULL);
    if (!(tv->waiters = waiters_new(TOKENVIEW_WAITERS_MAX))) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto fail;
    }
    if (config_topic(cfg, KAFKA_TOPIC_CONNECTIONS, tv->topic, sizeof tv->topic, e) < 0)
        goto fail;
    mkdir(cfg->data_dir, 0700);
    snprintf(tv->path, sizeof tv->path, "%s/intake-tokens-%s.db", cfg->data_dir, tv->topic);
    tv->m_applied = metrics_counter(m, "oauthq_tokenview_records_applied_total",
                                    "Connection records that moved the token view forward", NULL);
    if (open_db(tv, e) < 0 || start_consumer(tv, e) < 0)
        goto fail;
    if (pthread_create(&tv->thread, NULL, apply_main, tv) != 0) {
        err_set(e, ERRC_FATAL, "cannot start the token view thread");
        goto fail;
    }
    tv->started = 1;
    log_kv(LOGL_INFO, "tokenview_open", "path", tv->path, "topic", tv->topic);
    return tv;
fail:
    tokenview_close(tv);
    return NULL;
}

void tokenview_close(tokenview_t *tv)
{
    if (!tv)
        return;
    atomic_store(&tv->stop, 1);
    if (tv->started)
        pthread_join(tv->thread, NULL);
    if (tv->rk) {
        rd_kafka_consumer_close(tv->rk);
        rd_kafka_destroy(tv->rk);
    }
    sqlite3_close(tv->rdb);
    sqlite3_close(tv->wdb);
    waiters_free(tv->waiters);
    pthread_mutex_destroy(&tv->rmu);
    free(tv);
}

int tokenview_get(tokenview_t *tv, const char *id, tokenview_row *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&tv->rmu);
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(tv->rdb,
                           "SELECT version, status, provider, token_type, scope, access_sealed, "
                           "expires_at_ms FROM tokens WHERE id=?",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = err_set(e, ERRC_RETRIABLE, "token view: %s", sqlite3_errmsg(tv->rdb));
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        out->version = sqlite3_column_int64(st, 0);
        snprintf(out->status, sizeof out->status, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(out->provider, sizeof out->provider, "%s",
                 (const char *)sqlite3_column_text(st, 2));
        snprintf(out->token_type, sizeof out->token_type, "%s",
                 (const char *)sqlite3_column_text(st, 3));
        snprintf(out->scope, sizeof out->scope, "%s", (const char *)sqlite3_column_text(st, 4));
        const char *sealed = (const char *)sqlite3_column_text(st, 5);
        if (strlen(sealed) >= sizeof out->access_sealed) {
            rc = err_set(e, ERRC_PERMANENT, "token view: sealed token too long");
            goto out;
        }
        snprintf(out->access_sealed, sizeof out->access_sealed, "%s", sealed);
        out->expires_at_ms = sqlite3_column_int64(st, 6);
        rc = 1;
    } else if (s != SQLITE_DONE) {
        rc = err_set(e, ERRC_RETRIABLE, "token view: %s", sqlite3_errmsg(tv->rdb));
    }
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&tv->rmu);
    return rc;
}

int tokenview_watch(tokenview_t *tv, const char *id, httpd_req *req)
{
    return waiters_watch(tv->waiters, id, req);
}

void tokenview_unwatch(tokenview_t *tv, httpd_req *req)
{
    waiters_unwatch(tv->waiters, req);
}

void tokenview_wake_all(tokenview_t *tv)
{
    waiters_wake_all(tv->waiters);
}

int tokenview_caught_up(tokenview_t *tv)
{
    return atomic_load(&tv->caught_up);
}

int tokenview_fatal(const tokenview_t *tv)
{
    return tv && atomic_load(&tv->fatal);
}
