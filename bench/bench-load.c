/*
 * bench-load — callback load for the worker and end-to-end benchmarks of
 * SPEC §9 (the intake's own figure comes from wrk, see scripts/bench).
 *
 *   bench-load flows --intake URL --count N --out FILE [--authorize]
 *                    [--hang-every K] [--parallel P] [--timeout-s S]
 *                    [--provider NAME]
 *       Start N flows through the real API as a platform and its users
 *       would (POST /v1/connections with OAUTHQ_BENCH_API_KEY, then GET the
 *       session's start_url as the browser) and write one line per flow:
 *       "<connection id> <h|-> <callback path?query> <cookies>" (the
 *       browser's cookies, ';'-separated, for the callback).
 *       --authorize: follow each authorize URL to the provider (the
 *       simulator) and keep the callback it redirects to (a real code);
 *       every K-th flow asks the simulator for sim_fault=hang ('h'), or
 *       for --fault SPEC instead (any sim_fault of the simulator, e.g.
 *       500_after, cut_after, latency:3000: the chaos load's provider faults).
 *       Without it the code is made up (for intake-only runs: nothing
 *       exchanges it). --provider: the providers-file entry the flows
 *       connect to (default "sim").
 *
 *   bench-load fire --intake URL --in FILE --out JSON [--rate R | --parallel P]
 *                   [--status-topic T] [--timeout-s S] [--hang-wait-s S]
 *       Send every flow's callback: at a fixed offered rate R per second
 *       (open loop: request i is due at t0 + i/R whatever the answers; its
 *       latency counts from when it was due), or closed loop with P in
 *       flight. With --status-topic, a read_committed consumer of the
 *       status topic times each connection's first final status (connected,
 *       failed, expired) from when its record became visible, i.e. from
 *       the worker's commit; waits until every accepted non-hang flow is
 *       final (bounded by --timeout-s), then up to --hang-wait-s for the
 *       hang flows. --samples F: one line per flow, "due_s http_ms
 *       final_ms h|-" (seconds since the first was due; -1: never).
 *
 *   bench-load watch --in FILE --status-topic T --out JSON [--timeout-s S]
 *       Wait until every flow in FILE has a final status and report the
 *       rate of final statuses from the status records' timestamps (the
 *       worker's throughput on a backlog).
 *
 * JSON results go to --out (one object). Exit 0 when the run completed
 * (every request answered, every awaited status seen), 1 when not, 2 on
 * usage errors. Kafka settings come from the OAUTHQ_* environment.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "bench/bench_util.h"
#include "common/config.h"
#include "common/log.h"

#define BODY_MAX 8192

typedef struct {
    char *id;
    char *path;
    char *cookie; /* "a=b;c=d": what the flow's browser sends to the callback */
    int hang;
    double t_due, t_answer; /* ms, monotonic; 0: not yet */
    long http;
    _Atomic long long final_us; /* first final status seen (monotonic µs); 0: none */
    _Atomic long long final_ts; /* its record timestamp (wall ms) */
} flow;

typedef struct {
    flow *f;
    size_t n, cap;
    size_t *slot; /* hash table of indexes + 1, by id */
    size_t nslot;
} flows;

static const char *USAGE =
    "usage: bench-load flows --intake URL --count N --out FILE [--authorize] [--hang-every K]\n"
    "                        [--fault SPEC] [--parallel P] [--timeout-s S] [--provider NAME]\n"
    "       bench-load fire --intake URL --in FILE --out JSON [--rate R | --parallel P]\n"
    "                       [--status-topic T] [--timeout-s S] [--hang-wait-s S] [--samples F]\n"
    "       bench-load watch --in FILE --status-topic T --out JSON [--timeout-s S]\n";

/* ---- flow table -------------------------------------------------------------------- */

