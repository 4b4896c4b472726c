/* delivery — see delivery.h. Pure and thread-safe. */
#include "common/delivery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/connrec.h"

/* Fields of the platform view, in this order (SPEC §4a, §5): the status
 * document and the platform's metadata. Anything else a status record
 * carries stays out of the webhook. */
static const char *const view_fields[] = {
    "id",       "provider",   "status",     "phase",   "reason",   "message",      "account",
    "attempts", "created_at", "updated_at", "version", "end_user", "organization", "tags",
};

static const char *event_type(const char *status)
{
    if (strcmp(status, "connected") == 0)
        return "connection.connected";
    if (strcmp(status, "failed") == 0)
        return "connection.failed";
    if (strcmp(status, "expired") == 0)
        return "connection.expired";
    if (strcmp(status, "disconnected") == 0)
        return "connection.disconnected";
    return NULL;
}

int delivery_event_from_status(const char *json, size_t len, char id[DELIVERY_ID_MAX],
                               int64_t *version, char type[DELIVERY_TYPE_MAX], char **body,
                               err_t *e)
{
    *body = NULL;
    connrec_status r;
    cJSON *o = NULL;
    if (connrec_status_decode(json, len, &r, &o, e) < 0)
        return -1;
    int rc = -1;
    if (strlen(r.id) >= DELIVERY_ID_MAX) {
        err_set(e, ERRC_PERMANENT, "status record: bad id");
    } else if (!event_type(conn_status_name(r.status))) {
        rc = 0; /* pending: no webhook */
    } else {
        const cJSON *during = cJSON_GetObjectItemCaseSensitive(o, "failed_during");
        snprintf(id, DELIVERY_ID_MAX, "%s", r.id);
        snprintf(type, DELIVERY_TYPE_MAX, "%s",
                 cJSON_IsString(during) && strcmp(during->valuestring, "refresh") == 0 &&
                         r.status == CONN_FAILED
                     ? "connection.refresh_failed"
                     : event_type(conn_status_name(r.status)));
        *version = r.version;
        cJSON *out = cJSON_CreateObject();
        cJSON *data = NULL;
        if (out) {
            cJSON_AddStringToObject(out, "type", type);
            cJSON_AddStringToObject(out, "timestamp", r.updated_at);
            data = cJSON_AddObjectToObject(out, "data");
        }
        for (size_t i = 0; data && i < sizeof view_fields / sizeof view_fields[0]; i++) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, view_fields[i]);
            if (f)
                cJSON_AddItemToObject(data, view_fields[i], cJSON_Duplicate(f, 1));
        }
        char *s = data ? cJSON_PrintUnformatted(out) : NULL;
        cJSON_Delete(out);
        if (!s) {
            err_set(e, ERRC_FATAL, "webhook body: out of memory");
        } else if (strlen(s) > DELIVERY_BODY_MAX) {
            free(s);
            err_set(e, ERRC_PERMANENT, "webhook body: larger than %d bytes", DELIVERY_BODY_MAX);
        } else {
            *body = s;
            rc = 1;
        }
    }
    cJSON_Delete(o);
    return rc;
}

void delivery_conn_init(delivery_conn *c, const char *id)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
}

void delivery_conn_clear(delivery_conn *c)
{
    for (int i = 0; i < c->nev; i++)
        free(c->ev[i].body);
    for (int i = 0; i < c->ndone; i++)
        free(c->done[i].body);
    char id[DELIVERY_ID_MAX];
    memcpy(id, c->id, sizeof id);
    delivery_conn_init(c, id);
}

void delivery_webhook_id(const char *id, int64_t version, char out[DELIVERY_WID_MAX])
{
    snprintf(out, DELIVERY_WID_MAX, "%s_v%lld", id, (long long)version);
}

/* Record the head's outcome in the done ring and drop it from the queue. */
static void finish_head(delivery_conn *c, int failed, int64_t now_ms)
{
    delivery_event *h = &c->ev[0];
    if (c->ndone == DELIVERY_DONE_MAX) {
        free(c->done[0].body);
        memmove(&c->done[0], &c->done[1], (DELIVERY_DONE_MAX - 1) * sizeof c->done[0]);
        c->ndone--;
    }
    delivery_done *d = &c->done[c->ndone++];
    memset(d, 0, sizeof *d);
    d->version = h->version;
    memcpy(d->type, h->type, sizeof d->type);
    d->failed = failed;
    d->attempts = h->attempts;
    d->at_ms = now_ms;
    d->last_http = h->last_http;
    memcpy(d->last_error, h->last_error, sizeof d->last_error);
    if (failed)
        d->body = h->body;
    else
        free(h->body);
    memmove(&c->ev[0], &c->ev[1], (size_t)(c->nev - 1) * sizeof c->ev[0]);
    c->nev--;
    memset(&c->ev[c->nev], 0, sizeof c->ev[0]);
    c->updated_ms = now_ms;
}

