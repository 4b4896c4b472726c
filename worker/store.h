/*
 * store — the worker's state store: one SQLite file per assigned partition,
 * a local cache of the compacted `connections` changelog topic (SPEC §2, §6).
 *
 * The store may lag Kafka, never lead it: the worker writes rows only after
 * the Kafka transaction that produced them committed, together with the
 * changelog offset they correspond to (store_apply/store_delete do both in
 * one SQLite transaction). On assignment the worker reads the changelog from
 * store_applied_offset() + 1 to the end and applies each record. The store
 * does not interpret connection state: per connection id it keeps the
 * record's JSON text plus the few indexed columns the worker queries. The
 * schema is schemas/worker-store.sql, embedded by the build.
 *
 * Ownership: store_open returns a handle owned by the caller and released by
 * store_close. Strings passed in are only read during the call. store_get
 * returns a malloc'd record the caller frees (records hold encrypted
 * secrets: wipe before freeing if that matters to the caller).
 *
 * Threads: a store_t is used by one thread at a time (the connection is
 * opened without SQLite's own mutex); different handles may be used from
 * different threads. Iteration callbacks must not call store_* on the same
 * handle (such calls fail with ERRC_PERMANENT): collect, then act.
 *
 * Errors (err_t): SQLITE_BUSY/LOCKED/IOERR/FULL → ERRC_RETRIABLE; corrupt
 * file, schema mismatch, file of another topic/partition, out of memory →
 * ERRC_FATAL; misuse (bad arguments, NOT NULL violation, offset moving
 * backwards) → ERRC_PERMANENT. Messages name the operation and the file,
 * never record contents.
 */
#ifndef OAUTHQ_WORKER_STORE_H
#define OAUTHQ_WORKER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define STORE_PATH_MAX        1024 /* longest store file path, NUL included */
#define STORE_TOPIC_MAX       249  /* Kafka's limit on topic names */
#define STORE_BUSY_TIMEOUT_MS 5000 /* wait for another connection's lock */

typedef struct store store_t;

typedef struct {
    const char *id;       /* connection id (key) */
    int64_t version;      /* monotonic per connection */
    const char *status;   /* pending|connected|failed|expired|disconnected */
    const char *phase;    /* NULL or awaiting_callback|queued|exchanging|retrying */
    const char *provider; /* provider name */
    int64_t retry_at_ms;  /* 0 = no retry scheduled */
    int claimed;          /* 1 while an exchange claim is open (phase exchanging) */
    const char *record;   /* the full connections.v1 JSON text */
    int64_t updated_at_ms;
} store_row;

/* Open (create) the store of topic/partition at path (WAL, synchronous=NORMAL, busy timeout),
 * migrate it; a file of another topic/partition → NULL with ERRC_FATAL. */
store_t *store_open(const char *path, const char *topic, int32_t partition, err_t *e);

/* Close the handle and free it; NULL is a no-op. */
void store_close(store_t *s);

/* Last applied changelog offset, -1 when none (cached: no I/O, cannot fail). */
int64_t store_applied_offset(const store_t *s);

/* Upsert rows (a row whose version <= the stored one is skipped) and set the applied offset
 * (>= the current one) in one transaction; returns rows written, or -1 with nothing changed. */
int store_apply(store_t *s, const store_row *rows, size_t n, int64_t applied_offset, err_t *e);

/* Bulk mode for a restore from the changelog (on = 1): synchronous=OFF, a larger WAL before
 * its checkpoint, an 8 MiB page cache; off (0) restores the defaults and checkpoints (fsyncs)
 * the WAL into the file, so what the restore wrote is durable from then on. */
int store_bulk(store_t *s, int on, err_t *e);

/* Delete ids (tombstones) and set the applied offset in one transaction; returns rows deleted
 * (absent ids count 0), or -1 with nothing changed. */
int store_delete(store_t *s, const char *const *ids, size_t n, int64_t applied_offset, err_t *e);

/* Load one connection: *record (malloc'd, caller frees; record may be NULL to only test) and
 * *version (may be NULL); returns 1 found, 0 absent, -1 error. */
int store_get(store_t *s, const char *id, char **record, int64_t *version, err_t *e);

/* Iteration callback: return non-zero to stop; id and record are valid only during the call. */
typedef int (*store_row_fn)(const char *id, const char *record, int64_t version, void *ud);

/* Call fn for rows with 0 < retry_at_ms <= now_ms, by retry_at_ms then id, at most limit (> 0);
 * returns the number of calls made, -1 on error. */
int store_due(store_t *s, int64_t now_ms, int limit, store_row_fn fn, void *ud, err_t *e);

/* store_due restricted to one provider's rows (the worker serves each
 * provider's due work up to its free in-flight slots). */
int store_due_provider(store_t *s, const char *provider, int64_t now_ms, int limit, store_row_fn fn,
                       void *ud, err_t *e);

/* Call fn for rows with claimed = 1 (open claims found at takeover), by id; returns the number
 * of calls made, -1 on error. */
int store_claimed(store_t *s, store_row_fn fn, void *ud, err_t *e);

/* Earliest retry_at_ms > 0, 0 when none, -1 on error. */
int64_t store_next_retry(store_t *s, err_t *e);

/* Number of rows (tests, metrics); -1 on error (logged). */
int64_t store_count(store_t *s);

/* Write <dir>/worker-<topic>-<partition>.db into out (topic characters outside [A-Za-z0-9._-]
 * become '_') and create dir (mkdir -p, mode 0700 for new directories). */
int store_path(const char *dir, const char *topic, int32_t partition, char *out, size_t cap,
               err_t *e);

#endif
