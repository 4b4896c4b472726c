/*
 * store — the worker's per-partition SQLite state store (see store.h).
 *
 * Implementation notes: one sqlite3 connection per handle, opened without
 * SQLite's mutex (SQLITE_OPEN_NOMUTEX; one thread at a time per handle), with
 * every statement prepared once at open and cached in the handle. Writes run
 * in BEGIN IMMEDIATE transactions so the write lock is taken (or the busy
 * timeout spent) before any row changes. The schema is the text of
 * schemas/worker-store.sql, embedded below, split into "-- migrate: N"
 * sections that migrate() runs in order.
 *
 * Ownership: the handle owns the connection and its statements; callers'
 * strings are bound SQLITE_STATIC and bindings are cleared before returning.
 * Threads: whichever single thread currently uses the handle.
 */
#include "worker/store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/log.h"

/* schemas/worker-store.sql, embedded by the build (scripts/embed-assets --text). */
extern const char store_schema_text[];

#define MIGRATE_MARK "\n-- migrate: "

/* Cached statements, prepared once in store_open. */
enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_UPSERT,
    ST_DELETE,
    ST_META_GET,
    ST_META_SET,
    ST_GET,
    ST_DUE,
    ST_DUE_PROVIDER,
    ST_CLAIMED,
    ST_NEXT_RETRY,
    ST_COUNT,
    ST__N
};

static const char *const stmt_sql[ST__N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_UPSERT] = "INSERT INTO connections (id, version, status, phase, provider, retry_at_ms,"
                  " claimed, record, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                  " ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
                  " status = excluded.status, phase = excluded.phase,"
                  " provider = excluded.provider, retry_at_ms = excluded.retry_at_ms,"
                  " claimed = excluded.claimed, record = excluded.record,"
                  " updated_at_ms = excluded.updated_at_ms"
                  " WHERE excluded.version > connections.version",
    [ST_DELETE] = "DELETE FROM connections WHERE id = ?1",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_GET] = "SELECT record, version FROM connections WHERE id = ?1",
    [ST_DUE] = "SELECT id, record, version FROM connections"
               " WHERE retry_at_ms > 0 AND retry_at_ms <= ?1 ORDER BY retry_at_ms, id LIMIT ?2",
    [ST_DUE_PROVIDER] = "SELECT id, record, version FROM connections"
                        " WHERE retry_at_ms > 0 AND retry_at_ms <= ?1 AND provider = ?3"
                        " ORDER BY retry_at_ms, id LIMIT ?2",
    [ST_CLAIMED] = "SELECT id, record, version FROM connections WHERE claimed = 1 ORDER BY id",
    [ST_NEXT_RETRY] = "SELECT min(retry_at_ms) FROM connections WHERE retry_at_ms > 0",
    [ST_COUNT] = "SELECT count(*) FROM connections",
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *st[ST__N];
    int64_t applied; /* meta.applied_offset, -1 when none */
    int iterating;   /* inside a store_due/store_claimed callback */
    char path[STORE_PATH_MAX];
};

/* ---- errors ------------------------------------------------------------- */

static errc sqlite_class(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_INTERRUPT:
    case SQLITE_ABORT:
    case SQLITE_PROTOCOL:
        return ERRC_RETRIABLE;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
    case SQLITE_MISUSE:
        return ERRC_PERMANENT;
    default: /* CORRUPT, NOTADB, ERROR (schema mismatch), CANTOPEN, READONLY, NOMEM, ... */
        return ERRC_FATAL;
    }
}

/* Fill e from the connection's last error; call before any other SQLite call
 * (reset/rollback) replaces the message. Never includes bound values. */
static int db_fail(const store_t *s, int rc, const char *op, err_t *e)
{
    const char *msg = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    return err_set(e, sqlite_class(rc), "store %s %s: %s (sqlite %d)", op, s->path, msg, rc);
}

/* Refuse NULL handles and calls from inside an iteration callback. */
static int check_use(const store_t *s, const char *op, err_t *e)
{
    if (!s)
        return err_set(e, ERRC_PERMANENT, "store %s: NULL store", op);
    if (s->iterating)
        return err_set(e, ERRC_PERMANENT, "store %s %s: called from an iteration callback", op,
                       s->path);
    return 0;
}

/* ---- statements and transactions ---------------------------------------- */

