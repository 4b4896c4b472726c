/* ctl_webhooks — see ctl_webhooks.h. Single-threaded. */
#include "ctl/ctl_webhooks.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_replay.h"
#include "ctl/ctl_scan.h"
#include "ctl/ctl_send.h"
#include "common/delivery.h"

#define LIST_MAX 100000 /* connections kept by one list */

void ctl_webhooks_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl webhooks list [ID...] [--json]\n"
                 "       oauthqctl webhooks replay ID...|--all [--json]\n"
                 "\n"
                 "list: each connection's webhook delivery state from the webhooks topic:\n"
                 "queued events (webhook-id, type, state pending|gone, attempts, next\n"
                 "attempt, last HTTP status or error) and the last outcomes\n"
                 "(delivered|failed). Bodies are never printed.\n"
                 "replay: ask the dispatcher to send a connection's failed events, and the\n"
                 "events held by a 410 Gone, again (same webhook-id, version order); --all\n"
                 "for every connection — what resumes deliveries after the endpoint was\n"
                 "gone.\n"
                 "Exit codes: 0 ok, 1 Kafka unreachable or not acknowledged, 2 usage or\n"
                 "not found.\n");
}

typedef struct {
    cJSON *latest; /* object: connection id → its latest record */
    const ctl_opts *o;
    long n;
} list_scan;

static int wanted(const ctl_opts *o, const char *id)
{
    if (o->npos <= 1)
        return 1;
    for (int i = 1; i < o->npos; i++)
        if (strcmp(o->pos[i], id) == 0)
            return 1;
    return 0;
}

static int on_record(const ctl_scan_rec *r, void *ud)
{
    list_scan *s = ud;
    if (!r->key || strncmp(r->key, DELIVERY_REPLAY_KEY, strlen(DELIVERY_REPLAY_KEY)) == 0 ||
        !wanted(s->o, r->key))
        return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(s->latest, r->key);
    if (!r->value)
        return 0; /* tombstone */
    cJSON *doc = cJSON_ParseWithLength(r->value, r->value_len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "connection_id", r->key);
        cJSON_AddStringToObject(doc, "error", "unreadable record");
    }
    /* Bodies stay out of the output (they carry the platform's metadata). */
    cJSON *arr;
    const char *lists[] = {"pending", "done"};
    for (int k = 0; k < 2; k++)
        if (cJSON_IsArray(arr = cJSON_GetObjectItemCaseSensitive(doc, lists[k]))) {
            cJSON *it;
            cJSON_ArrayForEach(it, arr)
            {
                cJSON_DeleteItemFromObjectCaseSensitive(it, "body");
            }
        }
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "schema");
    if (cJSON_GetArraySize(s->latest) >= LIST_MAX) {
        cJSON_Delete(doc);
        return 1;
    }
    cJSON_AddItemToObject(s->latest, r->key, doc);
    return 0;
}

static void time_cell(const cJSON *o, const char *key, char *buf, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    cJSON *tmp = cJSON_CreateObject();
    ctl_out_add_time(tmp, "t", (int64_t)v->valuedouble);
    snprintf(buf, cap, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(tmp, "t")));
    cJSON_Delete(tmp);
}