static uint64_t hash_id(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int flows_index(flows *fl)
{
    fl->nslot = 16;
    while (fl->nslot < fl->n * 2 + 1)
        fl->nslot *= 2;
    fl->slot = calloc(fl->nslot, sizeof *fl->slot);
    if (!fl->slot)
        return -1;
    for (size_t i = 0; i < fl->n; i++) {
        size_t j = hash_id(fl->f[i].id, strlen(fl->f[i].id)) & (fl->nslot - 1);
        while (fl->slot[j])
            j = (j + 1) & (fl->nslot - 1);
        fl->slot[j] = i + 1;
    }
    return 0;
}

static flow *flows_find(const flows *fl, const char *key, size_t n)
{
    size_t j = hash_id(key, n) & (fl->nslot - 1);
    while (fl->slot[j]) {
        flow *f = &fl->f[fl->slot[j] - 1];
        if (strlen(f->id) == n && memcmp(f->id, key, n) == 0)
            return f;
        j = (j + 1) & (fl->nslot - 1);
    }
    return NULL;
}

static void flows_free(flows *fl)
{
    for (size_t i = 0; i < fl->n; i++) {
        free(fl->f[i].id);
        free(fl->f[i].path);
        free(fl->f[i].cookie);
    }
    free(fl->f);
    free(fl->slot);
    memset(fl, 0, sizeof *fl);
}

static int flows_load(flows *fl, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "bench-load: cannot open %s\n", path);
        return -1;
    }
    static char line[12288], p[4000], ck[8000];
    while (fgets(line, sizeof line, fp)) {
        char id[128], flag[4];
        ck[0] = '\0';
        if (sscanf(line, "%127s %3s %3999s %7999s", id, flag, p, ck) < 3)
            continue;
        if (fl->n == fl->cap) {
            size_t cap = fl->cap ? fl->cap * 2 : 1024;
            flow *nf = realloc(fl->f, cap * sizeof *nf);
            if (!nf) {
                fclose(fp);
                return -1;
            }
            fl->f = nf;
            fl->cap = cap;
        }
        flow *f = &fl->f[fl->n++];
        memset(f, 0, sizeof *f);
        f->id = strdup(id);
        f->path = strdup(p);
        f->cookie = strdup(ck);
        f->hang = flag[0] == 'h';
        if (!f->id || !f->path || !f->cookie) {
            fclose(fp);
            return -1;
        }
    }
    fclose(fp);
    if (fl->n == 0) {
        fprintf(stderr, "bench-load: no flows in %s\n", path);
        return -1;
    }
    return flows_index(fl);
}

/* ---- HTTP (curl multi) --------------------------------------------------------------- */

typedef struct {
    CURL *h;
    long idx; /* flow or request index */
    int step; /* flows: 0 create, 2 start (the browser), 1 authorize */
    char body[BODY_MAX];
    size_t blen;
    struct curl_slist *hdrs;
    char cookie[6000]; /* Set-Cookie name=value pairs seen, ';'-separated */
} req;

/* Keep every Set-Cookie's name=value (the browser's jar for one flow). */
static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    req *r = ud;
    size_t n = sz * nm;
    if (n > 11 && strncasecmp(p, "Set-Cookie:", 11) == 0) {
        const char *v = p + 11;
        while (*v == ' ')
            v++;
        size_t vl = strcspn(v, ";\r\n");
        size_t have = strlen(r->cookie);
        if (have + vl + 2 < sizeof r->cookie)
            snprintf(r->cookie + have, sizeof r->cookie - have, "%s%.*s", have ? ";" : "", (int)vl,
                     v);
    }
    return n;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    req *r = ud;
    size_t n = sz * nm;
    size_t room = sizeof r->body - 1 - r->blen;
    size_t take = n < room ? n : room;
    memcpy(r->body + r->blen, p, take);
    r->blen += take;
    r->body[r->blen] = '\0';
    return n;
}

static req *req_new(const char *url, long idx, int step, long timeout_ms)
{
    req *r = calloc(1, sizeof *r);
    if (!r || !(r->h = curl_easy_init())) {
        free(r);
        return NULL;
    }
    r->idx = idx;
    r->step = step;
    curl_easy_setopt(r->h, CURLOPT_URL, url);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(r->h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->h, CURLOPT_TCP_NODELAY, 1L);
    return r;
}

static void req_free(CURLM *m, req *r)
{
    curl_multi_remove_handle(m, r->h);
    curl_easy_cleanup(r->h);
    curl_slist_free_all(r->hdrs);
    free(r);
}

static CURLM *multi_new(long max_host)
{
    CURLM *m = curl_multi_init();
    if (m) {
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, 1024L);
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    }
    return m;
}

