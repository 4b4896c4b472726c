/* dispatcher — see dispatcher.h. */
#include "webhooks/dispatcher.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/httpd.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/delivery.h"
#include "webhooks/sign.h"

#define MAX_PARTS      256
#define TXN_TIMEOUT_MS 30000
#define POLL_BATCH     500
#define GONE_LOG_MS    60000

/* One connection's live state. Heap-allocated so transfers may point at
 * it; all of them are dropped when the partitions are revoked. */
typedef struct {
    delivery_conn d;
    int32_t partition;
    int dirty;    /* changed since the last committed transaction */
    int inflight; /* its head is handed to curl */
    int replay;   /* replay asked while in flight: applied on completion */
    int gone;     /* mirror of delivery_gone(&d), for the dispatcher's count */
    int active;   /* listed in act[] */
} entry_t;

typedef struct {
    CURL *h;
    entry_t *en;
    int64_t version;
    char *body;
    struct curl_slist *headers;
} transfer_t;

struct dispatcher {
    config_t cfg;
    sign_keys_t keys;
    delivery_policy pol;
    rd_kafka_t *consumer, *producer, *restorer, *hwm;
    char t_status[256], t_webhooks[256], group_id[160], txn_id[160], instance_id[64];
    int nparts;
    int assigned[MAX_PARTS];
    int64_t next_status[MAX_PARTS], next_webhooks[MAX_PARTS];
    rd_kafka_topic_partition_list_t *assign_pending;
    int revoke_pending;
    int64_t revoke_deadline_mono; /* in-flight deliveries may finish until then */
    int closing;
    int offsets_dirty;
    int64_t last_commit_mono, gone_logged_mono, gauges_mono;
    uint64_t rnd;
    /* connections: open addressing on the id (never deleted while assigned) */
    entry_t **tab;
    size_t tab_cap, tab_n;
    entry_t **act; /* entries with queued events or in flight */
    size_t act_n, act_cap;
    entry_t **dirty; /* entries changed since the last commit (en->dirty set) */
    size_t dirty_n, dirty_cap;
    int ngone;
    CURLM *multi;
    int inflight;
    transfer_t **xfers; /* the transfers in flight, webhook_concurrency slots */
    int nxfers;
    atomic_int ready, fatal;
    metrics_t *metrics;
    httpd_t *http;
    metric_counter *m_delivered, *m_failed, *m_gone, *m_att_2xx, *m_att_410, *m_att_http,
        *m_att_none, *m_txn, *m_skipped, *m_replays;
    metric_gauge *m_oldest, *m_pending, *m_gone_g, *m_inflight;
};

/* Clocks: delivery times (enqueued, next attempt, the signature's timestamp)
 * are written to the webhooks changelog, survive a restart or a move to
 * another instance, and the signature's reaches the receiver, so they are
 * clock_wall_ms; commit intervals, drain deadlines and log throttling stay
 * inside this process: clock_mono_ms. */

/* xorshift64*: jitter only (not a secret), seeded from crypto_random. */
static uint32_t next_rand(dispatcher_t *d)
{
    uint64_t x = d->rnd;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    d->rnd = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

int dispatcher_url_check(const char *url, err_t *e)
{
    size_t skip = strncmp(url, "https://", 8) == 0 ? 8 : strncmp(url, "http://", 7) == 0 ? 7 : 0;
    if (!skip)
        return err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL: must start with http:// or https://");
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL: whitespace or control character");
    const char *host = url + skip;
    size_t hl = strcspn(host, "/?#");
    if (hl == 0 || host[0] == ':')
        return err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL: no host");
    if (memchr(host, '@', hl))
        return err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL: user info is not allowed");
    CURLU *u = curl_url();
    int bad = !u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK;
    curl_url_cleanup(u);
    if (bad)
        return err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL: not a valid URL");
    return 0;
}

/* ---- the connection table ------------------------------------------------------ */

static size_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)h;
}

static entry_t *lookup(dispatcher_t *d, const char *id)
{
    if (!d->tab_cap)
        return NULL;
    for (size_t i = hash_id(id) & (d->tab_cap - 1), n = 0; n < d->tab_cap;
         i = (i + 1) & (d->tab_cap - 1), n++) {
        if (!d->tab[i])
            return NULL;
        if (strcmp(d->tab[i]->d.id, id) == 0)
            return d->tab[i];
    }
    return NULL;
}

static int tab_put(dispatcher_t *d, entry_t *en)
{
    if ((d->tab_n + 1) * 2 > d->tab_cap) {
        size_t nc = d->tab_cap ? d->tab_cap * 2 : 1024;
        entry_t **nt = calloc(nc, sizeof *nt);
        if (!nt)
            return -1;
        for (size_t i = 0; i < d->tab_cap; i++) {
            if (!d->tab[i])
                continue;
            size_t j = hash_id(d->tab[i]->d.id) & (nc - 1);
            while (nt[j])
                j = (j + 1) & (nc - 1);
            nt[j] = d->tab[i];
        }
        free(d->tab);
        d->tab = nt;
        d->tab_cap = nc;
    }
    size_t j = hash_id(en->d.id) & (d->tab_cap - 1);
    while (d->tab[j])
        j = (j + 1) & (d->tab_cap - 1);
    d->tab[j] = en;
    d->tab_n++;
    return 0;
}

