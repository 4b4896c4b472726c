/* ctl_dlq — see ctl_dlq.h. Single-threaded. */
#include "ctl/ctl_dlq.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/connrec.h"
#include "common/kafka.h"
#include "common/log.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_scan.h"

#define KEY_MAX 64 /* longest secret-looking key name we test */

int ctl_dlq_entry_from(const cJSON *rec, ctl_dlq_entry *d)
{
    connrec_dlq r;
    if (connrec_dlq_from(rec, &r, NULL) < 0)
        return -1;
    d->reason = r.reason;
    d->source_topic = r.source_topic;
    d->key = r.key;
    d->original = r.original;
    d->first_error = r.first_error;
    d->last_error = r.last_error;
    d->at = r.at;
    d->at_ms = r.at_ms;
    d->source_partition = r.source_partition;
    d->source_offset = r.source_offset;
    d->attempts = r.attempts;
    return 0;
}

int ctl_dlq_match(const ctl_dlq_entry *d, const ctl_dlq_filter *f)
{
    if (f->since_ms > 0 && d->at_ms < f->since_ms)
        return 0;
    if (f->reason_prefix && f->reason_prefix[0] &&
        (!d->reason || strncmp(d->reason, f->reason_prefix, strlen(f->reason_prefix)) != 0))
        return 0;
    return 1;
}

/* ---- redaction ------------------------------------------------------------ */

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int secret_name(const char *s, size_t n)
{
    char k[KEY_MAX + 1];
    if (n == 0 || n > KEY_MAX)
        return 0;
    memcpy(k, s, n);
    k[n] = '\0';
    return log_key_is_secret(k);
}

/* Textual scrub: `"name" : "value"` / `"name": value` and `name=value`
 * with a secret name get the value replaced; everything else is copied.
 * Escaped quotes (\") inside strings are handled, so a JSON document
 * embedded in a string is scrubbed too. */
static char *scrub_text(const char *s, size_t n)
{
    buf_t b;
    /* Each input byte yields at most itself or a redaction marker. */
    buf_init(&b, n * (sizeof CTL_REDACTED + 1) + 16, 0);
    size_t i = 0;
    while (i < n && !buf_error(&b)) {
        if (s[i] == '"' || (s[i] == '\\' && i + 1 < n && s[i + 1] == '"')) {
            /* A quoted name: "name" or \"name\" (inside a JSON string). */
            int esc = s[i] == '\\';
            size_t q0 = i + (esc ? 2 : 1), q = q0;
            while (q < n && is_ident(s[q]))
                q++;
            size_t close = esc ? (q + 1 < n && s[q] == '\\' && s[q + 1] == '"' ? q + 2 : 0)
                               : (q < n && s[q] == '"' ? q + 1 : 0);
            if (close && secret_name(s + q0, q - q0)) {
                size_t j = close;
                while (j < n && (s[j] == ' ' || s[j] == '\t'))
                    j++;
                if (j < n && s[j] == ':') {
                    j++;
                    while (j < n && (s[j] == ' ' || s[j] == '\t'))
                        j++;
                    buf_add(&b, s + i, j - i);
                    if (j < n && (s[j] == '"' || (s[j] == '\\' && j + 1 < n && s[j + 1] == '"'))) {
                        int vesc = s[j] == '\\';
                        buf_add(&b, s + j, vesc ? 2 : 1);
                        j += vesc ? 2 : 1;
                        buf_add(&b, CTL_REDACTED, strlen(CTL_REDACTED));
                        /* Skip to the closing quote of the value. */
                        while (j < n) {
                            if (!vesc && s[j] == '\\' && j + 1 < n) {
                                j += 2;
                                continue;
                            }
                            if (vesc && s[j] == '\\' && j + 1 < n && s[j + 1] == '"')
                                break;
                            if (!vesc && s[j] == '"')
                                break;
                            j++;
                        }
                    } else {
                        buf_add(&b, CTL_REDACTED, strlen(CTL_REDACTED));
                        while (j < n && s[j] != ',' && s[j] != '}' && s[j] != ']')
                            j++;
                    }
                    i = j;
                    continue;
                }
            }
            buf_add(&b, s + i, esc ? 2 : 1);
            i += esc ? 2 : 1;
            continue;
        }
        if (is_ident(s[i]) && (i == 0 || !is_ident(s[i - 1]))) {
            size_t j = i;
            while (j < n && is_ident(s[j]))
                j++;
            buf_add(&b, s + i, j - i);
            if (j < n && s[j] == '=' && secret_name(s + i, j - i)) {
                buf_add(&b, "=", 1);
                buf_add(&b, CTL_REDACTED, strlen(CTL_REDACTED));
                j++;
                while (j < n && s[j] != '&' && s[j] != '"' && s[j] != ' ' && s[j] != '\\' &&
                       s[j] != ',' && s[j] != '}')
                    j++;
            }
            i = j;
            continue;
        }
        buf_add(&b, s + i, 1);
        i++;
    }
    return buf_take(&b, NULL);
}