/* The path?query part of an absolute URL (the callback relative to the intake). */
static const char *url_path(const char *url)
{
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    return p ? p : url;
}

/* ---- flows ------------------------------------------------------------------------------ */

typedef struct {
    const char *intake;
    long count, parallel, timeout_s, hang_every;
    int authorize;
    const char *out;
    double rate;
    const char *in, *status_topic;
    long hang_wait_s;
    const char *samples;  /* fire: per-flow "due_s latency_ms hang" lines */
    const char *fault;    /* flows: the sim_fault of every K-th flow ("hang") */
    const char *provider; /* flows: the provider connected to ("sim") */
} opts;

static int start_create(CURLM *m, const opts *o, long i)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/connections", o->intake);
    req *r = req_new(url, i, 0, 15000);
    if (!r)
        return -1;
    r->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    /* The platform's API key (SPEC §4a), from the environment (never argv). */
    const char *key = getenv("OAUTHQ_BENCH_API_KEY");
    if (key && *key) {
        char auth[256];
        snprintf(auth, sizeof auth, "Authorization: Bearer %.200s", key);
        r->hdrs = curl_slist_append(r->hdrs, auth);
    }
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->hdrs);
    char body[160];
    snprintf(body, sizeof body, "{\"provider\":\"%s\",\"end_user\":{\"id\":\"bench_%ld\"}}",
             o->provider, i);
    curl_easy_setopt(r->h, CURLOPT_COPYPOSTFIELDS, body);
    return curl_multi_add_handle(m, r->h) == CURLM_OK ? 0 : -1;
}

/* One created session: its browser opens start_url (step 2). */
static int flow_created(CURLM *m, req *r)
{
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    const cJSON *su = cJSON_GetObjectItemCaseSensitive(j, "start_url");
    if (!cJSON_IsString(id) || !cJSON_IsString(su)) {
        fprintf(stderr, "bench-load: POST /v1/connections answered without id/start_url\n");
        cJSON_Delete(j);
        return -1;
    }
    req *s = req_new(su->valuestring, r->idx, 2, 15000);
    int rc = 0;
    if (!s) {
        rc = -1;
    } else {
        /* The id rides in the body buffer ("<id>\0"), as for authorize. */
        snprintf(s->body, sizeof s->body, "%s", id->valuestring);
        s->blen = strlen(s->body) + 1;
        if (curl_multi_add_handle(m, s->h) != CURLM_OK)
            rc = -1;
    }
    cJSON_Delete(j);
    return rc;
}

/* A started flow (302 to the provider, cookies set): its callback now
 * (made-up code) or after the provider. */
static int flow_started(CURLM *m, const opts *o, req *r, const char *au, FILE *out, uint64_t *rng,
                        long *done)
{
    int hang = o->hang_every > 0 && r->idx % o->hang_every == o->hang_every / 2;
    if (o->authorize) {
        char url[4200];
        snprintf(url, sizeof url, "%s%s%s", au, hang ? "&sim_fault=" : "", hang ? o->fault : "");
        req *a = req_new(url, r->idx, 1, 15000);
        if (!a)
            return -1;
        memcpy(a->body, r->body, strlen(r->body) + 1);
        a->blen = strlen(a->body) + 1;
        snprintf(a->cookie, sizeof a->cookie, "%s", r->cookie);
        return curl_multi_add_handle(m, a->h) == CURLM_OK ? 0 : -1;
    }
    const char *st = strstr(au, "state=");
    if (!st)
        return -1;
    st += 6;
    size_t sl = strcspn(st, "&");
    char code[40];
    bench_rand_b64url(rng, code, 32);
    fprintf(out, "%s - /oauth/callback?code=ac_%s&state=%.*s %s\n", r->body, code, (int)sl, st,
            r->cookie);
    (*done)++;
    return 0;
}