/* The entry of id, created empty in partition p when absent. */
static entry_t *entry_get(dispatcher_t *d, const char *id, int32_t p, err_t *e)
{
    entry_t *en = lookup(d, id);
    if (en)
        return en;
    en = calloc(1, sizeof *en);
    if (en)
        delivery_conn_init(&en->d, id); /* before tab_put: it hashes the id */
    if (!en || tab_put(d, en) < 0) {
        free(en);
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    en->partition = p;
    return en;
}

/* Note that en's state must go into the next transaction. */
static int mark_dirty(dispatcher_t *d, entry_t *en, err_t *e)
{
    if (en->dirty)
        return 0;
    if (d->dirty_n == d->dirty_cap) {
        size_t nc = d->dirty_cap ? d->dirty_cap * 2 : 256;
        entry_t **nd = realloc(d->dirty, nc * sizeof *nd);
        if (!nd)
            return err_set(e, ERRC_FATAL, "out of memory");
        d->dirty = nd;
        d->dirty_cap = nc;
    }
    d->dirty[d->dirty_n++] = en;
    en->dirty = 1;
    return 0;
}

/* Keep ngone and the active list in step with the entry's state. */
static int entry_touch(dispatcher_t *d, entry_t *en, err_t *e)
{
    int g = delivery_gone(&en->d);
    if (g != en->gone) {
        d->ngone += g ? 1 : -1;
        en->gone = g;
    }
    if (en->d.nev > 0 && !en->active) {
        if (d->act_n == d->act_cap) {
            size_t nc = d->act_cap ? d->act_cap * 2 : 256;
            entry_t **na = realloc(d->act, nc * sizeof *na);
            if (!na)
                return err_set(e, ERRC_FATAL, "out of memory");
            d->act = na;
            d->act_cap = nc;
        }
        d->act[d->act_n++] = en;
        en->active = 1;
    }
    return 0;
}

static void drop_all(dispatcher_t *d)
{
    for (size_t i = 0; i < d->tab_cap; i++)
        if (d->tab[i]) {
            delivery_conn_clear(&d->tab[i]->d);
            free(d->tab[i]);
        }
    free(d->tab);
    d->tab = NULL;
    d->tab_cap = d->tab_n = 0;
    d->act_n = 0;
    d->dirty_n = 0;
    d->ngone = 0;
}

/* ---- deliveries -------------------------------------------------------------------- */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n; /* response bodies are never read, kept or logged */
}

static void transfer_free(dispatcher_t *d, transfer_t *t)
{
    for (int i = 0; i < d->nxfers; i++)
        if (d->xfers[i] == t) {
            d->xfers[i] = d->xfers[--d->nxfers];
            break;
        }
    if (t->h) {
        curl_multi_remove_handle(d->multi, t->h);
        curl_easy_cleanup(t->h);
    }
    curl_slist_free_all(t->headers);
    free(t->body);
    free(t);
}

/* Hand the head event of en to curl. */
static int start_delivery(dispatcher_t *d, entry_t *en, const delivery_event *ev)
{
    transfer_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->en = en;
    t->version = ev->version;
    t->body = strdup(ev->body);
    t->h = curl_easy_init();
    char wid[DELIVERY_WID_MAX], sig[SIGN_HEADER_MAX];
    int64_t ts = clock_wall_ms() / 1000;
    delivery_webhook_id(en->d.id, ev->version, wid);
    if (!t->body || !t->h || sign_header(&d->keys, wid, ts, t->body, strlen(t->body), sig) < 0) {
        transfer_free(d, t);
        return -1;
    }
    char h_id[DELIVERY_WID_MAX + 16], h_ts[48], h_sig[SIGN_HEADER_MAX + 24];
    snprintf(h_id, sizeof h_id, "webhook-id: %s", wid);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    const char *hs[] = {"Content-Type: application/json",
                        "User-Agent: oauthq-webhooks/1",
                        "Expect:",
                        h_id,
                        h_ts,
                        h_sig};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        struct curl_slist *n = curl_slist_append(t->headers, hs[i]);
        if (!n) {
            transfer_free(d, t);
            return -1;
        }
        t->headers = n;
    }
    crypto_wipe(sig, sizeof sig);
    crypto_wipe(h_sig, sizeof h_sig);
    long timeout = d->cfg.webhook_timeout_ms;
    CURL *h = t->h;
    curl_easy_setopt(h, CURLOPT_URL, d->cfg.webhook_url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, t->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(t->body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout < 5000 ? timeout : 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(d->multi, h) != CURLM_OK) {
        transfer_free(d, t);
        return -1;
    }
    d->xfers[d->nxfers++] = t;
    en->inflight = 1;
    d->inflight++;
    return 0;
}

static void log_event(log_level l, const char *event, const entry_t *en, int64_t version,
                      int attempts, int http, const char *error)
{
    char wid[DELIVERY_WID_MAX], att[16], st[16];
    delivery_webhook_id(en->d.id, version, wid);
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(st, sizeof st, "%d", http);
    log_kv(l, event, "connection_id", en->d.id, "webhook_id", wid, "attempts", att, "http_status",
           st, "error", error && error[0] ? error : "-");
}

static int apply_replay(dispatcher_t *d, entry_t *en, err_t *e)
{
    if (en->inflight) {
        en->replay = 1;
        return 0;
    }
    en->replay = 0;
    int n = delivery_replay(&en->d, clock_wall_ms());
    if (n > 0) {
        if (mark_dirty(d, en, e) < 0)
            return -1;
        metrics_counter_add(d->m_replays, (uint64_t)n);
        char nn[16];
        snprintf(nn, sizeof nn, "%d", n);
        log_kv(LOGL_INFO, "webhook_replayed", "connection_id", en->d.id, "events", nn);
    }
    return entry_touch(d, en, e);
}