static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Run a statement that returns no rows. */
static int exec_stmt(store_t *s, int id, const char *op, err_t *e)
{
    sqlite3_stmt *st = s->st[id];
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        db_fail(s, rc, op, e);
        stmt_done(st);
        return -1;
    }
    stmt_done(st);
    return 0;
}

/* Run SQL text (pragmas, migrations) without caching it. */
static int exec_sql(store_t *s, const char *sql, const char *op, err_t *e)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, op, e);
}

static int tx_begin(store_t *s, const char *op, err_t *e)
{
    if (s->st[ST_BEGIN])
        return exec_stmt(s, ST_BEGIN, op, e);
    return exec_sql(s, "BEGIN IMMEDIATE", op, e);
}

/* Roll back if a transaction is still open (SQLite already rolls back on
 * some errors); keeps e, which describes the original failure. */
static void tx_rollback(store_t *s)
{
    if (sqlite3_get_autocommit(s->db))
        return;
    int rc;
    if (s->st[ST_ROLLBACK]) {
        rc = sqlite3_step(s->st[ST_ROLLBACK]);
        sqlite3_reset(s->st[ST_ROLLBACK]);
    } else {
        rc = sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        log_kv(LOGL_WARN, "store_rollback_failed", "path", s->path, "error", sqlite3_errstr(rc));
}

static int tx_commit(store_t *s, const char *op, err_t *e)
{
    int rc = s->st[ST_COMMIT] ? exec_stmt(s, ST_COMMIT, op, e) : exec_sql(s, "COMMIT", op, e);
    if (rc < 0)
        tx_rollback(s);
    return rc;
}

/* Run a single-value query (PRAGMA ...) and copy its text result. */
static int query_text(store_t *s, const char *sql, char *out, size_t cap, const char *op, err_t *e)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, op, e);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            err_set(e, ERRC_FATAL, "store %s %s: no result", op, s->path);
        else
            db_fail(s, rc, op, e);
        sqlite3_finalize(st);
        return -1;
    }
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(out, cap, "%s", v ? (const char *)v : "");
    sqlite3_finalize(st);
    return 0;
}

static int query_int(store_t *s, const char *sql, int64_t *out, const char *op, err_t *e)
{
    char buf[32];
    if (query_text(s, sql, buf, sizeof buf, op, e) < 0)
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf || *end)
        return err_set(e, ERRC_FATAL, "store %s %s: not an integer", op, s->path);
    *out = v;
    return 0;
}

/* ---- meta --------------------------------------------------------------- */

/* Copy meta[key] into out; returns 1 found, 0 absent, -1 error. */
static int meta_get(store_t *s, const char *key, char *out, size_t cap, err_t *e)
{
    sqlite3_stmt *st = s->st[ST_META_GET];
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int found = 0;
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        if (!v || n < 0 || (size_t)n >= cap) {
            err_set(e, ERRC_FATAL, "store open %s: meta %s is corrupt", s->path, key);
            found = -1;
        } else {
            memcpy(out, v, (size_t)n);
            out[n] = '\0';
            found = 1;
        }
    } else if (rc != SQLITE_DONE) {
        db_fail(s, rc, "open", e);
        found = -1;
    }
    stmt_done(st);
    return found;
}

static int meta_set(store_t *s, const char *key, const char *value, const char *op, err_t *e)
{
    sqlite3_stmt *st = s->st[ST_META_SET];
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return exec_stmt(s, ST_META_SET, op, e);
}

static int meta_set_offset(store_t *s, int64_t offset, const char *op, err_t *e)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, offset);
    return meta_set(s, "applied_offset", buf, op, e);
}

/* Record topic/partition in a new file, or check that an existing file
 * caches this topic/partition. */
static int bind_partition(store_t *s, const char *topic, int32_t partition, err_t *e)
{
    char want_part[16], have_topic[STORE_TOPIC_MAX + 1], have_part[16];
    snprintf(want_part, sizeof want_part, "%" PRId32, partition);
    if (tx_begin(s, "open", e) < 0)
        return -1;
    int t = meta_get(s, "topic", have_topic, sizeof have_topic, e);
    int p = t < 0 ? -1 : meta_get(s, "partition", have_part, sizeof have_part, e);
    if (t < 0 || p < 0)
        goto fail;
    if (t == 0 && p == 0) {
        if (meta_set(s, "topic", topic, "open", e) < 0 ||
            meta_set(s, "partition", want_part, "open", e) < 0)
            goto fail;
    } else if (t == 0 || p == 0) {
        err_set(e, ERRC_FATAL, "store open %s: meta has %s but not %s", s->path,
                t ? "topic" : "partition", t ? "partition" : "topic");
        goto fail;
    } else if (strcmp(have_topic, topic) != 0 || strcmp(have_part, want_part) != 0) {
        err_set(e, ERRC_FATAL, "store open %s: file belongs to %s/%s, not %s/%s", s->path,
                have_topic, have_part, topic, want_part);
        goto fail;
    }
    return tx_commit(s, "open", e);
fail:
    tx_rollback(s);
    return -1;
}