/* Put r in place of it inside node, keeping its member name (ViaPointer
 * keeps duplicate keys apart; it does not copy the name). */
static int replace(cJSON *node, cJSON *it, cJSON *r)
{
    if (!r)
        return -1;
    if (it->string) {
        r->string = strdup(it->string);
        if (!r->string) {
            cJSON_Delete(r);
            return -1;
        }
    }
    if (!cJSON_ReplaceItemViaPointer(node, it, r)) {
        cJSON_Delete(r);
        return -1;
    }
    return 0;
}

/* Replace secret-named values anywhere in the tree; scrub every other
 * string as text. Returns -1 when out of memory. */
static int redact_tree(cJSON *node)
{
    for (cJSON *it = node->child; it; it = it->next) {
        if (it->string && secret_name(it->string, strlen(it->string)) && !cJSON_IsNull(it)) {
            cJSON *r = cJSON_CreateString(CTL_REDACTED);
            if (replace(node, it, r) < 0)
                return -1;
            it = r;
            continue;
        }
        if (cJSON_IsString(it)) {
            char *clean = scrub_text(it->valuestring, strlen(it->valuestring));
            if (!clean)
                return -1;
            if (strcmp(clean, it->valuestring) != 0) {
                cJSON *r = cJSON_CreateString(clean);
                if (replace(node, it, r) < 0) {
                    free(clean);
                    return -1;
                }
                it = r;
            }
            free(clean);
        } else if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && redact_tree(it) < 0) {
            return -1;
        }
    }
    return 0;
}

char *ctl_dlq_redact(const char *original, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(original, len);
    if (o && (cJSON_IsObject(o) || cJSON_IsArray(o))) {
        char *s = NULL;
        if (redact_tree(o) == 0)
            s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        return s;
    }
    cJSON_Delete(o);
    return scrub_text(original, len);
}

/* ---- scanning ------------------------------------------------------------- */

typedef struct {
    const ctl_dlq_filter *f;
    ctl_dlq_fn fn;
    void *ud;
    long matched, unreadable;
} dlq_scan;

static int on_dlq(const ctl_scan_rec *r, void *ud)
{
    dlq_scan *s = ud;
    if (!r->value) {
        s->unreadable++;
        return 0;
    }
    cJSON *o = cJSON_ParseWithLength(r->value, r->value_len);
    ctl_dlq_entry d;
    memset(&d, 0, sizeof d);
    d.partition = r->partition;
    d.offset = r->offset;
    int rc = 0;
    if (ctl_dlq_entry_from(o, &d) < 0) {
        s->unreadable++;
    } else if (ctl_dlq_match(&d, s->f)) {
        s->matched++;
        rc = s->fn(&d, s->ud);
        if (rc == 0 && s->f->limit > 0 && s->matched >= s->f->limit)
            rc = 1;
    }
    cJSON_Delete(o);
    return rc;
}

long ctl_dlq_scan(const config_t *c, const ctl_dlq_filter *f, ctl_dlq_fn fn, void *ud,
                  long *unreadable, err_t *e)
{
    char topic[256];
    if (config_topic(c, KAFKA_TOPIC_DLQ, topic, sizeof topic, e) < 0)
        return -1;
    dlq_scan s = {f, fn, ud, 0, 0};
    if (ctl_scan_topic(c, topic, -1, 0, on_dlq, &s, e) < 0)
        return -1;
    if (unreadable)
        *unreadable = s.unreadable;
    return s.matched;
}

/* ---- list ----------------------------------------------------------------- */

typedef struct {
    cJSON **items;
    long n, cap;
    int oom;
} dlq_list;

static cJSON *summary(const ctl_dlq_entry *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "partition", d->partition);
    cJSON_AddNumberToObject(o, "offset", (double)d->offset);
    if (d->at)
        cJSON_AddStringToObject(o, "at", d->at);
    else
        cJSON_AddNullToObject(o, "at");
    if (d->key)
        cJSON_AddStringToObject(o, "key", d->key);
    else
        cJSON_AddNullToObject(o, "key");
    cJSON_AddStringToObject(o, "reason", d->reason ? d->reason : "");
    if (d->source_topic)
        cJSON_AddStringToObject(o, "source_topic", d->source_topic);
    else
        cJSON_AddNullToObject(o, "source_topic");
    cJSON_AddNumberToObject(o, "source_partition", (double)d->source_partition);
    cJSON_AddNumberToObject(o, "source_offset", (double)d->source_offset);
    cJSON_AddNumberToObject(o, "attempts", d->attempts);
    cJSON_AddBoolToObject(o, "has_original", d->original != NULL);
    cJSON_AddNumberToObject(o, "_at_ms", (double)d->at_ms); /* sort key, removed */
    return o;
}