/* Insert ev in version order; the caller made room. */
static void insert_sorted(delivery_conn *c, const delivery_event *ev)
{
    int at = c->nev;
    while (at > 0 && c->ev[at - 1].version > ev->version)
        at--;
    memmove(&c->ev[at + 1], &c->ev[at], (size_t)(c->nev - at) * sizeof c->ev[0]);
    c->ev[at] = *ev;
    c->nev++;
}

int delivery_enqueue(delivery_conn *c, int64_t version, const char *type, char *body,
                     int64_t now_ms)
{
    if (version <= c->last_version) {
        free(body);
        return 0;
    }
    if (c->nev == DELIVERY_EVENTS_MAX) {
        snprintf(c->ev[0].last_error, sizeof c->ev[0].last_error, "queue_full");
        finish_head(c, 1, now_ms);
    }
    delivery_event ev;
    memset(&ev, 0, sizeof ev);
    ev.version = version;
    snprintf(ev.type, sizeof ev.type, "%s", type);
    ev.body = body;
    ev.created_ms = now_ms;
    ev.next_attempt_ms = now_ms;
    insert_sorted(c, &ev);
    c->last_version = version;
    c->updated_ms = now_ms;
    return 1;
}

delivery_event *delivery_due(delivery_conn *c, int64_t now_ms)
{
    if (c->nev == 0 || c->ev[0].gone || c->ev[0].next_attempt_ms > now_ms)
        return NULL;
    return &c->ev[0];
}

int64_t delivery_backoff_ms(const delivery_policy *p, int attempts, uint32_t rnd)
{
    int64_t d = p->base_ms > 0 ? p->base_ms : 1;
    for (int i = 1; i < attempts && d < p->cap_ms; i++)
        d *= 2;
    if (d > p->cap_ms)
        d = p->cap_ms;
    int64_t half = d / 2;
    return d - half + (half > 0 ? (int64_t)(rnd % (uint64_t)(half + 1)) : 0);
}

delivery_outcome delivery_result(delivery_conn *c, int http, const char *error, int64_t now_ms,
                                 const delivery_policy *p, uint32_t rnd)
{
    delivery_event *h = &c->ev[0];
    h->attempts++;
    if (h->first_attempt_ms == 0)
        h->first_attempt_ms = now_ms;
    h->last_http = http;
    snprintf(h->last_error, sizeof h->last_error, "%s", error ? error : "");
    c->updated_ms = now_ms;
    if (http >= 200 && http < 300) {
        finish_head(c, 0, now_ms);
        return DELIVERY_DELIVERED;
    }
    if (http == 410) {
        h->gone = 1;
        return DELIVERY_GONE;
    }
    if (now_ms - h->first_attempt_ms >= p->retry_max_ms) {
        finish_head(c, 1, now_ms);
        return DELIVERY_FAILED;
    }
    h->next_attempt_ms = now_ms + delivery_backoff_ms(p, h->attempts, rnd);
    return DELIVERY_RETRY;
}

int delivery_replay(delivery_conn *c, int64_t now_ms)
{
    int n = 0;
    for (int i = 0; i < c->nev; i++)
        if (c->ev[i].gone || i == 0) {
            c->ev[i].gone = 0;
            c->ev[i].first_attempt_ms = 0;
            c->ev[i].next_attempt_ms = now_ms;
            n += 1;
        }
    for (int i = 0; i < c->ndone;) {
        delivery_done *d = &c->done[i];
        if (!d->failed || !d->body || c->nev == DELIVERY_EVENTS_MAX) {
            i++;
            continue;
        }
        delivery_event ev;
        memset(&ev, 0, sizeof ev);
        ev.version = d->version;
        memcpy(ev.type, d->type, sizeof ev.type);
        ev.body = d->body;
        ev.attempts = d->attempts;
        ev.created_ms = now_ms;
        ev.next_attempt_ms = now_ms;
        insert_sorted(c, &ev);
        memmove(&c->done[i], &c->done[i + 1], (size_t)(c->ndone - i - 1) * sizeof c->done[0]);
        c->ndone--;
        memset(&c->done[c->ndone], 0, sizeof c->done[0]);
        n++;
    }
    if (n)
        c->updated_ms = now_ms;
    return n;
}