static int load_offset(store_t *s, err_t *e)
{
    char buf[32];
    int found = meta_get(s, "applied_offset", buf, sizeof buf, e);
    if (found < 0)
        return -1;
    if (found == 0) {
        s->applied = -1;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf || *end || v < 0)
        return err_set(e, ERRC_FATAL, "store open %s: meta applied_offset is corrupt", s->path);
    s->applied = v;
    return 0;
}

/* ---- schema ------------------------------------------------------------- */

/* Locate migration section n of the embedded schema; -1 when there is none. */
static int schema_section(int n, const char **body, size_t *len)
{
    char mark[32];
    snprintf(mark, sizeof mark, MIGRATE_MARK "%d\n", n);
    const char *p = strstr(store_schema_text, mark);
    if (!p)
        return -1;
    p += strlen(mark);
    const char *end = strstr(p, MIGRATE_MARK);
    *body = p;
    *len = end ? (size_t)(end - p) + 1 : strlen(p);
    return 0;
}

/* Version the embedded schema migrates to (number of sections). */
static int schema_latest(void)
{
    const char *body;
    size_t len;
    int n = 0;
    while (schema_section(n + 1, &body, &len) == 0)
        n++;
    return n;
}

static int run_section(store_t *s, int n, err_t *e)
{
    const char *body;
    size_t len;
    if (schema_section(n, &body, &len) < 0)
        return err_set(e, ERRC_FATAL, "store migrate %s: no section %d", s->path, n);
    char *sql = strndup(body, len);
    if (!sql)
        return err_set(e, ERRC_FATAL, "store migrate %s: out of memory", s->path);
    int rc = exec_sql(s, sql, "migrate", e);
    free(sql);
    if (rc < 0)
        return -1;
    int64_t v = 0;
    if (query_int(s, "PRAGMA user_version", &v, "migrate", e) < 0)
        return -1;
    if (v != n)
        return err_set(e, ERRC_FATAL, "store migrate %s: section %d left user_version %" PRId64,
                       s->path, n, v);
    return 0;
}

/* Bring the file from its user_version to schema_latest(), in one
 * transaction (taken before reading the version, so two processes opening
 * the same new file cannot both migrate it). */
static int migrate(store_t *s, err_t *e)
{
    const int latest = schema_latest();
    int64_t from = 0;
    if (tx_begin(s, "migrate", e) < 0)
        return -1;
    if (query_int(s, "PRAGMA user_version", &from, "migrate", e) < 0)
        goto fail;
    if (from > latest || from < 0) {
        err_set(e, ERRC_FATAL, "store migrate %s: schema version %" PRId64 " is not %d or older",
                s->path, from, latest);
        goto fail;
    }
    if (from == 0) {
        int64_t objects = 0;
        if (query_int(s, "SELECT count(*) FROM sqlite_master", &objects, "migrate", e) < 0)
            goto fail;
        if (objects > 0) {
            err_set(e, ERRC_FATAL, "store migrate %s: unversioned database is not empty", s->path);
            goto fail;
        }
    }
    for (int n = (int)from + 1; n <= latest; n++)
        if (run_section(s, n, e) < 0)
            goto fail;
    if (tx_commit(s, "migrate", e) < 0)
        return -1;
    if (from < latest) {
        char f[24], t[24];
        snprintf(f, sizeof f, "%" PRId64, from);
        snprintf(t, sizeof t, "%d", latest);
        log_kv(LOGL_INFO, "store_migrated", "path", s->path, "from_version", f, "to_version", t);
    }
    return 0;
fail:
    tx_rollback(s);
    return -1;
}

/* ---- open / close ------------------------------------------------------- */

