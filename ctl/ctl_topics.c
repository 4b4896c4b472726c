/* ctl_topics — see ctl_topics.h. The expected settings are kafka_topic_specs and
 * kafka_min_isr (common/kafka), the table kafka_topics_ensure creates from. Single-threaded. */
#include "ctl/ctl_topics.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ctl/ctl_args.h"

const char *ctl_topics_suffix(int i)
{
    return i >= 0 && i < CTL_TOPICS ? kafka_topic_specs[i].suffix : NULL;
}

const char *ctl_topics_policy(int i)
{
    return i >= 0 && i < CTL_TOPICS ? kafka_topic_specs[i].policy : NULL;
}

static void add(ctl_drift *out, int cap, int *n, const char *topic, const char *kind,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void add(ctl_drift *out, int cap, int *n, const char *topic, const char *kind,
                const char *fmt, ...)
{
    if (*n >= cap)
        return;
    ctl_drift *d = &out[(*n)++];
    snprintf(d->topic, sizeof d->topic, "%s", topic);
    snprintf(d->kind, sizeof d->kind, "%s", kind);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->detail, sizeof d->detail, fmt, ap);
    va_end(ap);
}

int ctl_topics_drift(const ctl_topic_desc d[CTL_TOPICS], int want_partitions, int want_replication,
                     ctl_drift *out, int cap)
{
    int n = 0;
    int want_isr = kafka_min_isr(want_replication);
    for (int i = 0; i < CTL_TOPICS; i++) {
        const ctl_topic_desc *t = &d[i];
        const char *s = kafka_topic_specs[i].suffix;
        if (!t->exists) {
            add(out, cap, &n, s, "missing", "%s does not exist (oauthqctl topics create)", t->name);
            continue;
        }
        if (t->cleanup_policy[0] && strcmp(t->cleanup_policy, kafka_topic_specs[i].policy) != 0)
            add(out, cap, &n, s, "cleanup_policy", "cleanup.policy is %s, expected %s",
                t->cleanup_policy, kafka_topic_specs[i].policy);
        if (t->partitions < want_partitions)
            add(out, cap, &n, s, "partitions_below_config",
                "%d partitions, fewer than OAUTHQ_TOPIC_PARTITIONS=%d", t->partitions,
                want_partitions);
        else if (t->partitions > want_partitions && i < 3)
            /* Keys route over the configured count (kafka_partition_for):
             * the intake and the worker refuse to start on another count,
             * which would send callbacks away from their state. */
            add(out, cap, &n, s, "partitions_above_config",
                "%d partitions, more than OAUTHQ_TOPIC_PARTITIONS=%d: intake and worker refuse "
                "to start (docs/operations.md, Scaling partitions)",
                t->partitions, want_partitions);
        if (t->replication < want_replication)
            add(out, cap, &n, s, "replication_below_config",
                "replication %d, less than OAUTHQ_TOPIC_REPLICATION=%d", t->replication,
                want_replication);
        if (t->min_isr > 0 && t->min_isr > t->replication)
            add(out, cap, &n, s, "min_insync_above_replication",
                "min.insync.replicas %d > replication %d: acks=all writes fail", t->min_isr,
                t->replication);
        else if (t->min_isr > 0 && t->min_isr < want_isr)
            add(out, cap, &n, s, "min_insync_below_config",
                "min.insync.replicas %d, expected %d for replication %d", t->min_isr, want_isr,
                want_replication);
        if (kafka_topic_specs[i].min_retention_ms > 0 && t->retention_ms != LLONG_MIN &&
            t->retention_ms >= 0 && t->retention_ms < kafka_topic_specs[i].min_retention_ms)
            add(out, cap, &n, s, "retention_below_spec", "retention.ms %lld, expected >= %lld",
                t->retention_ms, kafka_topic_specs[i].min_retention_ms);
    }
    /* The worker co-partitions callbacks, connections and status: a key's
     * state must live in the partition its callbacks arrive on. */
    const ctl_topic_desc *cb = &d[0], *cn = &d[1], *st = &d[2];
    if (cb->exists && cn->exists && st->exists &&
        (cb->partitions != cn->partitions || cb->partitions != st->partitions))
        add(out, cap, &n, "callbacks", "partitions_mismatch",
            "callbacks %d, connections %d, status %d partitions: the worker requires them equal",
            cb->partitions, cn->partitions, st->partitions);
    /* The webhook dispatcher co-partitions status and webhooks. */
    const ctl_topic_desc *wh = &d[4];
    if (st->exists && wh->exists && st->partitions != wh->partitions)
        add(out, cap, &n, "webhooks", "partitions_mismatch",
            "status %d, webhooks %d partitions: the webhook dispatcher requires them equal",
            st->partitions, wh->partitions);
    return n;
}

