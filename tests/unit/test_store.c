/* Unit tests of worker/store: the per-partition SQLite state store, against
 * real SQLite files in a fresh temp directory per test (cwd = repo root). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "worker/store.h"

#define TOPIC "oauthq.connections"

typedef struct {
    char dir[64];
    char path[STORE_PATH_MAX];
} fixture;

/* Everything logged during a test, to check that records never appear. */
static char logged[64 * 1024];

static void log_sink(const char *line, void *ud)
{
    (void)ud;
    size_t have = strlen(logged), n = strlen(line);
    if (have + n + 2 < sizeof logged) {
        memcpy(logged + have, line, n);
        logged[have + n] = '\n';
        logged[have + n + 1] = '\0';
    }
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/oauthq-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/worker-test-0.db", f->dir);
    logged[0] = '\0';
    log_set_sink(log_sink, NULL);
    *state = f;
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int teardown(void **state)
{
    fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    log_set_sink(NULL, NULL);
    free(f);
    return 0;
}

static store_row row(const char *id, int64_t version, const char *record)
{
    store_row r = {
        .id = id,
        .version = version,
        .status = "pending",
        .phase = "queued",
        .provider = "stripe",
        .retry_at_ms = 0,
        .claimed = 0,
        .record = record,
        .updated_at_ms = 1700000000000,
    };
    return r;
}

static store_t *open_ok(const fixture *f, int32_t partition)
{
    err_t e = {0};
    store_t *s = store_open(f->path, TOPIC, partition, &e);
    if (!s)
        fail_msg("store_open: %s", e.msg);
    return s;
}

/* Expect id to hold (record, version). */
static void expect_row(store_t *s, const char *id, const char *record, int64_t version)
{
    err_t e = {0};
    char *got = NULL;
    int64_t v = 0;
    assert_int_equal(store_get(s, id, &got, &v, &e), 1);
    assert_string_equal(got, record);
    assert_int_equal(v, version);
    free(got);
}

static void expect_absent(store_t *s, const char *id)
{
    err_t e = {0};
    char *got = (char *)"x";
    assert_int_equal(store_get(s, id, &got, NULL, &e), 0);
    assert_null(got);
}

/* Run one single-value SQL query on a separate raw connection. */
static void raw_query(const char *path, const char *sql, char *out, size_t cap)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(out, cap, "%s", v ? (const char *)v : "");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Collects iteration results. */
typedef struct {
    char ids[16][32];
    int64_t versions[16];
    int n;
    int stop_after; /* 0 = never */
    store_t *s;     /* for the re-entrancy test */
    int reentry_rc;
    errc reentry_cls;
} collected;

static int collect(const char *id, const char *record, int64_t version, void *ud)
{
    collected *c = ud;
    assert_non_null(record);
    if (c->n < 16) {
        snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", id);
        c->versions[c->n] = version;
    }
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

/* ---- tests -------------------------------------------------------------- */

static void test_open_close_reopen_keeps_rows_and_offset(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    assert_int_equal(store_applied_offset(s), -1);
    assert_int_equal(store_count(s), 0);
    expect_absent(s, "c1");

    store_row rows[3] = {row("c1", 1, "{\"id\":\"c1\"}"), row("c2", 4, "{\"id\":\"c2\"}"),
                         row("c3", 2, "{\"id\":\"c3\"}")};
    assert_int_equal(store_apply(s, rows, 3, 10, &e), 3);
    assert_int_equal(store_applied_offset(s), 10);
    store_close(s);

    s = open_ok(f, 0);
    assert_int_equal(store_applied_offset(s), 10);
    assert_int_equal(store_count(s), 3);
    expect_row(s, "c2", "{\"id\":\"c2\"}", 4);
    int64_t v = 0;
    assert_int_equal(store_get(s, "c3", NULL, &v, &e), 1);
    assert_int_equal(v, 2);
    /* An empty apply still advances the offset (e.g. a batch of skipped rows). */
    assert_int_equal(store_apply(s, NULL, 0, 11, &e), 0);
    store_close(s);
    s = open_ok(f, 0);
    assert_int_equal(store_applied_offset(s), 11);
    store_close(s);
    store_close(NULL);
    assert_non_null(strstr(logged, "store_opened"));
}

static void test_versions_only_move_forward(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    store_row first = row("c1", 5, "{\"v\":5}");
    assert_int_equal(store_apply(s, &first, 1, 1, &e), 1);

    /* Older and equal versions are skipped; only c2 is written. */
    store_row batch[3] = {row("c1", 4, "{\"v\":4}"), row("c1", 5, "{\"v\":\"5b\"}"),
                          row("c2", 1, "{\"c2\":1}")};
    assert_int_equal(store_apply(s, batch, 3, 2, &e), 1);
    expect_row(s, "c1", "{\"v\":5}", 5);
    expect_row(s, "c2", "{\"c2\":1}", 1);
    assert_int_equal(store_applied_offset(s), 2);

    /* All skipped: 0 written, offset still advances. */
    assert_int_equal(store_apply(s, batch, 2, 3, &e), 0);
    assert_int_equal(store_applied_offset(s), 3);

    /* A newer version replaces every column. */
    store_row newer = row("c1", 6, "{\"v\":6}");
    newer.status = "connected";
    newer.phase = NULL;
    newer.retry_at_ms = 777;
    assert_int_equal(store_apply(s, &newer, 1, 4, &e), 1);
    expect_row(s, "c1", "{\"v\":6}", 6);
    assert_int_equal(store_next_retry(s, &e), 777);

    /* Several versions of one id in one batch: each newer one wins. */
    store_row chain[3] = {row("c3", 1, "{\"c3\":1}"), row("c3", 3, "{\"c3\":3}"),
                          row("c3", 2, "{\"c3\":2}")};
    assert_int_equal(store_apply(s, chain, 3, 5, &e), 2);
    expect_row(s, "c3", "{\"c3\":3}", 3);
    store_close(s);
}

static void test_apply_is_atomic_with_offset(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    store_row good = row("c1", 1, "{\"c1\":1}");
    assert_int_equal(store_apply(s, &good, 1, 5, &e), 1);

    /* Second row violates NOT NULL (status): the first row of the batch and
     * the offset must be rolled back with it. */
    store_row bad[3] = {row("c9", 1, "{\"secret_blob\":\"ENC-c9\"}"),
                        row("c1", 2, "{\"secret_blob\":\"ENC-c1\"}"),
                        row("c10", 1, "{\"secret_blob\":\"ENC-c10\"}")};
    bad[2].status = NULL;
    assert_int_equal(store_apply(s, bad, 3, 6, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_non_null(strstr(e.msg, "apply"));
    assert_non_null(strstr(e.msg, f->path));
    assert_non_null(strstr(e.msg, "NOT NULL"));
    assert_null(strstr(e.msg, "ENC-"));
    assert_null(strstr(logged, "ENC-"));
    assert_int_equal(store_applied_offset(s), 5);
    expect_absent(s, "c9");
    expect_row(s, "c1", "{\"c1\":1}", 1);
    assert_int_equal(store_count(s), 1);

    /* A row without id is refused the same way. */
    bad[2].status = "pending";
    bad[2].id = NULL;
    assert_int_equal(store_apply(s, bad, 3, 6, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    expect_absent(s, "c9");

    /* The offset never moves backwards; nothing is written. */
    assert_int_equal(store_apply(s, bad, 1, 4, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(store_apply(s, NULL, 2, 7, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    expect_absent(s, "c9");
    store_close(s);

    /* And the file agrees after reopening. */
    s = open_ok(f, 0);
    assert_int_equal(store_applied_offset(s), 5);
    assert_int_equal(store_count(s), 1);
    store_close(s);
}

static void test_delete(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    store_row rows[3] = {row("c1", 1, "{}"), row("c2", 1, "{}"), row("c3", 1, "{}")};
    assert_int_equal(store_apply(s, rows, 3, 10, &e), 3);
    const char *ids[2] = {"c1", "absent"};
    assert_int_equal(store_delete(s, ids, 2, 20, &e), 1);
    expect_absent(s, "c1");
    assert_int_equal(store_count(s), 2);
    assert_int_equal(store_applied_offset(s), 20);

    /* Backwards offset or NULL id: refused, nothing deleted. */
    const char *more[2] = {"c2", NULL};
    assert_int_equal(store_delete(s, more, 2, 21, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(store_delete(s, more, 1, 19, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(store_count(s), 2);
    store_close(s);

    s = open_ok(f, 0);
    assert_int_equal(store_applied_offset(s), 20);
    expect_absent(s, "c1");
    /* After a tombstone, the id can come back with any version. */
    store_row back = row("c1", 1, "{\"back\":1}");
    assert_int_equal(store_apply(s, &back, 1, 21, &e), 1);
    expect_row(s, "c1", "{\"back\":1}", 1);
    store_close(s);
}

static void test_due_ordering_and_limit(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    store_row rows[6] = {row("a", 1, "{}"), row("b", 2, "{}"), row("c", 3, "{}"),
                         row("d", 4, "{}"), row("e", 5, "{}"), row("f", 6, "{}")};
    rows[0].retry_at_ms = 300;
    rows[1].retry_at_ms = 100;
    rows[2].retry_at_ms = 200;
    rows[3].retry_at_ms = 0; /* none */
    rows[4].retry_at_ms = 500;
    rows[5].retry_at_ms = 200; /* ties ordered by id */
    assert_int_equal(store_apply(s, rows, 6, 1, &e), 6);

    collected c = {0};
    assert_int_equal(store_due(s, 300, 10, collect, &c, &e), 4);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.ids[0], "b");
    assert_string_equal(c.ids[1], "c");
    assert_string_equal(c.ids[2], "f");
    assert_string_equal(c.ids[3], "a");
    assert_int_equal(c.versions[0], 2);

    memset(&c, 0, sizeof c);
    assert_int_equal(store_due(s, 1000, 2, collect, &c, &e), 2);
    assert_string_equal(c.ids[0], "b");
    assert_string_equal(c.ids[1], "c");

    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    assert_int_equal(store_due(s, 1000, 10, collect, &c, &e), 1);

    memset(&c, 0, sizeof c);
    assert_int_equal(store_due(s, 99, 10, collect, &c, &e), 0);
    assert_int_equal(c.n, 0);

    assert_int_equal(store_due(s, 1000, 0, collect, &c, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(store_due(s, 1000, 1, NULL, NULL, &e), -1);
    /* The statement is reusable after an early stop. */
    memset(&c, 0, sizeof c);
    assert_int_equal(store_due(s, 1000, 10, collect, &c, &e), 5);
    store_close(s);
}

static void test_claimed_listing(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    collected c = {0};
    assert_int_equal(store_claimed(s, collect, &c, &e), 0);

    store_row rows[3] = {row("z", 1, "{}"), row("m", 1, "{}"), row("a", 1, "{}")};
    rows[0].claimed = 1;
    rows[0].phase = "exchanging";
    rows[2].claimed = 1;
    rows[2].phase = "exchanging";
    assert_int_equal(store_apply(s, rows, 3, 1, &e), 3);
    assert_int_equal(store_claimed(s, collect, &c, &e), 2);
    assert_string_equal(c.ids[0], "a");
    assert_string_equal(c.ids[1], "z");

    /* The claim settles in a newer version. */
    store_row settled = row("z", 2, "{}");
    settled.status = "connected";
    settled.phase = NULL;
    assert_int_equal(store_apply(s, &settled, 1, 2, &e), 1);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_claimed(s, collect, &c, &e), 1);
    assert_string_equal(c.ids[0], "a");
    store_close(s);
}

static void test_next_retry(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    assert_int_equal(store_next_retry(s, &e), 0);
    store_row rows[3] = {row("a", 1, "{}"), row("b", 1, "{}"), row("c", 1, "{}")};
    rows[0].retry_at_ms = 5000;
    rows[1].retry_at_ms = 3000;
    assert_int_equal(store_apply(s, rows, 3, 1, &e), 3);
    assert_int_equal(store_next_retry(s, &e), 3000);
    store_row b2 = row("b", 2, "{}");
    assert_int_equal(store_apply(s, &b2, 1, 2, &e), 1);
    assert_int_equal(store_next_retry(s, &e), 5000);
    const char *ids[1] = {"a"};
    assert_int_equal(store_delete(s, ids, 1, 3, &e), 1);
    assert_int_equal(store_next_retry(s, &e), 0);
    store_close(s);
}

static void test_wrong_topic_or_partition_is_fatal(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 3);
    store_close(s);

    assert_null(store_open(f->path, TOPIC, 4, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, f->path));
    assert_non_null(strstr(e.msg, "/3"));

    err_clear(&e);
    assert_null(store_open(f->path, "other.connections", 3, &e));
    assert_int_equal(e.cls, ERRC_FATAL);

    s = open_ok(f, 3);
    store_close(s);

    /* Misuse of the arguments themselves is permanent. */
    assert_null(store_open(f->path, TOPIC, -1, &e));
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_null(store_open(NULL, TOPIC, 0, &e));
    assert_int_equal(e.cls, ERRC_PERMANENT);
}

static void test_migration_from_empty_file(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    /* A zero-byte file (user_version 0). */
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fclose(fp);
    store_t *s = open_ok(f, 0);
    store_close(s);
    char v[64];
    raw_query(f->path, "PRAGMA user_version", v, sizeof v);
    assert_string_equal(v, "1");
    raw_query(f->path,
              "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master"
              " WHERE name NOT LIKE 'sqlite_%' ORDER BY name)",
              v, sizeof v);
    assert_string_equal(v, "connections,connections_claimed,connections_retry_at,meta");
    raw_query(f->path, "SELECT value FROM meta WHERE key = 'topic'", v, sizeof v);
    assert_string_equal(v, TOPIC);

    /* A real SQLite database with user_version 0 and no tables. */
    char p2[STORE_PATH_MAX];
    snprintf(p2, sizeof p2, "%s/empty.db", f->dir);
    raw_exec(p2, "PRAGMA user_version = 0; PRAGMA journal_mode = DELETE; VACUUM;");
    s = store_open(p2, TOPIC, 1, &e);
    assert_non_null(s);
    store_close(s);
    raw_query(p2, "PRAGMA user_version", v, sizeof v);
    assert_string_equal(v, "1");

    /* Reopening an up-to-date store runs nothing and logs no migration. */
    logged[0] = '\0';
    s = store_open(p2, TOPIC, 1, &e);
    assert_non_null(s);
    store_close(s);
    assert_null(strstr(logged, "store_migrated"));
}

static void test_refuses_foreign_newer_and_corrupt_files(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    char p[STORE_PATH_MAX];

    snprintf(p, sizeof p, "%s/foreign.db", f->dir);
    raw_exec(p, "CREATE TABLE foo (x INTEGER)");
    assert_null(store_open(p, TOPIC, 0, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
    assert_non_null(strstr(e.msg, p));

    snprintf(p, sizeof p, "%s/newer.db", f->dir);
    raw_exec(p, "PRAGMA user_version = 2");
    assert_null(store_open(p, TOPIC, 0, &e));
    assert_int_equal(e.cls, ERRC_FATAL);

    snprintf(p, sizeof p, "%s/garbage.db", f->dir);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    for (int i = 0; i < 256; i++)
        fputs("this is not a database ", fp);
    fclose(fp);
    assert_null(store_open(p, TOPIC, 0, &e));
    assert_int_equal(e.cls, ERRC_FATAL);

    snprintf(p, sizeof p, "%s/no/such/dir/x.db", f->dir);
    assert_null(store_open(p, TOPIC, 0, &e));
    assert_int_equal(e.cls, ERRC_FATAL);
}

static void test_wal_mode(void **state)
{
    fixture *f = *state;
    store_t *s = open_ok(f, 0);
    char mode[16];
    raw_query(f->path, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    store_close(s);
}

static void test_bulk_apply_10000(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    enum { N = 10000 };
    store_row *rows = calloc(N, sizeof *rows);
    char(*ids)[16] = calloc(N, sizeof *ids);
    assert_non_null(rows);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "conn-%05d", i);
        rows[i] = row(ids[i], 1, "{\"schema\":\"oauthq.connections.v1\"}");
        rows[i].retry_at_ms = i % 10 == 0 ? 1000 + i : 0;
    }
    store_t *s = open_ok(f, 0);
    int written = store_apply(s, rows, N, 123456, &e);
    if (written < 0)
        fail_msg("apply: %s", e.msg);
    assert_int_equal(written, N);
    assert_int_equal(store_count(s), N);
    assert_int_equal(store_applied_offset(s), 123456);
    assert_int_equal(store_next_retry(s, &e), 1000);
    collected c = {0};
    assert_int_equal(store_due(s, INT64_MAX, 16, collect, &c, &e), 16);
    assert_string_equal(c.ids[1], "conn-00010");
    store_close(s);
    free(rows);
    free(ids);
}

/* Restore mode (store_bulk): rows written while on are in the file once it
 * is off (the WAL checkpointed into the file and truncated), and survive a
 * reopen; the store stays in WAL mode. */
static void test_bulk_mode_checkpoints_when_off(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    enum { N = 3000 };
    store_row *rows = calloc(N, sizeof *rows);
    char(*ids)[16] = calloc(N, sizeof *ids);
    assert_non_null(rows);
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "conn-%05d", i);
        rows[i] = row(ids[i], 1, "{\"schema\":\"oauthq.connections.v1\"}");
    }
    store_t *s = open_ok(f, 0);
    assert_int_equal(store_bulk(s, 1, &e), 0);
    assert_int_equal(store_apply(s, rows, N / 2, 10, &e), N / 2);
    assert_int_equal(store_apply(s, rows + N / 2, N - N / 2, 20, &e), N - N / 2);
    char wal[STORE_PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > 0); /* the restore's pages wait in the WAL */
    assert_int_equal(store_bulk(s, 0, &e), 0);
    assert_int_equal(stat(wal, &st), 0);
    assert_int_equal(st.st_size, 0); /* checkpointed into the file */
    store_close(s);
    char mode[16];
    raw_query(f->path, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    s = open_ok(f, 0);
    assert_int_equal(store_count(s), N);
    assert_int_equal(store_applied_offset(s), 20);
    store_close(s);
    free(rows);
    free(ids);
}

static int reenter(const char *id, const char *record, int64_t version, void *ud)
{
    (void)record;
    (void)version;
    collected *c = ud;
    err_t e = {0};
    c->reentry_rc = store_get(c->s, id, NULL, NULL, &e);
    c->reentry_cls = e.cls;
    return 1;
}

static void test_reentrant_call_refused(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    store_row r = row("c1", 1, "{}");
    r.claimed = 1;
    assert_int_equal(store_apply(s, &r, 1, 1, &e), 1);
    collected c = {0};
    c.s = s;
    assert_int_equal(store_claimed(s, reenter, &c, &e), 1);
    assert_int_equal(c.reentry_rc, -1);
    assert_int_equal(c.reentry_cls, ERRC_PERMANENT);
    /* Usable again afterwards. */
    expect_row(s, "c1", "{}", 1);
    store_close(s);
}

static void test_locked_store_is_retriable(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    store_t *s = open_ok(f, 0);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    store_row r = row("c1", 1, "{}");
    /* Waits STORE_BUSY_TIMEOUT_MS, then gives up. */
    assert_int_equal(store_apply(s, &r, 1, 1, &e), -1);
    assert_int_equal(e.cls, ERRC_RETRIABLE);
    assert_int_equal(store_applied_offset(s), -1);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(store_apply(s, &r, 1, 1, &e), 1);
    store_close(s);
}

static void test_store_path(void **state)
{
    fixture *f = *state;
    err_t e = {0};
    char out[STORE_PATH_MAX], dir[256], want[STORE_PATH_MAX];

    snprintf(dir, sizeof dir, "%s/a/b/c/", f->dir);
    assert_int_equal(store_path(dir, TOPIC, 7, out, sizeof out, &e), 0);
    snprintf(want, sizeof want, "%s/a/b/c/worker-oauthq.connections-7.db", f->dir);
    assert_string_equal(out, want);
    struct stat st;
    snprintf(dir, sizeof dir, "%s/a/b/c", f->dir);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* Existing directory is fine; odd topic characters are replaced. */
    assert_int_equal(store_path(dir, "we ird/t\xc3\xa9:x", 0, out, sizeof out, &e), 0);
    snprintf(want, sizeof want, "%s/worker-we_ird_t___x-0.db", dir);
    assert_string_equal(out, want);

    /* The path works with store_open. */
    store_t *s = store_open(out, "we ird/t\xc3\xa9:x", 0, &e);
    assert_non_null(s);
    store_close(s);

    char small[16];
    assert_int_equal(store_path(dir, TOPIC, 0, small, sizeof small, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);
    assert_int_equal(store_path(dir, TOPIC, -1, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_PERMANENT);

    /* A file where the directory should be. */
    char file[256];
    snprintf(file, sizeof file, "%s/plainfile", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(store_path(file, TOPIC, 0, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
    snprintf(dir, sizeof dir, "%s/plainfile/sub", f->dir);
    assert_int_equal(store_path(dir, TOPIC, 0, out, sizeof out, &e), -1);
    assert_int_equal(e.cls, ERRC_FATAL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_open_close_reopen_keeps_rows_and_offset),
        T(test_versions_only_move_forward),
        T(test_apply_is_atomic_with_offset),
        T(test_delete),
        T(test_due_ordering_and_limit),
        T(test_claimed_listing),
        T(test_next_retry),
        T(test_wrong_topic_or_partition_is_fatal),
        T(test_migration_from_empty_file),
        T(test_refuses_foreign_newer_and_corrupt_files),
        T(test_wal_mode),
        T(test_bulk_apply_10000),
        T(test_bulk_mode_checkpoints_when_off),
        T(test_reentrant_call_refused),
        T(test_locked_store_is_retriable),
        T(test_store_path),
    };
#undef T
    return cmocka_run_group_tests_name("unit_store", tests, NULL, NULL);
}