static int on_list(const ctl_dlq_entry *d, void *ud)
{
    dlq_list *l = ud;
    if (l->n == l->cap) {
        long cap = l->cap ? l->cap * 2 : 64;
        cJSON **p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) {
            l->oom = 1;
            return -1;
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = summary(d);
    return 0;
}

static int by_time(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    double tx = cJSON_GetObjectItem(x, "_at_ms")->valuedouble;
    double ty = cJSON_GetObjectItem(y, "_at_ms")->valuedouble;
    if (tx != ty)
        return tx < ty ? -1 : 1;
    double px = cJSON_GetObjectItem(x, "partition")->valuedouble;
    double py = cJSON_GetObjectItem(y, "partition")->valuedouble;
    if (px != py)
        return px < py ? -1 : 1;
    double ox = cJSON_GetObjectItem(x, "offset")->valuedouble;
    double oy = cJSON_GetObjectItem(y, "offset")->valuedouble;
    return ox < oy ? -1 : ox > oy;
}

static int dlq_list_run(const ctl_ctx *cx, const ctl_opts *o, err_t *e)
{
    ctl_dlq_filter f = {(o->seen & CTL_OPT_SINCE) ? o->since_ms : 0, o->reason,
                        (o->seen & CTL_OPT_LIMIT) ? o->limit : CTL_DLQ_LIMIT_DEF};
    dlq_list l = {0};
    long unreadable = 0;
    long n = ctl_dlq_scan(cx->cfg, &f, on_list, &l, &unreadable, e);
    int rc = 0;
    if (n < 0) {
        if (l.oom)
            err_set(e, ERRC_FATAL, "listing dlq: out of memory");
        rc = -1;
        goto out;
    }
    if (l.n > 1) /* qsort must not get a NULL base, even for 0 items */
        qsort(l.items, (size_t)l.n, sizeof *l.items, by_time);
    for (long i = 0; i < l.n; i++)
        cJSON_DeleteItemFromObject(l.items[i], "_at_ms");
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        char topic[256];
        config_topic(cx->cfg, KAFKA_TOPIC_DLQ, topic, sizeof topic, NULL);
        cJSON_AddStringToObject(doc, "topic", topic);
        cJSON_AddNumberToObject(doc, "count", (double)l.n);
        cJSON_AddBoolToObject(doc, "limit_reached", l.n >= f.limit);
        cJSON_AddNumberToObject(doc, "unreadable", (double)unreadable);
        cJSON *arr = cJSON_AddArrayToObject(doc, "records");
        for (long i = 0; i < l.n; i++) {
            cJSON_AddItemToArray(arr, l.items[i]);
            l.items[i] = NULL;
        }
        rc = ctl_out_json(cx->out, doc, e);
        cJSON_Delete(doc);
        goto out;
    }
    fprintf(cx->out, "%-10s %-24s %-40s %s\n", "PART:OFF", "AT", "KEY", "REASON");
    for (long i = 0; i < l.n; i++) {
        char po[48], at[40], key[260], reason[420];
        snprintf(po, sizeof po, "%.0f:%.0f",
                 cJSON_GetObjectItem(l.items[i], "partition")->valuedouble,
                 cJSON_GetObjectItem(l.items[i], "offset")->valuedouble);
        fprintf(cx->out, "%-10s %-24s %-40s %s\n", po,
                ctl_out_cell(l.items[i], "at", at, sizeof at),
                ctl_out_cell(l.items[i], "key", key, sizeof key),
                ctl_out_cell(l.items[i], "reason", reason, sizeof reason));
    }
    fprintf(cx->out, "%ld record%s%s%s\n", l.n, l.n == 1 ? "" : "s",
            l.n >= f.limit ? " (limit reached; use --limit)" : "",
            unreadable ? " (some records unreadable)" : "");
out:
    for (long i = 0; i < l.n; i++)
        cJSON_Delete(l.items[i]);
    free(l.items);
    return rc;
}

/* ---- show ----------------------------------------------------------------- */

typedef struct {
    int64_t want;
    cJSON *doc; /* what to print */
    int found;
} dlq_show;