/* ---- describe ------------------------------------------------------------- */

/* Partitions and replication of every topic, from one metadata request for
 * all topics (a request naming a topic could auto-create it). */
static int describe_metadata(rd_kafka_t *rk, const config_t *c, ctl_topic_desc d[CTL_TOPICS],
                             err_t *e)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, c->kafka_timeout_ms);
    if (err)
        return err_set(e, kafka_errc(err) == ERRC_FATAL ? ERRC_FATAL : ERRC_RETRIABLE,
                       "metadata from %s: %s", c->kafka_bootstrap, rd_kafka_err2str(err));
    for (int i = 0; i < md->topic_cnt; i++) {
        const struct rd_kafka_metadata_topic *t = &md->topics[i];
        for (int k = 0; k < CTL_TOPICS; k++) {
            if (strcmp(t->topic, d[k].name) != 0 || t->err)
                continue;
            d[k].exists = 1;
            d[k].partitions = t->partition_cnt;
            d[k].replication = t->partition_cnt > 0 ? INT_MAX : 0;
            for (int p = 0; p < t->partition_cnt; p++)
                if (t->partitions[p].replica_cnt < d[k].replication)
                    d[k].replication = t->partitions[p].replica_cnt;
        }
    }
    rd_kafka_metadata_destroy(md);
    return 0;
}

static void take_config(ctl_topic_desc *t, const char *name, const char *value)
{
    if (!value)
        return;
    if (strcmp(name, "cleanup.policy") == 0)
        snprintf(t->cleanup_policy, sizeof t->cleanup_policy, "%s", value);
    else if (strcmp(name, "retention.ms") == 0)
        t->retention_ms = strtoll(value, NULL, 10);
    else if (strcmp(name, "min.insync.replicas") == 0)
        t->min_isr = atoi(value);
}

/* cleanup.policy, retention.ms, min.insync.replicas of the existing topics. */
static int describe_configs(rd_kafka_t *rk, const config_t *c, ctl_topic_desc d[CTL_TOPICS],
                            err_t *e)
{
    rd_kafka_ConfigResource_t *res[CTL_TOPICS];
    int nres = 0;
    for (int k = 0; k < CTL_TOPICS; k++)
        if (d[k].exists)
            res[nres++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, d[k].name);
    if (nres == 0)
        return 0;
    char errstr[256];
    int rc = -1;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(opts, c->kafka_timeout_ms, errstr, sizeof errstr);
    rd_kafka_DescribeConfigs(rk, res, (size_t)nres, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, c->kafka_timeout_ms + 2000);
    if (!ev) {
        err_set(e, ERRC_RETRIABLE, "describing topic configs: no answer in %d ms",
                c->kafka_timeout_ms + 2000);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        err_set(e, kafka_errc(rd_kafka_event_error(ev)), "describing topic configs: %s",
                rd_kafka_event_error_string(ev));
        goto out;
    }
    size_t n = 0;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
    for (size_t i = 0; i < n; i++) {
        ctl_topic_desc *t = NULL;
        for (int k = 0; k < CTL_TOPICS; k++)
            if (strcmp(d[k].name, rd_kafka_ConfigResource_name(rs[i])) == 0)
                t = &d[k];
        if (!t)
            continue;
        if (rd_kafka_ConfigResource_error(rs[i])) {
            err_set(e, kafka_errc(rd_kafka_ConfigResource_error(rs[i])), "configs of %s: %s",
                    t->name, rd_kafka_ConfigResource_error_string(rs[i]));
            goto out;
        }
        size_t nc = 0;
        const rd_kafka_ConfigEntry_t **ce = rd_kafka_ConfigResource_configs(rs[i], &nc);
        for (size_t j = 0; j < nc; j++)
            take_config(t, rd_kafka_ConfigEntry_name(ce[j]), rd_kafka_ConfigEntry_value(ce[j]));
    }
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    for (int k = 0; k < nres; k++)
        rd_kafka_ConfigResource_destroy(res[k]);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    return rc;
}