store_t *store_open(const char *path, const char *topic, int32_t partition, err_t *e)
{
    if (!path || !*path || !topic || !*topic || partition < 0) {
        err_set(e, ERRC_PERMANENT, "store open: path, topic and partition >= 0 are required");
        return NULL;
    }
    if (strlen(path) >= STORE_PATH_MAX || strlen(topic) > STORE_TOPIC_MAX) {
        err_set(e, ERRC_PERMANENT, "store open: path or topic too long");
        return NULL;
    }
    store_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERRC_FATAL, "store open %s: out of memory", path);
        return NULL;
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    s->applied = -1;

    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        db_fail(s, rc, "open", e);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);

    char mode[16];
    if (query_text(s, "PRAGMA journal_mode = WAL", mode, sizeof mode, "open", e) < 0)
        goto fail;
    if (strcmp(mode, "wal") != 0) {
        err_set(e, ERRC_FATAL, "store open %s: journal_mode is %s, not wal", s->path, mode);
        goto fail;
    }
    if (exec_sql(s, "PRAGMA synchronous = NORMAL", "open", e) < 0 || migrate(s, e) < 0)
        goto fail;

    for (int i = 0; i < ST__N; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK) {
            db_fail(s, rc, "prepare", e);
            goto fail;
        }
    }
    if (bind_partition(s, topic, partition, e) < 0 || load_offset(s, e) < 0)
        goto fail;

    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, partition);
    snprintf(off, sizeof off, "%" PRId64, s->applied);
    log_kv(LOGL_INFO, "store_opened", "path", s->path, "topic", topic, "partition", part,
           "applied_offset", off);
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(store_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST__N; i++)
        sqlite3_finalize(s->st[i]);
    if (s->db) {
        int rc = sqlite3_close(s->db);
        if (rc != SQLITE_OK)
            log_kv(LOGL_WARN, "store_close_failed", "path", s->path, "error", sqlite3_errstr(rc));
    }
    free(s);
}

int64_t store_applied_offset(const store_t *s)
{
    return s ? s->applied : -1;
}

/* ---- writes ------------------------------------------------------------- */

/* Common argument checks of store_apply/store_delete. */
static int check_write(const store_t *s, const void *items, size_t n, int64_t offset,
                       const char *op, err_t *e)
{
    if (check_use(s, op, e) < 0)
        return -1;
    if (n > 0 && !items)
        return err_set(e, ERRC_PERMANENT, "store %s %s: NULL rows", op, s->path);
    if (n > INT_MAX)
        return err_set(e, ERRC_PERMANENT, "store %s %s: too many rows", op, s->path);
    if (offset < 0 || offset < s->applied)
        return err_set(e, ERRC_PERMANENT,
                       "store %s %s: offset %" PRId64 " is behind applied offset %" PRId64, op,
                       s->path, offset, s->applied);
    return 0;
}

static int bind_row(sqlite3_stmt *st, const store_row *r)
{
    int rc = sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, r->version);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 3, r->status, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, r->phase, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 5, r->provider, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 6, r->retry_at_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 7, r->claimed ? 1 : 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 8, r->record, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 9, r->updated_at_ms);
    return rc;
}

int store_apply(store_t *s, const store_row *rows, size_t n, int64_t applied_offset, err_t *e)
{
    if (check_write(s, rows, n, applied_offset, "apply", e) < 0)
        return -1;
    if (tx_begin(s, "apply", e) < 0)
        return -1;
    sqlite3_stmt *st = s->st[ST_UPSERT];
    int written = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].id) {
            err_set(e, ERRC_PERMANENT, "store apply %s: row %zu has no id", s->path, i);
            goto fail;
        }
        int rc = bind_row(st, &rows[i]);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
            err_set(e, sqlite_class(rc), "store apply %s: row %zu of %zu: %s (sqlite %d)", s->path,
                    i, n, sqlite3_errmsg(s->db), rc);
            goto fail;
        }
        written += sqlite3_changes(s->db) > 0;
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    if (meta_set_offset(s, applied_offset, "apply", e) < 0)
        goto fail;
    if (tx_commit(s, "apply", e) < 0)
        return -1;
    s->applied = applied_offset;
    return written;
fail:
    stmt_done(st);
    tx_rollback(s);
    return -1;
}