static int run_flows(const opts *o)
{
    if (!o->intake || !o->out || o->count <= 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    FILE *out = fopen(o->out, "w");
    if (!out) {
        fprintf(stderr, "bench-load: cannot write %s\n", o->out);
        return 1;
    }
    CURLM *m = multi_new(o->parallel * 2);
    uint64_t rng = 0;
    long next = 0, done = 0, active = 0, failed = 0;
    double deadline = bench_mono_ms() + (double)o->timeout_s * 1000.0;
    /* Each of the P slots carries one flow at a time (create, then authorize). */
    while (done + failed < o->count && bench_mono_ms() < deadline && failed == 0) {
        while (active < o->parallel && next < o->count) {
            if (start_create(m, o, next++) < 0) {
                failed++;
                break;
            }
            active++;
        }
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            req *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            long code = 0;
            curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
            if (msg->data.result != CURLE_OK) {
                fprintf(stderr, "bench-load: flow %ld: %s\n", r->idx,
                        curl_easy_strerror(msg->data.result));
                failed++;
                active--;
            } else if (r->step == 0) {
                if (code != 201 || flow_created(m, r) < 0) {
                    fprintf(stderr, "bench-load: POST /v1/connections answered %ld\n", code);
                    failed++;
                    active--;
                }
            } else if (r->step == 2) {
                char *loc = NULL;
                curl_easy_getinfo(r->h, CURLINFO_REDIRECT_URL, &loc);
                if (code != 302 || !loc || flow_started(m, o, r, loc, out, &rng, &done) < 0) {
                    fprintf(stderr, "bench-load: start_url answered %ld\n", code);
                    failed++;
                }
                if (!o->authorize || failed)
                    active--;
            } else {
                char *loc = NULL;
                curl_easy_getinfo(r->h, CURLINFO_REDIRECT_URL, &loc);
                if (code != 302 || !loc || !strstr(loc, "code=")) {
                    fprintf(stderr, "bench-load: authorize answered %ld without a code\n", code);
                    failed++;
                } else {
                    int hang = o->hang_every > 0 && r->idx % o->hang_every == o->hang_every / 2;
                    fprintf(out, "%s %s %s %s\n", r->body, hang ? "h" : "-", url_path(loc),
                            r->cookie);
                    done++;
                }
                active--;
            }
            req_free(m, r);
        }
        curl_multi_poll(m, NULL, 0, 10, NULL);
    }
    /* Anything still running is abandoned with the multi handle. */
    curl_multi_cleanup(m);
    fclose(out);
    if (done < o->count) {
        fprintf(stderr, "bench-load: %ld of %ld flows started (%ld failed)\n", done, o->count,
                failed);
        return 1;
    }
    return 0;
}

/* ---- the status reader --------------------------------------------------------------- */

typedef struct {
    rd_kafka_t *rk;
    flows *fl;
    atomic_int stop;
    atomic_long finals;
    atomic_long records;
} reader;

static int final_status(const char *v, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(v, n);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
    int fin = cJSON_IsString(s) &&
              (strcmp(s->valuestring, "connected") == 0 || strcmp(s->valuestring, "failed") == 0 ||
               strcmp(s->valuestring, "expired") == 0);
    cJSON_Delete(j);
    return fin;
}

static void *reader_main(void *arg)
{
    reader *rd = arg;
    while (!atomic_load(&rd->stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rd->rk, 50);
        if (!msg)
            continue;
        double now = bench_mono_ms();
        if (!msg->err && msg->key && msg->payload) {
            atomic_fetch_add(&rd->records, 1);
            flow *f = flows_find(rd->fl, msg->key, msg->key_len);
            if (f && atomic_load(&f->final_us) == 0 && final_status(msg->payload, msg->len)) {
                rd_kafka_timestamp_type_t tt;
                atomic_store(&f->final_ts, (long long)rd_kafka_message_timestamp(msg, &tt));
                atomic_store(&f->final_us, (long long)(now * 1000.0));
                atomic_fetch_add(&rd->finals, 1);
            }
        }
        rd_kafka_message_destroy(msg);
    }
    return NULL;
}

static int reader_start(reader *rd, pthread_t *th, const char *topic, flows *fl)
{
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0) {
        fprintf(stderr, "bench-load: %s\n", e.msg);
        return -1;
    }
    rd->fl = fl;
    rd->rk = bench_consumer(&cfg, topic, 10000, &e);
    if (!rd->rk) {
        fprintf(stderr, "bench-load: %s\n", e.msg);
        return -1;
    }
    atomic_store(&rd->stop, 0);
    if (pthread_create(th, NULL, reader_main, rd) != 0) {
        rd_kafka_destroy(rd->rk);
        return -1;
    }
    return 0;
}