static int on_show(const ctl_scan_rec *r, void *ud)
{
    dlq_show *s = ud;
    if (r->offset != s->want)
        return 1; /* the wanted offset is gone (retention) or was a marker */
    s->found = 1;
    cJSON *rec = r->value ? cJSON_ParseWithLength(r->value, r->value_len) : NULL;
    if (!cJSON_IsObject(rec)) {
        cJSON_Delete(rec);
        rec = cJSON_CreateObject();
        char *clean = r->value ? ctl_dlq_redact(r->value, r->value_len) : NULL;
        cJSON_AddStringToObject(rec, "unreadable", clean ? clean : "");
        free(clean);
    } else {
        const cJSON *orig = cJSON_GetObjectItemCaseSensitive(rec, "original");
        if (cJSON_IsString(orig)) {
            char *clean = ctl_dlq_redact(orig->valuestring, strlen(orig->valuestring));
            cJSON_ReplaceItemInObjectCaseSensitive(
                rec, "original", cJSON_CreateString(clean ? clean : CTL_REDACTED));
            free(clean);
        } else if (orig && !cJSON_IsNull(orig)) {
            cJSON_ReplaceItemInObjectCaseSensitive(rec, "original",
                                                   cJSON_CreateString(CTL_REDACTED));
        }
    }
    cJSON_AddNumberToObject(rec, "dlq_partition", r->partition);
    cJSON_AddNumberToObject(rec, "dlq_offset", (double)r->offset);
    s->doc = rec;
    return 1;
}

static int dlq_show_run(const ctl_ctx *cx, const char *where, err_t *e)
{
    int32_t part;
    int64_t off;
    if (ctl_args_partoff(where, &part, &off, e) < 0)
        return -1;
    char topic[256];
    if (config_topic(cx->cfg, KAFKA_TOPIC_DLQ, topic, sizeof topic, e) < 0)
        return -1;
    dlq_show s = {off, NULL, 0};
    if (ctl_scan_topic(cx->cfg, topic, part, off, on_show, &s, e) < 0)
        return -1;
    if (!s.found)
        return err_set(e, ERRC_PERMANENT, "no dlq record at %d:%lld in %s", part, (long long)off,
                       topic);
    int rc = 0;
    if (cx->json) {
        rc = ctl_out_json(cx->out, s.doc, e);
    } else {
        char buf[1024];
        for (const cJSON *it = s.doc->child; it; it = it->next) {
            if (strcmp(it->string, "original") == 0)
                continue;
            fprintf(cx->out, "%-14s %s\n", it->string,
                    ctl_out_cell(s.doc, it->string, buf, sizeof buf));
        }
        const cJSON *orig = cJSON_GetObjectItemCaseSensitive(s.doc, "original");
        fprintf(cx->out, "%-14s %s\n", "original", cJSON_IsString(orig) ? orig->valuestring : "-");
    }
    cJSON_Delete(s.doc);
    return rc;
}

int ctl_dlq_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (argc < 1)
        return err_set(e, ERRC_PERMANENT, "dlq: expected list or show");
    int list = strcmp(argv[0], "list") == 0;
    if (!list && strcmp(argv[0], "show") != 0)
        return err_set(e, ERRC_PERMANENT, "dlq: unknown subcommand '%.40s'", argv[0]);
    unsigned allowed = CTL_OPT_JSON | (list ? CTL_OPT_SINCE | CTL_OPT_REASON | CTL_OPT_LIMIT : 0);
    if (ctl_args_parse(argc - 1, argv + 1, allowed, clock_wall_ms(), &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (list) {
        if (o.npos != 0)
            return err_set(e, ERRC_PERMANENT, "dlq list: unexpected argument '%.40s'", o.pos[0]);
        return dlq_list_run(&cx, &o, e);
    }
    if (o.npos != 1)
        return err_set(e, ERRC_PERMANENT, "dlq show: expected PARTITION:OFFSET");
    return dlq_show_run(&cx, o.pos[0], e);
}

void ctl_dlq_help(FILE *out)
{
    fprintf(out,
            "usage: oauthqctl dlq list [--since T] [--reason PREFIX] [--limit N] [--json]\n"
            "       oauthqctl dlq show PARTITION:OFFSET [--json]\n"
            "\n"
            "list  the dead-letter records (position, time, key, reason), oldest first;\n"
            "      never their original bytes. --since: RFC 3339 time or an age (15m,\n"
            "      2h, 7d); --reason: reason prefix; --limit: at most N (default %ld).\n"
            "show  one record in full; values named like secrets (code, code_verifier,\n"
            "      tokens, state) inside `original` print as %s.\n"
            "\n"
            "Exit codes: 0 ok, 1 Kafka unreachable, 2 not found or usage error,\n"
            "3 configuration error.\n",
            CTL_DLQ_LIMIT_DEF, CTL_REDACTED);
}