/* Why synchronous=OFF is safe here: in WAL mode it only skips the fsyncs,
 * so a crash of the process (kill -9) loses nothing the kernel already
 * has; only an OS crash or power loss during the restore can lose (or, in
 * the worst case, corrupt) what this restore wrote. The store is a cache
 * that may be behind Kafka (SPEC §2, §6) and the restore writes nothing
 * that is not already committed in the changelog: lost rows are read
 * again from store_applied_offset() + 1 next time. The window ends with
 * store_bulk(s, 0): synchronous=NORMAL again and a TRUNCATE checkpoint,
 * which fsyncs the WAL and the file before the worker processes the
 * partition. The larger autocheckpoint (8192 pages, 32 MiB of WAL on disk,
 * not in memory) folds the many rewrites of the same index pages; the
 * page cache grows from SQLite's default 2 MiB to 8 MiB while restoring
 * (a batch's dirty pages fit, instead of spilling into the WAL and being
 * read back), one store at a time. */
int store_bulk(store_t *s, int on, err_t *e)
{
    if (check_use(s, "bulk", e) < 0)
        return -1;
    if (on)
        return exec_sql(s,
                        "PRAGMA synchronous = OFF; PRAGMA wal_autocheckpoint = 8192;"
                        " PRAGMA cache_size = -8192",
                        "bulk", e);
    return exec_sql(s,
                    "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 1000;"
                    " PRAGMA cache_size = -2000; PRAGMA wal_checkpoint(TRUNCATE)",
                    "bulk", e);
}

int store_delete(store_t *s, const char *const *ids, size_t n, int64_t applied_offset, err_t *e)
{
    if (check_write(s, ids, n, applied_offset, "delete", e) < 0)
        return -1;
    if (tx_begin(s, "delete", e) < 0)
        return -1;
    sqlite3_stmt *st = s->st[ST_DELETE];
    int deleted = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ids[i]) {
            err_set(e, ERRC_PERMANENT, "store delete %s: id %zu is NULL", s->path, i);
            goto fail;
        }
        int rc = sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
            db_fail(s, rc, "delete", e);
            goto fail;
        }
        deleted += sqlite3_changes(s->db) > 0;
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    if (meta_set_offset(s, applied_offset, "delete", e) < 0)
        goto fail;
    if (tx_commit(s, "delete", e) < 0)
        return -1;
    s->applied = applied_offset;
    return deleted;
fail:
    stmt_done(st);
    tx_rollback(s);
    return -1;
}

/* ---- reads -------------------------------------------------------------- */

int store_get(store_t *s, const char *id, char **record, int64_t *version, err_t *e)
{
    if (record)
        *record = NULL;
    if (check_use(s, "get", e) < 0)
        return -1;
    if (!id)
        return err_set(e, ERRC_PERMANENT, "store get %s: NULL id", s->path);
    sqlite3_stmt *st = s->st[ST_GET];
    int rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        stmt_done(st);
        return 0;
    }
    if (rc != SQLITE_ROW) {
        db_fail(s, rc, "get", e);
        stmt_done(st);
        return -1;
    }
    if (record) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        int len = sqlite3_column_bytes(st, 0);
        char *copy = v && len >= 0 ? malloc((size_t)len + 1) : NULL;
        if (!copy) {
            err_set(e, ERRC_FATAL, "store get %s: out of memory", s->path);
            stmt_done(st);
            return -1;
        }
        memcpy(copy, v, (size_t)len);
        copy[len] = '\0';
        *record = copy;
    }
    if (version)
        *version = sqlite3_column_int64(st, 1);
    stmt_done(st);
    return 1;
}