static void reader_stop(reader *rd, pthread_t th)
{
    atomic_store(&rd->stop, 1);
    pthread_join(th, NULL);
    rd_kafka_consumer_close(rd->rk);
    rd_kafka_destroy(rd->rk);
}

/* Wait until every accepted flow with this hang flag is final; 0 when all were. */
static int wait_finals(const flows *fl, int hang, double deadline)
{
    for (;;) {
        size_t missing = 0;
        for (size_t i = 0; i < fl->n; i++) {
            const flow *f = &fl->f[i];
            if (f->hang == hang && f->http >= 200 && f->http < 400 &&
                atomic_load(&f->final_us) == 0)
                missing++;
        }
        if (missing == 0)
            return 0;
        if (bench_mono_ms() >= deadline)
            return -1;
        bench_sleep_ms(20);
    }
}

/* ---- fire ------------------------------------------------------------------------------ */

static int run_fire(const opts *o)
{
    if (!o->intake || !o->in || !o->out || (o->rate <= 0 && o->parallel <= 0)) {
        fputs(USAGE, stderr);
        return 2;
    }
    flows fl = {0};
    if (flows_load(&fl, o->in) < 0) {
        flows_free(&fl);
        return 1;
    }
    reader rd;
    memset(&rd, 0, sizeof rd);
    pthread_t th;
    if (o->status_topic && reader_start(&rd, &th, o->status_topic, &fl) < 0) {
        flows_free(&fl);
        return 1;
    }
    CURLM *m = multi_new(o->rate > 0 ? 0 : o->parallel);
    size_t next = 0, answered = 0;
    long inflight = 0, max_inflight = 0, failed = 0;
    double max_lag = 0;
    double t0 = bench_mono_ms() + 50;
    double deadline = t0 + (double)o->timeout_s * 1000.0;
    while (answered < fl.n && bench_mono_ms() < deadline) {
        double now = bench_mono_ms();
        while (next < fl.n) {
            double due = o->rate > 0 ? t0 + (double)next * 1000.0 / o->rate : now;
            if (o->rate > 0 && due > now)
                break;
            if (o->rate <= 0 && inflight >= o->parallel)
                break;
            char url[4200];
            snprintf(url, sizeof url, "%s%s", o->intake, fl.f[next].path);
            req *r = req_new(url, (long)next, 0, 15000);
            if (r && fl.f[next].cookie[0]) {
                /* The flow's browser cookies (binding and session metadata). */
                static char ch[8100];
                snprintf(ch, sizeof ch, "%s", fl.f[next].cookie);
                curl_easy_setopt(r->h, CURLOPT_COOKIE, ch); /* copied by curl */
            }
            if (!r || curl_multi_add_handle(m, r->h) != CURLM_OK) {
                failed++;
                break;
            }
            fl.f[next].t_due = due;
            if (now - due > max_lag)
                max_lag = now - due;
            next++;
            inflight++;
            if (inflight > max_inflight)
                max_inflight = inflight;
        }
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            req *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            flow *f = &fl.f[r->idx];
            f->t_answer = bench_mono_ms();
            if (msg->data.result == CURLE_OK)
                curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &f->http);
            else
                f->http = -1;
            answered++;
            inflight--;
            req_free(m, r);
        }
        int wait_ms = 5;
        if (o->rate > 0 && next < fl.n) {
            double due = t0 + (double)next * 1000.0 / o->rate - bench_mono_ms();
            wait_ms = due < 0 ? 0 : due < 5 ? (int)due : 5;
        }
        curl_multi_poll(m, NULL, 0, wait_ms, NULL);
    }
    double t_sent = bench_mono_ms();
    curl_multi_cleanup(m);

    long accepted = 0, rejected = 0, unanswered = (long)(fl.n - answered);
    bench_samples http = {0};
    for (size_t i = 0; i < fl.n; i++) {
        const flow *f = &fl.f[i];
        if (f->http >= 200 && f->http < 400) {
            accepted++;
            bench_samples_add(&http, f->t_answer - f->t_due);
        } else if (i < next && f->t_answer > 0) {
            rejected++;
        }
    }
    int complete = unanswered == 0 && rejected == 0 && failed == 0;
    long hang_total = 0;
    for (size_t i = 0; i < fl.n; i++)
        hang_total += fl.f[i].hang;
    if (o->status_topic) {
        if (wait_finals(&fl, 0, bench_mono_ms() + (double)o->timeout_s * 1000.0) < 0)
            complete = 0;
        if (hang_total > 0)
            wait_finals(&fl, 1, bench_mono_ms() + (double)o->hang_wait_s * 1000.0);
        reader_stop(&rd, th);
    }

    FILE *out = fopen(o->out, "w");
    if (!out) {
        flows_free(&fl);
        return 1;
    }
    double span = (t_sent - t0) / 1000.0;
    fprintf(out,
            "{\"flows\": %zu, \"sent\": %zu, \"accepted\": %ld, \"rejected\": %ld, "
            "\"unanswered\": %ld, \"offered_per_s\": %.1f, \"sent_per_s\": %.1f, "
            "\"max_lag_ms\": %.1f, \"max_in_flight\": %ld, \"http_p50_ms\": %.2f, "
            "\"http_p99_ms\": %.2f",
            fl.n, next, accepted, rejected, unanswered, o->rate, span > 0 ? (double)next / span : 0,
            max_lag, max_inflight, bench_percentile(&http, 50), bench_percentile(&http, 99));
    bench_samples_free(&http);
    if (o->status_topic) {
        bench_samples lat = {0}, lat_hang = {0}, all = {0};
        long fin = 0, fin_hang = 0, missing = 0;
        for (size_t i = 0; i < fl.n; i++) {
            const flow *f = &fl.f[i];
            long long us = atomic_load(&f->final_us);
            if (!(f->http >= 200 && f->http < 400))
                continue;
            if (!us) {
                missing += !f->hang;
                continue;
            }
            double ms = (double)us / 1000.0 - f->t_due;
            bench_samples_add(&all, ms);
            if (f->hang) {
                fin_hang++;
                bench_samples_add(&lat_hang, ms);
            } else {
                fin++;
                bench_samples_add(&lat, ms);
            }
        }
        fprintf(out,
                ", \"status_records\": %ld, \"final\": %ld, \"final_missing\": %ld, "
                "\"hang_flows\": %ld, \"hang_final\": %ld, \"p50_ms\": %.1f, \"p99_ms\": %.1f, "
                "\"max_ms\": %.1f, \"p99_ms_all\": %.1f, \"hang_p50_ms\": %.1f",
                atomic_load(&rd.records), fin, missing, hang_total, fin_hang,
                bench_percentile(&lat, 50), bench_percentile(&lat, 99), bench_percentile(&lat, 100),
                bench_percentile(&all, 99), bench_percentile(&lat_hang, 50));
        bench_samples_free(&lat);
        bench_samples_free(&lat_hang);
        bench_samples_free(&all);
    }
    fprintf(out, ", \"complete\": %s}\n", complete ? "true" : "false");
    fclose(out);
    FILE *sf = o->samples ? fopen(o->samples, "w") : NULL;
    for (size_t i = 0; sf && i < fl.n; i++) {
        const flow *f = &fl.f[i];
        long long us = atomic_load(&f->final_us);
        fprintf(sf, "%.3f %.1f %.1f %c\n", (f->t_due - t0) / 1000.0,
                f->t_answer > 0 ? f->t_answer - f->t_due : -1.0,
                us ? (double)us / 1000.0 - f->t_due : -1.0, f->hang ? 'h' : '-');
    }
    if (sf)
        fclose(sf);
    flows_free(&fl);
    return complete ? 0 : 1;
}