static int webhooks_list(const ctl_ctx *cx, const ctl_opts *o, err_t *e)
{
    char topic[256];
    if (config_topic(cx->cfg, KAFKA_TOPIC_WEBHOOKS, topic, sizeof topic, e) < 0)
        return -1;
    list_scan s = {cJSON_CreateObject(), o, 0};
    if (ctl_scan_topic(cx->cfg, topic, -1, 0, on_record, &s, e) < 0) {
        cJSON_Delete(s.latest);
        return -1;
    }
    int rc = 0;
    if (o->npos > 1 && cJSON_GetArraySize(s.latest) == 0)
        rc = err_set(e, ERRC_PERMANENT, "no webhook state for the given connection(s)");
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(doc, "connections");
        cJSON *it;
        cJSON_ArrayForEach(it, s.latest)
        {
            cJSON_AddItemToArray(arr, cJSON_Duplicate(it, 1));
        }
        if (ctl_out_json(cx->out, doc, e) < 0)
            rc = -1;
        cJSON_Delete(doc);
    } else {
        fprintf(cx->out, "%-60s %-24s %-9s %8s %-24s %s\n", "WEBHOOK-ID", "TYPE", "STATE",
                "ATTEMPTS", "NEXT ATTEMPT / AT", "LAST");
        const cJSON *c;
        cJSON_ArrayForEach(c, s.latest)
        {
            const char *lists[] = {"done", "pending"};
            for (int k = 0; k < 2; k++) {
                const cJSON *ev;
                cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(c, lists[k]))
                {
                    char wid[96], type[48], state[16], att[16], when[40], http[16], err[80];
                    ctl_out_cell(ev, "webhook_id", wid, sizeof wid);
                    ctl_out_cell(ev, "type", type, sizeof type);
                    ctl_out_cell(ev, k ? "state" : "outcome", state, sizeof state);
                    ctl_out_cell(ev, "attempts", att, sizeof att);
                    time_cell(ev, k ? "next_attempt_at_ms" : "at_ms", when, sizeof when);
                    ctl_out_cell(ev, "last_http_status", http, sizeof http);
                    ctl_out_cell(ev, "last_error", err, sizeof err);
                    fprintf(cx->out, "%-60s %-24s %-9s %8s %-24s %s %s\n", wid, type, state, att,
                            when, http, err);
                }
            }
        }
    }
    cJSON_Delete(s.latest);
    return rc;
}

static int webhooks_replay(const ctl_ctx *cx, const ctl_opts *o, int all, err_t *e)
{
    if ((all && o->npos > 1) || (!all && o->npos < 2))
        return err_set(e, ERRC_PERMANENT, "usage: oauthqctl webhooks replay ID...|--all [--json]");
    for (int i = 1; i < o->npos; i++)
        if (!ctl_replay_id_ok(o->pos[i]))
            return err_set(e, ERRC_PERMANENT, "replay: bad connection id '%.63s'", o->pos[i]);
    char topic[256];
    if (config_topic(cx->cfg, KAFKA_TOPIC_WEBHOOKS, topic, sizeof topic, e) < 0)
        return -1;
    cJSON *arr = cJSON_CreateArray();
    int rc = 0;
    int n = all ? 1 : o->npos - 1;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *id = all ? "*" : o->pos[i + 1];
        char key[DELIVERY_ID_MAX + 16];
        snprintf(key, sizeof key, "%s%s", DELIVERY_REPLAY_KEY, id);
        char *json = delivery_replay_encode(id, clock_wall_ms(), e);
        /* To every partition: the owner of the connection acts on it. */
        if (!json || ctl_send(cx->cfg, topic, key, json, 1, e) < 0)
            rc = -1;
        free(json);
        if (rc == 0) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(id));
            if (!cx->json)
                fprintf(cx->out, "%s: webhook replay requested\n", all ? "all connections" : id);
        }
    }
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddItemToObject(doc, "replay_requested", arr);
        ctl_out_json(cx->out, doc, NULL);
        cJSON_Delete(doc);
    } else {
        cJSON_Delete(arr);
    }
    return rc;
}

int ctl_webhooks_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    /* --all is this command's own flag; the rest is ctl_args. */
    char *args[CTL_POS_MAX + 8];
    int n = 0, all = 0;
    for (int i = 0; i < argc && n < (int)(sizeof args / sizeof args[0]); i++) {
        if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else
            args[n++] = argv[i];
    }
    ctl_opts o;
    if (ctl_args_parse(n, args, CTL_OPT_JSON, 0, &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (o.npos >= 1 && strcmp(o.pos[0], "list") == 0 && !all)
        return webhooks_list(&cx, &o, e);
    if (o.npos >= 1 && strcmp(o.pos[0], "replay") == 0)
        return webhooks_replay(&cx, &o, all, e);
    return err_set(e, ERRC_PERMANENT,
                   "usage: oauthqctl webhooks list [ID...] | replay ID...|--all [--json]");
}