/* A finished transfer: apply its outcome to the connection's state. */
static int finish_delivery(dispatcher_t *d, CURL *h, CURLcode code, err_t *e)
{
    transfer_t *t = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&t);
    entry_t *en = t->en;
    long http = 0;
    const char *error = "";
    if (code == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    else
        error = curl_easy_strerror(code); /* libcurl's fixed text: no response data */
    int64_t version = t->version;
    transfer_free(d, t);
    en->inflight = 0;
    d->inflight--;
    if (en->d.nev == 0 || en->d.ev[0].version != version) {
        /* The event left the queue while in flight (queue overflow). */
        if (entry_touch(d, en, e) < 0)
            return -1;
        return en->replay ? apply_replay(d, en, e) : 0;
    }
    char hbuf[16];
    if (code == CURLE_OK && (http < 200 || http >= 300) && http != 410) {
        snprintf(hbuf, sizeof hbuf, "http %ld", http);
        error = hbuf;
    }
    metrics_counter_add(http >= 200 && http < 300 ? d->m_att_2xx
                        : http == 410             ? d->m_att_410
                        : http > 0                ? d->m_att_http
                                                  : d->m_att_none,
                        1);
    int attempts = en->d.ev[0].attempts + 1;
    delivery_outcome o =
        delivery_result(&en->d, (int)http, error, clock_wall_ms(), &d->pol, next_rand(d));
    if (mark_dirty(d, en, e) < 0)
        return -1;
    switch (o) {
    case DELIVERY_DELIVERED:
        metrics_counter_add(d->m_delivered, 1);
        log_event(LOGL_INFO, "webhook_delivered", en, version, attempts, (int)http, NULL);
        break;
    case DELIVERY_RETRY:
        log_event(LOGL_WARN, "webhook_retry_scheduled", en, version, attempts, (int)http, error);
        break;
    case DELIVERY_FAILED:
        metrics_counter_add(d->m_failed, 1);
        log_event(LOGL_ERROR, "webhook_failed", en, version, attempts, (int)http, error);
        break;
    case DELIVERY_GONE:
        metrics_counter_add(d->m_gone, 1);
        log_event(LOGL_ERROR, "webhook_endpoint_gone", en, version, attempts, (int)http,
                  "410 Gone: every delivery stops until `oauthqctl webhooks replay`");
        d->gone_logged_mono = clock_mono_ms();
        break;
    }
    if (entry_touch(d, en, e) < 0)
        return -1;
    return en->replay ? apply_replay(d, en, e) : 0;
}

static int drive_curl(dispatcher_t *d, int wait_ms, err_t *e)
{
    int running = 0;
    curl_multi_perform(d->multi, &running);
    if (wait_ms > 0 && d->inflight > 0) {
        curl_multi_poll(d->multi, NULL, 0, wait_ms, NULL);
        curl_multi_perform(d->multi, &running);
    }
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read(d->multi, &left)))
        if (msg->msg == CURLMSG_DONE &&
            finish_delivery(d, msg->easy_handle, msg->data.result, e) < 0)
            return -1;
    return 0;
}

/* Start the due head events, as far as slots are free; not while the
 * endpoint is gone. Also compacts the active list. */
static void start_due(dispatcher_t *d)
{
    int64_t now = clock_wall_ms();
    size_t k = 0;
    for (size_t i = 0; i < d->act_n; i++) {
        entry_t *en = d->act[i];
        if (en->d.nev == 0 && !en->inflight) {
            en->active = 0;
            continue;
        }
        d->act[k++] = en;
        if (d->ngone > 0 || en->inflight || d->inflight >= d->cfg.webhook_concurrency)
            continue;
        const delivery_event *ev = delivery_due(&en->d, now);
        if (ev && start_delivery(d, en, ev) < 0)
            log_kv(LOGL_WARN, "webhook_start_failed", "connection_id", en->d.id, "reason",
                   "out of memory");
    }
    d->act_n = k;
}

/* Drop every transfer in flight (revocation): their outcome is unknown,
 * the state still says pending, so the next owner sends them again with
 * the same webhook-id. */
static void abort_transfers(dispatcher_t *d)
{
    while (d->nxfers > 0) {
        transfer_t *t = d->xfers[d->nxfers - 1];
        t->en->inflight = 0;
        d->inflight--;
        transfer_free(d, t);
    }
}

/* ---- records ----------------------------------------------------------------------- */

static void key_of(const rd_kafka_message_t *m, char *out, size_t cap)
{
    size_t n = m->key ? (m->key_len < cap - 1 ? m->key_len : cap - 1) : 0;
    memcpy(out, m->key ? (const char *)m->key : "", n);
    out[n] = '\0';
}

/* A status record: a final status becomes a queued event. */
static int on_status(dispatcher_t *d, const rd_kafka_message_t *m, err_t *e)
{
    if (!m->payload)
        return 0; /* tombstone */
    char id[DELIVERY_ID_MAX], type[DELIVERY_TYPE_MAX];
    int64_t version = 0;
    char *body = NULL;
    err_t pe = {0};
    int r = delivery_event_from_status(m->payload, m->len, id, &version, type, &body, &pe);
    if (r < 0 && pe.cls == ERRC_FATAL) {
        *e = pe; /* out of memory: never skip a record for it (the offset would move on) */
        return -1;
    }
    if (r < 0) {
        char key[DELIVERY_ID_MAX], off[24];
        key_of(m, key, sizeof key);
        snprintf(off, sizeof off, "%lld", (long long)m->offset);
        metrics_counter_add(d->m_skipped, 1);
        log_kv(LOGL_WARN, "status_record_skipped", "connection_id", key, "offset", off, "reason",
               pe.msg);
        return 0;
    }
    if (r == 0)
        return 0;
    entry_t *en = entry_get(d, id, m->partition, e);
    if (!en) {
        free(body);
        return -1;
    }
    if (delivery_enqueue(&en->d, version, type, body, clock_wall_ms()) == 1) {
        if (mark_dirty(d, en, e) < 0)
            return -1;
        char v[24];
        snprintf(v, sizeof v, "%lld", (long long)version);
        log_kv(LOGL_INFO, "webhook_queued", "connection_id", id, "type", type, "version", v);
    }
    return entry_touch(d, en, e);
}