int delivery_gone(const delivery_conn *c)
{
    return c->nev > 0 && c->ev[0].gone;
}

int64_t delivery_oldest_ms(const delivery_conn *c)
{
    int64_t o = 0;
    for (int i = 0; i < c->nev; i++)
        if (o == 0 || c->ev[i].created_ms < o)
            o = c->ev[i].created_ms;
    return o;
}

/* ---- webhook.v1 codec ------------------------------------------------------ */

static void add_error(cJSON *o, int http, const char *err)
{
    if (http)
        cJSON_AddNumberToObject(o, "last_http_status", http);
    else
        cJSON_AddNullToObject(o, "last_http_status");
    if (err[0])
        cJSON_AddStringToObject(o, "last_error", err);
    else
        cJSON_AddNullToObject(o, "last_error");
}

char *delivery_encode(const delivery_conn *c, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", DELIVERY_SCHEMA);
    cJSON_AddStringToObject(o, "connection_id", c->id);
    cJSON_AddNumberToObject(o, "last_version", (double)c->last_version);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)c->updated_ms);
    cJSON *pend = cJSON_AddArrayToObject(o, "pending");
    for (int i = 0; i < c->nev; i++) {
        const delivery_event *v = &c->ev[i];
        cJSON *x = cJSON_CreateObject();
        char wid[DELIVERY_WID_MAX];
        delivery_webhook_id(c->id, v->version, wid);
        cJSON_AddStringToObject(x, "webhook_id", wid);
        cJSON_AddNumberToObject(x, "version", (double)v->version);
        cJSON_AddStringToObject(x, "type", v->type);
        cJSON_AddStringToObject(x, "state", v->gone ? "gone" : "pending");
        cJSON_AddNumberToObject(x, "attempts", v->attempts);
        cJSON_AddNumberToObject(x, "created_at_ms", (double)v->created_ms);
        cJSON_AddNumberToObject(x, "first_attempt_at_ms", (double)v->first_attempt_ms);
        cJSON_AddNumberToObject(x, "next_attempt_at_ms", (double)v->next_attempt_ms);
        add_error(x, v->last_http, v->last_error);
        cJSON_AddStringToObject(x, "body", v->body);
        cJSON_AddItemToArray(pend, x);
    }
    cJSON *done = cJSON_AddArrayToObject(o, "done");
    for (int i = 0; i < c->ndone; i++) {
        const delivery_done *d = &c->done[i];
        cJSON *x = cJSON_CreateObject();
        char wid[DELIVERY_WID_MAX];
        delivery_webhook_id(c->id, d->version, wid);
        cJSON_AddStringToObject(x, "webhook_id", wid);
        cJSON_AddNumberToObject(x, "version", (double)d->version);
        cJSON_AddStringToObject(x, "type", d->type);
        cJSON_AddStringToObject(x, "outcome", d->failed ? "failed" : "delivered");
        cJSON_AddNumberToObject(x, "attempts", d->attempts);
        cJSON_AddNumberToObject(x, "at_ms", (double)d->at_ms);
        add_error(x, d->last_http, d->last_error);
        if (d->body)
            cJSON_AddStringToObject(x, "body", d->body);
        cJSON_AddItemToArray(done, x);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding webhook record: out of memory");
    return s;
}

static int get_i64(const cJSON *o, const char *k, int64_t min, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < (double)min || v->valuedouble > 9e15)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int get_str(const cJSON *o, const char *k, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return -1;
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_error(const cJSON *o, int *http, char *err)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "last_http_status");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "last_error");
    if (cJSON_IsNumber(h) && h->valuedouble >= 100 && h->valuedouble < 1000)
        *http = (int)h->valuedouble;
    else if (!cJSON_IsNull(h))
        return -1;
    if (cJSON_IsString(m))
        snprintf(err, DELIVERY_ERROR_MAX, "%s", m->valuestring);
    else if (!cJSON_IsNull(m))
        return -1;
    return 0;
}

static char *get_body(const cJSON *o, int required, int *bad)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "body");
    if (!b) {
        *bad = required;
        return NULL;
    }
    if (!cJSON_IsString(b) || strlen(b->valuestring) > DELIVERY_BODY_MAX) {
        *bad = 1;
        return NULL;
    }
    char *s = strdup(b->valuestring);
    if (!s)
        *bad = 1;
    return s;
}