/* ---- watch ------------------------------------------------------------------------------ */

static int run_watch(const opts *o)
{
    if (!o->in || !o->out || !o->status_topic) {
        fputs(USAGE, stderr);
        return 2;
    }
    flows fl = {0};
    reader rd;
    memset(&rd, 0, sizeof rd);
    pthread_t th;
    if (flows_load(&fl, o->in) < 0 || reader_start(&rd, &th, o->status_topic, &fl) < 0) {
        flows_free(&fl);
        return 1;
    }
    for (size_t i = 0; i < fl.n; i++)
        fl.f[i].http = 200; /* sent by an earlier `fire` */
    int complete = wait_finals(&fl, 0, bench_mono_ms() + (double)o->timeout_s * 1000.0) == 0;
    reader_stop(&rd, th);
    bench_samples ts = {0};
    for (size_t i = 0; i < fl.n; i++)
        if (atomic_load(&fl.f[i].final_us))
            bench_samples_add(&ts, (double)atomic_load(&fl.f[i].final_ts));
    double first = bench_percentile(&ts, 0), last = bench_percentile(&ts, 100);
    double p10 = bench_percentile(&ts, 10), p90 = bench_percentile(&ts, 90);
    size_t n = ts.n, nflows = fl.n;
    flows_free(&fl);
    double span = (last - first) / 1000.0, span80 = (p90 - p10) / 1000.0;
    FILE *out = fopen(o->out, "w");
    if (!out) {
        bench_samples_free(&ts);
        return 1;
    }
    /* per_s: every final between the first and the last (conservative);
     * per_s_p10_p90: the middle 80 %, without ramp-up and tail. */
    fprintf(out,
            "{\"flows\": %zu, \"final\": %zu, \"span_s\": %.3f, \"per_s\": %.1f, "
            "\"per_s_p10_p90\": %.1f, \"complete\": %s}\n",
            nflows, n, span, span > 0 && n > 1 ? (double)(n - 1) / span : 0,
            span80 > 0 ? 0.8 * (double)n / span80 : 0, complete ? "true" : "false");
    fclose(out);
    bench_samples_free(&ts);
    return complete ? 0 : 1;
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    opts o = {NULL, 0, 64, 120, 0, 0, NULL, 0, NULL, NULL, 30, NULL, "hang", "sim"};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--authorize") == 0) {
            o.authorize = 1;
            continue;
        }
        if (!v) {
            bad = 1;
        } else if (strcmp(a, "--intake") == 0) {
            o.intake = v;
        } else if (strcmp(a, "--out") == 0) {
            o.out = v;
        } else if (strcmp(a, "--in") == 0) {
            o.in = v;
        } else if (strcmp(a, "--samples") == 0) {
            o.samples = v;
        } else if (strcmp(a, "--status-topic") == 0) {
            o.status_topic = v;
        } else if (strcmp(a, "--count") == 0) {
            bad = bench_parse_long(v, 1, 10000000, &o.count);
        } else if (strcmp(a, "--parallel") == 0) {
            bad = bench_parse_long(v, 1, 4096, &o.parallel);
        } else if (strcmp(a, "--timeout-s") == 0) {
            bad = bench_parse_long(v, 1, 3600, &o.timeout_s);
        } else if (strcmp(a, "--hang-wait-s") == 0) {
            bad = bench_parse_long(v, 0, 3600, &o.hang_wait_s);
        } else if (strcmp(a, "--fault") == 0) {
            /* a query value as is: [a-z0-9_:] only, short */
            bad = strlen(v) == 0 || strlen(v) > 32 ||
                  strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_:") != strlen(v);
            o.fault = v;
        } else if (strcmp(a, "--provider") == 0) {
            /* a JSON string as is: [a-z0-9_-] only, short */
            bad = strlen(v) == 0 || strlen(v) > 32 ||
                  strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(v);
            o.provider = v;
        } else if (strcmp(a, "--hang-every") == 0) {
            bad = bench_parse_long(v, 0, 1000000, &o.hang_every);
        } else if (strcmp(a, "--rate") == 0) {
            bad = bench_parse_double(v, 0, 1e6, &o.rate);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "bench-load: bad argument '%s'\n%s", a, USAGE);
            return 2;
        }
        i++;
    }
    err_t e = {0};
    if (log_init("bench-load", "warn", "text", &e) < 0 ||
        curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "bench-load: init failed\n");
        return 1;
    }
    int rc;
    if (strcmp(mode, "flows") == 0)
        rc = run_flows(&o);
    else if (strcmp(mode, "fire") == 0)
        rc = run_fire(&o);
    else if (strcmp(mode, "watch") == 0)
        rc = run_watch(&o);
    else {
        fputs(USAGE, stderr);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