/* A webhooks record: replay requests act, our own states are skipped. */
static int on_webhooks(dispatcher_t *d, const rd_kafka_message_t *m, err_t *e)
{
    char key[DELIVERY_ID_MAX + 16];
    key_of(m, key, sizeof key);
    if (!m->payload || strncmp(key, DELIVERY_REPLAY_KEY, strlen(DELIVERY_REPLAY_KEY)) != 0)
        return 0;
    char id[DELIVERY_ID_MAX];
    err_t pe = {0};
    if (delivery_replay_decode(m->payload, m->len, id, &pe) < 0) {
        log_kv(LOGL_WARN, "replay_request_skipped", "key", key, "reason", pe.msg);
        return 0;
    }
    if (strcmp(id, "*") == 0) {
        for (size_t i = 0; i < d->tab_cap; i++)
            if (d->tab[i] && d->tab[i]->partition == m->partition &&
                apply_replay(d, d->tab[i], e) < 0)
                return -1;
        return 0;
    }
    /* Requests go to every partition: only the partition holding the
     * connection acts on it. */
    entry_t *en = lookup(d, id);
    if (!en || en->partition != m->partition)
        return 0;
    return apply_replay(d, en, e);
}

/* ---- transactions ------------------------------------------------------------------ */

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    dispatcher_t *d = opaque;
    if (m->err) {
        log_kv(LOGL_ERROR, "webhook_state_not_delivered", "reason", rd_kafka_err2str(m->err));
        atomic_store(&d->fatal, 1); /* the transaction cannot commit */
    }
}

/* The transactional API's error, mapped: retry (1), or fatal (everything
 * else: the process ends and the restart restores the committed state). */
static int txn_retry(rd_kafka_error_t *err)
{
    return rd_kafka_error_is_retriable(err) && !rd_kafka_error_txn_requires_abort(err) &&
           !rd_kafka_error_is_fatal(err);
}

static int txn_fail(dispatcher_t *d, const char *what, rd_kafka_error_t *err, err_t *e)
{
    err_set(e, ERRC_FATAL, "%s: %s", what, rd_kafka_error_string(err));
    if (rd_kafka_error_txn_requires_abort(err)) {
        rd_kafka_error_t *a = rd_kafka_abort_transaction(d->producer, TXN_TIMEOUT_MS);
        if (a)
            rd_kafka_error_destroy(a);
    }
    rd_kafka_error_destroy(err);
    return -1;
}