int delivery_decode(const char *json, size_t len, delivery_conn *c, err_t *e)
{
    memset(c, 0, sizeof *c);
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *pend = cJSON_GetObjectItemCaseSensitive(o, "pending");
    const cJSON *done = cJSON_GetObjectItemCaseSensitive(o, "done");
    char schema[40];
    int bad = !cJSON_IsObject(o) || get_str(o, "schema", schema, sizeof schema) < 0 ||
              strcmp(schema, DELIVERY_SCHEMA) != 0 ||
              get_str(o, "connection_id", c->id, sizeof c->id) < 0 || !c->id[0] ||
              get_i64(o, "last_version", 0, &c->last_version) < 0 ||
              get_i64(o, "updated_at_ms", 0, &c->updated_ms) < 0 || !cJSON_IsArray(pend) ||
              !cJSON_IsArray(done) || cJSON_GetArraySize(pend) > DELIVERY_EVENTS_MAX ||
              cJSON_GetArraySize(done) > DELIVERY_DONE_MAX;
    const cJSON *x;
    if (!bad)
        cJSON_ArrayForEach(x, pend)
        {
            delivery_event *v = &c->ev[c->nev];
            char state[16];
            int64_t att = 0;
            if (!cJSON_IsObject(x) || get_i64(x, "version", 1, &v->version) < 0 ||
                get_str(x, "type", v->type, sizeof v->type) < 0 ||
                get_str(x, "state", state, sizeof state) < 0 ||
                (strcmp(state, "pending") != 0 && strcmp(state, "gone") != 0) ||
                get_i64(x, "attempts", 0, &att) < 0 || att > 1000000000 ||
                get_i64(x, "created_at_ms", 0, &v->created_ms) < 0 ||
                get_i64(x, "first_attempt_at_ms", 0, &v->first_attempt_ms) < 0 ||
                get_i64(x, "next_attempt_at_ms", 0, &v->next_attempt_ms) < 0 ||
                get_error(x, &v->last_http, v->last_error) < 0 ||
                (c->nev > 0 && c->ev[c->nev - 1].version >= v->version) ||
                !(v->body = get_body(x, 1, &bad))) {
                bad = 1;
                break;
            }
            v->gone = strcmp(state, "gone") == 0;
            v->attempts = (int)att;
            c->nev++;
        }
    if (!bad)
        cJSON_ArrayForEach(x, done)
        {
            delivery_done *d = &c->done[c->ndone];
            char outcome[16];
            int64_t att = 0;
            if (!cJSON_IsObject(x) || get_i64(x, "version", 1, &d->version) < 0 ||
                get_str(x, "type", d->type, sizeof d->type) < 0 ||
                get_str(x, "outcome", outcome, sizeof outcome) < 0 ||
                (strcmp(outcome, "delivered") != 0 && strcmp(outcome, "failed") != 0) ||
                get_i64(x, "attempts", 0, &att) < 0 || att > 1000000000 ||
                get_i64(x, "at_ms", 0, &d->at_ms) < 0 ||
                get_error(x, &d->last_http, d->last_error) < 0) {
                bad = 1;
                break;
            }
            d->failed = strcmp(outcome, "failed") == 0;
            d->attempts = (int)att;
            d->body = get_body(x, 0, &bad);
            c->ndone++;
            if (bad)
                break;
        }
    cJSON_Delete(o);
    if (bad) {
        delivery_conn_clear(c);
        memset(c, 0, sizeof *c);
        return err_set(e, ERRC_PERMANENT, "webhook record: not a valid %s", DELIVERY_SCHEMA);
    }
    return 0;
}

char *delivery_replay_encode(const char *id, int64_t now_ms, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", DELIVERY_REPLAY_SCHEMA);
    cJSON_AddStringToObject(o, "connection_id", id);
    cJSON_AddNumberToObject(o, "requested_at_ms", (double)now_ms);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding replay request: out of memory");
    return s;
}

int delivery_replay_decode(const char *json, size_t len, char id[DELIVERY_ID_MAX], err_t *e)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    char schema[40];
    int64_t at = 0;
    int bad = !cJSON_IsObject(o) || get_str(o, "schema", schema, sizeof schema) < 0 ||
              strcmp(schema, DELIVERY_REPLAY_SCHEMA) != 0 ||
              get_str(o, "connection_id", id, DELIVERY_ID_MAX) < 0 || !id[0] ||
              get_i64(o, "requested_at_ms", 0, &at) < 0;
    cJSON_Delete(o);
    if (bad)
        return err_set(e, ERRC_PERMANENT, "replay request: not a valid %s", DELIVERY_REPLAY_SCHEMA);
    return 0;
}