/* Step a bound (id, record, version) query, calling fn per row. */
static int iterate(store_t *s, sqlite3_stmt *st, const char *op, store_row_fn fn, void *ud,
                   err_t *e)
{
    int calls = 0, rc;
    s->iterating = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *record = (const char *)sqlite3_column_text(st, 1);
        if (!id || !record) {
            rc = SQLITE_NOMEM;
            break;
        }
        calls++;
        if (fn(id, record, sqlite3_column_int64(st, 2), ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    s->iterating = 0;
    if (rc != SQLITE_DONE) {
        db_fail(s, rc, op, e);
        stmt_done(st);
        return -1;
    }
    stmt_done(st);
    return calls;
}

int store_due(store_t *s, int64_t now_ms, int limit, store_row_fn fn, void *ud, err_t *e)
{
    return store_due_provider(s, NULL, now_ms, limit, fn, ud, e);
}

int store_due_provider(store_t *s, const char *provider, int64_t now_ms, int limit, store_row_fn fn,
                       void *ud, err_t *e)
{
    if (check_use(s, "due", e) < 0)
        return -1;
    if (!fn || limit <= 0)
        return err_set(e, ERRC_PERMANENT, "store due %s: callback and limit > 0 required", s->path);
    sqlite3_stmt *st = s->st[provider ? ST_DUE_PROVIDER : ST_DUE];
    int rc = sqlite3_bind_int64(st, 1, now_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 2, limit);
    if (rc == SQLITE_OK && provider)
        rc = sqlite3_bind_text(st, 3, provider, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) {
        db_fail(s, rc, "due", e);
        stmt_done(st);
        return -1;
    }
    return iterate(s, st, "due", fn, ud, e);
}

int store_claimed(store_t *s, store_row_fn fn, void *ud, err_t *e)
{
    if (check_use(s, "claimed", e) < 0)
        return -1;
    if (!fn)
        return err_set(e, ERRC_PERMANENT, "store claimed %s: callback required", s->path);
    return iterate(s, s->st[ST_CLAIMED], "claimed", fn, ud, e);
}

/* Run a cached one-integer query; a NULL result reads as 0. */
static int64_t scalar(store_t *s, int id, const char *op, err_t *e)
{
    if (check_use(s, op, e) < 0)
        return -1;
    sqlite3_stmt *st = s->st[id];
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        db_fail(s, rc, op, e);
        stmt_done(st);
        return -1;
    }
    int64_t v = sqlite3_column_int64(st, 0);
    stmt_done(st);
    return v;
}

int64_t store_next_retry(store_t *s, err_t *e)
{
    return scalar(s, ST_NEXT_RETRY, "next_retry", e);
}

int64_t store_count(store_t *s)
{
    err_t e = {0};
    int64_t n = scalar(s, ST_COUNT, "count", &e);
    if (n < 0)
        log_kv(LOGL_WARN, "store_count_failed", "error", e.msg);
    return n;
}

/* ---- paths -------------------------------------------------------------- */

static errc errno_class(int err)
{
    switch (err) {
    case EINTR:
    case EAGAIN:
    case EIO:
    case ENOSPC:
        return ERRC_RETRIABLE;
    default: /* EACCES, EROFS, ENOTDIR, ... : configuration */
        return ERRC_FATAL;
    }
}

/* mkdir -p dir (new directories 0700: stores hold encrypted secrets). */
static int mkdir_p(const char *dir, err_t *e)
{
    char buf[STORE_PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return err_set(e, ERRC_PERMANENT, "store path: directory name too long");
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
            int err = errno;
            return err_set(e, errno_class(err), "store path: mkdir %s: %s", buf, strerror(err));
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        int err = errno;
        return err_set(e, errno_class(err), "store path: stat %s: %s", dir, strerror(err));
    }
    if (!S_ISDIR(st.st_mode))
        return err_set(e, ERRC_FATAL, "store path: %s is not a directory", dir);
    return 0;
}

int store_path(const char *dir, const char *topic, int32_t partition, char *out, size_t cap,
               err_t *e)
{
    if (!dir || !*dir || !topic || !*topic || partition < 0 || !out || cap == 0)
        return err_set(e, ERRC_PERMANENT,
                       "store path: dir, topic, partition >= 0 and a buffer are required");
    size_t tlen = strlen(topic);
    if (tlen > STORE_TOPIC_MAX)
        return err_set(e, ERRC_PERMANENT, "store path: topic too long");
    char safe[STORE_TOPIC_MAX + 1];
    for (size_t i = 0; i < tlen; i++) {
        char c = topic[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        safe[i] = ok ? c : '_';
    }
    safe[tlen] = '\0';
    size_t dlen = strlen(dir);
    if (dlen >= STORE_PATH_MAX)
        return err_set(e, ERRC_PERMANENT, "store path: directory name too long");
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    const char *sep = dir[dlen - 1] == '/' ? "" : "/";
    int n =
        snprintf(out, cap, "%.*s%sworker-%s-%" PRId32 ".db", (int)dlen, dir, sep, safe, partition);
    if (n < 0 || (size_t)n >= cap) {
        out[0] = '\0';
        return err_set(e, ERRC_PERMANENT, "store path: path for %s/%" PRId32 " too long", safe,
                       partition);
    }
    return mkdir_p(dir, e);
}