/* One transaction: every changed state record and both topics' offsets. */
static int commit(dispatcher_t *d, err_t *e)
{
    d->last_commit_mono = clock_mono_ms();
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(2 * d->nparts);
    for (int p = 0; p < d->nparts; p++)
        if (d->assigned[p]) {
            rd_kafka_topic_partition_list_add(offs, d->t_status, p)->offset = d->next_status[p];
            rd_kafka_topic_partition_list_add(offs, d->t_webhooks, p)->offset = d->next_webhooks[p];
        }
    rd_kafka_error_t *err = rd_kafka_begin_transaction(d->producer);
    if (err) {
        rd_kafka_topic_partition_list_destroy(offs);
        return txn_fail(d, "begin_transaction", err, e);
    }
    for (size_t i = 0; i < d->dirty_n; i++) {
        entry_t *en = d->dirty[i];
        char *rec = delivery_encode(&en->d, e);
        if (!rec) {
            rd_kafka_topic_partition_list_destroy(offs);
            return -1;
        }
        rd_kafka_resp_err_t perr;
        for (int tries = 0;; tries++) {
            perr = rd_kafka_producev(
                d->producer, RD_KAFKA_V_TOPIC(d->t_webhooks), RD_KAFKA_V_PARTITION(en->partition),
                RD_KAFKA_V_KEY(en->d.id, strlen(en->d.id)), RD_KAFKA_V_VALUE(rec, strlen(rec)),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (perr != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries > 100)
                break;
            rd_kafka_poll(d->producer, 10);
        }
        free(rec);
        if (perr) {
            rd_kafka_topic_partition_list_destroy(offs);
            err_set(e, ERRC_FATAL, "producing a webhook state: %s", rd_kafka_err2str(perr));
            rd_kafka_error_t *a = rd_kafka_abort_transaction(d->producer, TXN_TIMEOUT_MS);
            if (a)
                rd_kafka_error_destroy(a);
            return -1;
        }
    }
    if (offs->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *cgm = rd_kafka_consumer_group_metadata(d->consumer);
        for (int tries = 0; tries < 10; tries++) {
            err = rd_kafka_send_offsets_to_transaction(d->producer, offs, cgm, TXN_TIMEOUT_MS);
            if (!err || !txn_retry(err))
                break;
            rd_kafka_error_destroy(err);
            err = NULL;
        }
        rd_kafka_consumer_group_metadata_destroy(cgm);
    }
    rd_kafka_topic_partition_list_destroy(offs);
    if (err)
        return txn_fail(d, "send_offsets_to_transaction", err, e);
    for (int tries = 0; tries < 10; tries++) {
        err = rd_kafka_commit_transaction(d->producer, TXN_TIMEOUT_MS);
        if (!err || !txn_retry(err))
            break;
        rd_kafka_error_destroy(err);
        err = NULL;
    }
    if (err)
        return txn_fail(d, "commit_transaction", err, e);
    if (atomic_load(&d->fatal))
        return err_set(e, ERRC_FATAL, "a webhook state record was not delivered");
    for (size_t i = 0; i < d->dirty_n; i++)
        d->dirty[i]->dirty = 0;
    d->dirty_n = 0;
    d->offsets_dirty = 0;
    metrics_counter_add(d->m_txn, 1);
    return 0;
}

/* ---- partitions -------------------------------------------------------------------- */

/* Read webhooks[p] read_committed from its start up to the high watermark
 * taken now, and load every state record into the table. */
static int restore_partition(dispatcher_t *d, int32_t p, err_t *e)
{
    int64_t lo = 0, hw = 0;
    if (kafka_watermarks(d->hwm, d->t_webhooks, p, &lo, &hw, d->cfg.kafka_timeout_ms, e) < 0)
        return -1;
    long loaded = 0, unreadable = 0;
    int64_t t0 = clock_mono_ms();
    if (lo < hw) {
        rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(tp, d->t_webhooks, p)->offset = lo;
        rd_kafka_assign(d->restorer, tp);
        rd_kafka_topic_partition_list_destroy(tp);
        int64_t pos = lo;
        int64_t deadline = clock_mono_ms() + KAFKA_TRANSACTION_TIMEOUT_MS + d->cfg.kafka_timeout_ms;
        int rc = 0;
        while (rc == 0 && pos < hw && clock_mono_ms() < deadline) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(d->restorer, 100);
            if (!m) {
                rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(q, d->t_webhooks, p);
                if (rd_kafka_position(d->restorer, q) == 0 && q->elems[0].offset > pos)
                    pos = q->elems[0].offset;
                rd_kafka_topic_partition_list_destroy(q);
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (m->offset > pos)
                    pos = m->offset;
            } else if (m->err) {
                log_kv(LOGL_WARN, "restore_consumer_error", "reason", rd_kafka_message_errstr(m));
            } else {
                pos = m->offset + 1;
                char key[DELIVERY_ID_MAX + 16];
                key_of(m, key, sizeof key);
                if (m->payload &&
                    strncmp(key, DELIVERY_REPLAY_KEY, strlen(DELIVERY_REPLAY_KEY)) != 0) {
                    delivery_conn c;
                    err_t de = {0};
                    if (delivery_decode(m->payload, m->len, &c, &de) < 0) {
                        unreadable++;
                        log_kv(LOGL_ERROR, "webhook_state_unreadable", "key", key, "reason",
                               de.msg);
                    } else {
                        entry_t *en = entry_get(d, c.id, p, e);
                        if (!en) {
                            delivery_conn_clear(&c);
                            rc = -1;
                        } else {
                            delivery_conn_clear(&en->d);
                            en->d = c; /* later records of a key replace earlier ones */
                            en->partition = p;
                            loaded++;
                        }
                    }
                }
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(d->restorer, NULL);
        if (rc < 0)
            return -1;
        if (pos < hw)
            return err_set(e, ERRC_FATAL,
                           "restoring %s[%d]: position %lld never reached the high watermark %lld",
                           d->t_webhooks, p, (long long)pos, (long long)hw);
    }
    char part[16], n[24], bad[24], ms[24];
    snprintf(part, sizeof part, "%d", p);
    snprintf(n, sizeof n, "%ld", loaded);
    snprintf(bad, sizeof bad, "%ld", unreadable);
    snprintf(ms, sizeof ms, "%lld", (long long)(clock_mono_ms() - t0));
    log_kv(LOGL_INFO, "webhooks_partition_restored", "partition", part, "records", n, "unreadable",
           bad, "ms", ms);
    return 0;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    dispatcher_t *d = opaque;
    atomic_store(&d->ready, 0);
    if (d->closing) {
        rd_kafka_assign(rk, NULL);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (d->assign_pending)
            rd_kafka_topic_partition_list_destroy(d->assign_pending);
        d->assign_pending = rd_kafka_topic_partition_list_copy(parts);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        d->revoke_pending = 1;
        d->revoke_deadline_mono = clock_mono_ms() + d->cfg.webhook_timeout_ms + 1000;
        rd_kafka_pause_partitions(rk, parts);
        return;
    }
    rd_kafka_assign(rk, NULL);
}

/* Give every partition up. Deliveries in flight may finish first (bounded
 * by their timeout; none starts meanwhile), so their 2xx commit with the
 * last transaction instead of being sent again by the next owner; what is
 * still running then is dropped (unknown outcome: the next owner sends it,
 * same webhook-id). A lost assignment commits nothing: it cannot any more.
 * Returns 0 with revoke_pending still set while it waits. */
static int serve_revoke(dispatcher_t *d, err_t *e)
{
    int lost = rd_kafka_assignment_lost(d->consumer);
    if (!lost && d->inflight > 0 && clock_mono_ms() < d->revoke_deadline_mono)
        return 0;
    abort_transfers(d);
    log_kv(LOGL_INFO, "partitions_revoked", "lost", lost ? "yes" : "no");
    if (!lost && commit(d, e) < 0)
        return -1;
    drop_all(d);
    memset(d->assigned, 0, sizeof d->assigned);
    rd_kafka_assign(d->consumer, NULL);
    d->revoke_pending = 0;
    return 0;
}

static int serve_assign(dispatcher_t *d, err_t *e)
{
    rd_kafka_topic_partition_list_t *parts = d->assign_pending;
    d->assign_pending = NULL;
    int rc = 0;
    int has_status[MAX_PARTS] = {0}, has_webhooks[MAX_PARTS] = {0};
    for (int i = 0; i < parts->cnt && rc == 0; i++) {
        int32_t p = parts->elems[i].partition;
        if (kafka_check_assigned(parts->elems[i].topic, p, d->nparts, e) < 0)
            rc = -1;
        else if (strcmp(parts->elems[i].topic, d->t_status) == 0)
            has_status[p] = 1;
        else
            has_webhooks[p] = 1;
    }
    for (int p = 0; p < d->nparts && rc == 0; p++)
        if (has_status[p] != has_webhooks[p])
            rc = err_set(e, ERRC_FATAL,
                         "partition %d of %s and %s not assigned together (co-partitioning)", p,
                         d->t_status, d->t_webhooks);
    for (int p = 0; p < d->nparts && rc == 0; p++)
        if (has_webhooks[p] && restore_partition(d, p, e) < 0)
            rc = -1;
    if (rc == 0) {
        rd_kafka_resp_err_t cerr = rd_kafka_committed(
            d->consumer, parts, KAFKA_TRANSACTION_TIMEOUT_MS + d->cfg.kafka_timeout_ms);
        if (cerr)
            rc = err_set(e, ERRC_FATAL, "committed offsets: %s", rd_kafka_err2str(cerr));
    }
    for (int i = 0; i < parts->cnt && rc == 0; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t off = tp->offset, lo = 0, hi = 0;
        if (off < 0) {
            if (kafka_watermarks(d->hwm, tp->topic, tp->partition, &lo, &hi,
                                 d->cfg.kafka_timeout_ms, e) < 0) {
                rc = -1;
                break;
            }
            off = lo;
            tp->offset = lo;
        }
        if (strcmp(tp->topic, d->t_status) == 0)
            d->next_status[tp->partition] = off;
        else
            d->next_webhooks[tp->partition] = off;
        d->assigned[tp->partition] = 1;
    }
    for (size_t i = 0; rc == 0 && i < d->tab_cap; i++)
        if (d->tab[i] && entry_touch(d, d->tab[i], e) < 0)
            rc = -1;
    if (rc == 0) {
        rd_kafka_resp_err_t aerr = rd_kafka_assign(d->consumer, parts);
        if (aerr || (aerr = rd_kafka_resume_partitions(d->consumer, parts)) != 0)
            rc = err_set(e, ERRC_FATAL, "assign: %s", rd_kafka_err2str(aerr));
    }
    if (rc == 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", parts->cnt);
        log_kv(LOGL_INFO, "partitions_assigned", "count", n);
        atomic_store(&d->ready, 1);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/* ---- observability ------------------------------------------------------------------- */

static void update_gauges(dispatcher_t *d)
{
    int64_t now = clock_wall_ms(), oldest = 0, pending = 0;
    for (size_t i = 0; i < d->act_n; i++) {
        const entry_t *en = d->act[i];
        int64_t o = delivery_oldest_ms(&en->d);
        pending += en->d.nev;
        if (o && (!oldest || o < oldest))
            oldest = o;
    }
    metrics_gauge_set(d->m_oldest, oldest ? (now - oldest) / 1000 : 0);
    metrics_gauge_set(d->m_pending, pending);
    metrics_gauge_set(d->m_gone_g, d->ngone > 0);
    metrics_gauge_set(d->m_inflight, d->inflight);
    if (d->ngone > 0 && clock_mono_ms() - d->gone_logged_mono >= GONE_LOG_MS) {
        d->gone_logged_mono = clock_mono_ms();
        char n[16];
        snprintf(n, sizeof n, "%d", d->ngone);
        log_kv(
            LOGL_ERROR, "webhook_endpoint_gone", "connections_held", n, "action",
            "deliveries stopped; run `oauthqctl webhooks replay --all` once the endpoint is back");
    }
}

/* Runs on the listener's threads: touches only atomics and metrics. */
static void handle_http(void *app, httpd_req *r)
{
    dispatcher_t *d = app;
    const char *path = httpd_path(r);
    if (strcmp(path, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (metrics_render(d->metrics, &text, &len, NULL) < 0)
            return httpd_respond(r, 500, "text/plain", "metrics unavailable\n", 20);
        httpd_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(path, "/healthz") == 0) {
        httpd_respond(r, 200, "application/json", "{\"status\":\"ok\"}", 15);
    } else if (strcmp(path, "/readyz") == 0) {
        int ok = atomic_load(&d->ready) && !atomic_load(&d->fatal);
        const char *b = ok ? "{\"status\":\"ready\"}" : "{\"status\":\"not_ready\"}";
        httpd_respond(r, ok ? 200 : 503, "application/json", b, strlen(b));
    } else {
        httpd_respond(r, 404, "application/json", "{\"error\":\"not_found\"}", 21);
    }
}

static int open_observability(dispatcher_t *d, err_t *e)
{
    metrics_t *m = d->metrics = metrics_new();
    if (!m)
        return err_set(e, ERRC_FATAL, "out of memory");
    const char *dn = "oauthq_webhooks_deliveries_total",
               *dh = "Webhook events finished, by outcome";
    d->m_delivered = metrics_counter(m, dn, dh, "outcome=\"delivered\"");
    d->m_failed = metrics_counter(m, dn, dh, "outcome=\"failed\"");
    d->m_gone = metrics_counter(m, dn, dh, "outcome=\"gone\"");
    const char *an = "oauthq_webhooks_attempts_total", *ah = "Webhook HTTP attempts, by answer";
    d->m_att_2xx = metrics_counter(m, an, ah, "result=\"2xx\"");
    d->m_att_410 = metrics_counter(m, an, ah, "result=\"410\"");
    d->m_att_http = metrics_counter(m, an, ah, "result=\"other_status\"");
    d->m_att_none = metrics_counter(m, an, ah, "result=\"no_answer\"");
    d->m_txn = metrics_counter(m, "oauthq_webhooks_transactions_total",
                               "Committed Kafka transactions of the dispatcher", NULL);
    d->m_skipped = metrics_counter(m, "oauthq_webhooks_status_skipped_total",
                                   "Status records that could not be read", NULL);
    d->m_replays = metrics_counter(m, "oauthq_webhooks_replayed_total",
                                   "Events made due again by oauthqctl webhooks replay", NULL);
    d->m_oldest = metrics_gauge(m, "oauthq_webhooks_oldest_undelivered_seconds",
                                "Age of the oldest queued, undelivered event", NULL);
    d->m_pending = metrics_gauge(m, "oauthq_webhooks_pending", "Queued, undelivered events", NULL);
    d->m_gone_g =
        metrics_gauge(m, "oauthq_webhooks_endpoint_gone",
                      "1 while a 410 holds the deliveries (stopped until a replay)", NULL);
    d->m_inflight =
        metrics_gauge(m, "oauthq_webhooks_in_flight", "Deliveries handed to curl", NULL);
    if (!d->cfg.webhook_listen[0])
        return 0;
    httpd_opts o = {d->cfg.webhook_listen, 1, 64, 64, 16, 10};
    if (!(d->http = httpd_start(&o, handle_http, d, e)))
        return err_wrap(e, "OAUTHQ_WEBHOOK_LISTEN");
    char port[16];
    snprintf(port, sizeof port, "%d", httpd_port(d->http));
    log_kv(LOGL_INFO, "webhooks_listening", "listen", d->cfg.webhook_listen, "port", port);
    return 0;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int instance_id(dispatcher_t *d, err_t *e)
{
    return kafka_instance_id(d->cfg.instance_id, d->cfg.data_dir, "webhooks.id", "h",
                             d->instance_id, sizeof d->instance_id, e);
}

static rd_kafka_t *plain_consumer(const config_t *c, const char *isolation, err_t *e)
{
    const char *const settings[] = {"isolation.level", isolation, "fetch.wait.max.ms", "10", NULL};
    return kafka_consumer_new(c, settings, "consumer", e);
}

/* A missing topic is fatal here: there is nothing to deliver from. */
static int partition_count(dispatcher_t *d, const char *topic, err_t *e)
{
    int n = -1;
    if (kafka_wait_topic(d->hwm, topic, d->cfg.kafka_timeout_ms, KAFKA_TOPIC_WAIT_MS, &n, e) < 0) {
        if (e->cls == ERRC_PERMANENT)
            e->cls = ERRC_FATAL;
        err_wrap(e, "run oauthqctl topics create");
        return -1;
    }
    return n;
}

dispatcher_t *dispatcher_open(const config_t *c, err_t *e)
{
    char errstr[256];
    dispatcher_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    d->cfg = *c;
    d->pol.base_ms = c->webhook_retry_base_ms;
    d->pol.cap_ms = (int64_t)c->webhook_retry_cap_s * 1000;
    d->pol.retry_max_ms = (int64_t)c->webhook_retry_max_s * 1000;
    if (!c->webhook_url[0]) {
        err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_URL is not set");
        goto fail;
    }
    if (dispatcher_url_check(c->webhook_url, e) < 0)
        goto fail;
    if (!c->webhook_keys[0]) {
        err_set(e, ERRC_FATAL, "OAUTHQ_WEBHOOK_SECRET_FILE is not set");
        goto fail;
    }
    if (sign_keys_load(c->webhook_keys, &d->keys, e) < 0 ||
        crypto_random(&d->rnd, sizeof d->rnd, e) < 0)
        goto fail;
    d->rnd |= 1;
    if (config_topic(c, KAFKA_TOPIC_STATUS, d->t_status, sizeof d->t_status, e) < 0 ||
        config_topic(c, KAFKA_TOPIC_WEBHOOKS, d->t_webhooks, sizeof d->t_webhooks, e) < 0 ||
        instance_id(d, e) < 0 || open_observability(d, e) < 0)
        goto fail;
    snprintf(d->group_id, sizeof d->group_id, "%swebhooks", c->topic_prefix);
    snprintf(d->txn_id, sizeof d->txn_id, "%swebhooks-%s", c->topic_prefix, d->instance_id);
    if (!(d->multi = curl_multi_init()) ||
        !(d->xfers = calloc((size_t)c->webhook_concurrency, sizeof *d->xfers))) {
        err_set(e, ERRC_FATAL, "out of memory");
        goto fail;
    }
    curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->webhook_concurrency);
    if (!(d->restorer = plain_consumer(c, "read_committed", e)) ||
        !(d->hwm = plain_consumer(c, "read_uncommitted", e)))
        goto fail;
    int n1 = partition_count(d, d->t_status, e);
    int n2 = n1 < 0 ? -1 : partition_count(d, d->t_webhooks, e);
    if (n1 < 0 || n2 < 0)
        goto fail;
    if (n1 != n2 || n1 > MAX_PARTS) {
        err_set(e, ERRC_FATAL,
                "topics %s and %s must have the same number of partitions (≤ %d): %d, %d",
                d->t_status, d->t_webhooks, MAX_PARTS, n1, n2);
        goto fail;
    }
    d->nparts = n1;
    rd_kafka_conf_t *pc = kafka_conf_producer(c, d->txn_id, e);
    if (!pc)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(pc, on_dr);
    rd_kafka_conf_set_opaque(pc, d);
    if (!(d->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(pc);
        err_set(e, ERRC_FATAL, "producer: %s", errstr);
        goto fail;
    }
    /* Fences an older instance with our transactional.id. */
    if (kafka_init_transactions(d->producer, 60000, e) < 0)
        goto fail;
    const char *topics[] = {d->t_status, d->t_webhooks};
    if (!(d->consumer = kafka_group_consumer_new(c, d->group_id, on_rebalance, d, topics, 2, e)))
        goto fail;
    char nk[8];
    snprintf(nk, sizeof nk, "%d", d->keys.n);
    log_kv(LOGL_INFO, "webhooks_started", "instance_id", d->instance_id, "group", d->group_id,
           "transactional_id", d->txn_id, "signatures_per_delivery", nk);
    return d;
fail:
    dispatcher_close(d);
    return NULL;
}

int dispatcher_run(dispatcher_t *d, volatile sig_atomic_t *stop, err_t *e)
{
    int rc = 0;
    while (!*stop && rc == 0) {
        if (atomic_load(&d->fatal)) {
            rc = err_set(e, ERRC_FATAL, "a webhook state record was not delivered");
            break;
        }
        if (d->revoke_pending) {
            if (serve_revoke(d, e) < 0 || (d->revoke_pending && drive_curl(d, 10, e) < 0)) {
                rc = -1;
                break;
            }
            if (d->revoke_pending)
                continue; /* waiting for the deliveries in flight */
        }
        if (d->assign_pending && serve_assign(d, e) < 0) {
            rc = -1;
            break;
        }
        int wait = d->inflight > 0 ? 0 : 20;
        for (int n = 0; n < POLL_BATCH; n++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(d->consumer, n == 0 ? wait : 0);
            if (!m)
                break;
            int32_t p = m->partition;
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_kv(LOGL_WARN, "consumer_error", "reason", rd_kafka_message_errstr(m));
            } else if (p >= 0 && p < d->nparts && d->assigned[p]) {
                const char *topic = rd_kafka_topic_name(m->rkt);
                int st = strcmp(topic, d->t_status) == 0;
                rc = st ? on_status(d, m, e) : on_webhooks(d, m, e);
                if (st)
                    d->next_status[p] = m->offset + 1;
                else
                    d->next_webhooks[p] = m->offset + 1;
                d->offsets_dirty = 1;
            }
            rd_kafka_message_destroy(m);
            if (rc < 0 || d->revoke_pending || d->assign_pending)
                break;
        }
        if (rc < 0)
            break;
        start_due(d);
        if (drive_curl(d, d->inflight > 0 ? 10 : 0, e) < 0) {
            rc = -1;
            break;
        }
        int64_t mono = clock_mono_ms();
        if (mono - d->last_commit_mono >= d->cfg.webhook_commit_ms) {
            int dirty = d->offsets_dirty || d->dirty_n > 0;
            if (dirty && commit(d, e) < 0) {
                rc = -1;
                break;
            }
            if (!dirty)
                d->last_commit_mono = mono;
        }
        if (mono - d->gauges_mono >= 1000) {
            d->gauges_mono = mono;
            update_gauges(d);
        }
        rd_kafka_poll(d->producer, 0);
    }
    if (rc == 0) {
        /* Stop: let the deliveries in flight finish (bounded by their
         * timeout), then commit what they did. */
        int64_t deadline = clock_mono_ms() + d->cfg.webhook_timeout_ms + 1000;
        while (d->inflight > 0 && clock_mono_ms() < deadline && rc == 0)
            rc = drive_curl(d, 20, e);
        abort_transfers(d);
        if (rc == 0 && !rd_kafka_assignment_lost(d->consumer))
            rc = commit(d, e);
    }
    return rc;
}

void dispatcher_close(dispatcher_t *d)
{
    if (!d)
        return;
    if (d->http)
        httpd_stop(d->http);
    abort_transfers(d);
    d->closing = 1;
    if (d->consumer) {
        rd_kafka_consumer_close(d->consumer);
        rd_kafka_destroy(d->consumer);
    }
    if (d->producer) {
        rd_kafka_flush(d->producer, 5000);
        rd_kafka_destroy(d->producer);
    }
    if (d->restorer) {
        rd_kafka_consumer_close(d->restorer);
        rd_kafka_destroy(d->restorer);
    }
    if (d->hwm)
        rd_kafka_destroy(d->hwm);
    if (d->assign_pending)
        rd_kafka_topic_partition_list_destroy(d->assign_pending);
    if (d->multi)
        curl_multi_cleanup(d->multi);
    drop_all(d);
    free(d->act);
    free(d->dirty);
    free(d->xfers);
    metrics_free(d->metrics);
    sign_keys_wipe(&d->keys);
    free(d);
}