static cJSON *desc_json(const ctl_topic_desc *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", t->suffix);
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddBoolToObject(o, "exists", t->exists);
    if (!t->exists)
        return o;
    cJSON_AddNumberToObject(o, "partitions", t->partitions);
    cJSON_AddNumberToObject(o, "replication", t->replication);
    if (t->cleanup_policy[0])
        cJSON_AddStringToObject(o, "cleanup_policy", t->cleanup_policy);
    else
        cJSON_AddNullToObject(o, "cleanup_policy");
    if (t->retention_ms != LLONG_MIN)
        cJSON_AddNumberToObject(o, "retention_ms", (double)t->retention_ms);
    else
        cJSON_AddNullToObject(o, "retention_ms");
    if (t->min_isr > 0)
        cJSON_AddNumberToObject(o, "min_insync_replicas", t->min_isr);
    else
        cJSON_AddNullToObject(o, "min_insync_replicas");
    return o;
}

static int print_describe(const ctl_ctx *cx, const ctl_topic_desc d[CTL_TOPICS],
                          const ctl_drift *dr, int ndr, err_t *e)
{
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "prefix", cx->cfg->topic_prefix);
        cJSON_AddNumberToObject(doc, "want_partitions", cx->cfg->topic_partitions);
        cJSON_AddNumberToObject(doc, "want_replication", cx->cfg->topic_replication);
        cJSON *ts = cJSON_AddArrayToObject(doc, "topics");
        for (int i = 0; i < CTL_TOPICS; i++)
            cJSON_AddItemToArray(ts, desc_json(&d[i]));
        cJSON *ds = cJSON_AddArrayToObject(doc, "drift");
        for (int i = 0; i < ndr; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "topic", dr[i].topic);
            cJSON_AddStringToObject(o, "kind", dr[i].kind);
            cJSON_AddStringToObject(o, "detail", dr[i].detail);
            cJSON_AddItemToArray(ds, o);
        }
        int rc = ctl_out_json(cx->out, doc, e);
        cJSON_Delete(doc);
        return rc;
    }
    fprintf(cx->out, "%-40s %5s %5s %-14s %14s %7s\n", "TOPIC", "PARTS", "REPL", "CLEANUP",
            "RETENTION_MS", "MIN_ISR");
    for (int i = 0; i < CTL_TOPICS; i++) {
        const ctl_topic_desc *t = &d[i];
        if (!t->exists) {
            fprintf(cx->out, "%-40s %s\n", t->name, "(missing)");
            continue;
        }
        char ret[24] = "-", isr[12] = "-";
        if (t->retention_ms != LLONG_MIN)
            snprintf(ret, sizeof ret, "%lld", t->retention_ms);
        if (t->min_isr > 0)
            snprintf(isr, sizeof isr, "%d", t->min_isr);
        fprintf(cx->out, "%-40s %5d %5d %-14s %14s %7s\n", t->name, t->partitions, t->replication,
                t->cleanup_policy[0] ? t->cleanup_policy : "-", ret, isr);
    }
    if (ndr == 0) {
        fprintf(cx->out, "\nno drift (partitions %d, replication %d)\n", cx->cfg->topic_partitions,
                cx->cfg->topic_replication);
        return 0;
    }
    fprintf(cx->out, "\nDRIFT (%d):\n", ndr);
    for (int i = 0; i < ndr; i++)
        fprintf(cx->out, "  %-12s %-30s %s\n", dr[i].topic, dr[i].kind, dr[i].detail);
    return 0;
}

static int topics_describe(const ctl_ctx *cx, err_t *e)
{
    ctl_topic_desc d[CTL_TOPICS];
    memset(d, 0, sizeof d);
    for (int i = 0; i < CTL_TOPICS; i++) {
        d[i].suffix = kafka_topic_specs[i].suffix;
        d[i].retention_ms = LLONG_MIN;
        if (config_topic(cx->cfg, d[i].suffix, d[i].name, sizeof d[i].name, e) < 0)
            return -1;
    }
    rd_kafka_t *rk = kafka_admin_new(cx->cfg, e);
    if (!rk)
        return -1;
    int rc = describe_metadata(rk, cx->cfg, d, e);
    if (rc == 0)
        rc = describe_configs(rk, cx->cfg, d, e);
    rd_kafka_destroy(rk);
    if (rc < 0)
        return -1;
    ctl_drift dr[CTL_DRIFT_MAX];
    int ndr = ctl_topics_drift(d, cx->cfg->topic_partitions, cx->cfg->topic_replication, dr,
                               CTL_DRIFT_MAX);
    if (print_describe(cx, d, dr, ndr, e) < 0)
        return -1;
    for (int i = 0; i < ndr; i++)
        log_kv(LOGL_WARN, "topic_drift", "topic", dr[i].topic, "kind", dr[i].kind, "detail",
               dr[i].detail);
    if (ndr > 0)
        return err_set(e, ERRC_PERMANENT, "%d drift finding%s", ndr, ndr == 1 ? "" : "s");
    return 0;
}

static int topics_create(const ctl_ctx *cx, err_t *e)
{
    if (kafka_topics_ensure(cx->cfg, e) < 0)
        return -1;
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "prefix", cx->cfg->topic_prefix);
        cJSON *ts = cJSON_AddArrayToObject(doc, "topics");
        for (int i = 0; i < CTL_TOPICS; i++) {
            char name[CTL_TOPIC_NAME];
            if (config_topic(cx->cfg, kafka_topic_specs[i].suffix, name, sizeof name, e) == 0)
                cJSON_AddItemToArray(ts, cJSON_CreateString(name));
        }
        cJSON_AddBoolToObject(doc, "ready", 1);
        int rc = ctl_out_json(cx->out, doc, e);
        cJSON_Delete(doc);
        return rc;
    }
    fprintf(cx->out, "topics ready: %s{callbacks,connections,status,dlq,webhooks}\n",
            cx->cfg->topic_prefix);
    return 0;
}

void ctl_topics_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl topics create [--json]\n"
                 "       oauthqctl topics describe [--json]\n"
                 "\n"
                 "create    create callbacks (delete, 7 d), connections (compact), status\n"
                 "          (compact) and dlq (delete, 14 d) with OAUTHQ_TOPIC_PARTITIONS and\n"
                 "          OAUTHQ_TOPIC_REPLICATION; existing topics are kept as they are.\n"
                 "describe  partitions, replication, cleanup.policy, retention.ms and\n"
                 "          min.insync.replicas of each topic, and drift from what create\n"
                 "          would make: missing topic, wrong cleanup policy, fewer partitions\n"
                 "          or replicas than configured, callbacks/connections/status partition\n"
                 "          counts differing (the worker requires them equal), retention\n"
                 "          below the spec, min.insync.replicas unsafe.\n"
                 "\n"
                 "Exit codes: 0 ok (no drift), 1 Kafka unreachable, 2 drift found or usage\n"
                 "error, 3 configuration error.\n");
}

int ctl_topics_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (ctl_args_parse(argc, argv, CTL_OPT_JSON, clock_wall_ms(), &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (o.npos != 1)
        return err_set(e, ERRC_PERMANENT, "topics: expected create or describe");
    if (strcmp(o.pos[0], "create") == 0)
        return topics_create(&cx, e);
    if (strcmp(o.pos[0], "describe") == 0)
        return topics_describe(&cx, e);
    return err_set(e, ERRC_PERMANENT, "topics: unknown subcommand '%.40s'", o.pos[0]);
}
