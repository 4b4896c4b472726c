/* conn — see conn.h. Pure codecs; any thread. */
#include "common/conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/records.h"

static const char *const status_names[] = {"pending", "connected", "failed", "expired",
                                           "disconnected"};
static const char *const phase_names[] = {NULL, "awaiting_callback", "queued", "exchanging",
                                          "retrying"};
static const char *const reason_names[] = {NULL,
                                           "access_denied",
                                           "invalid_request",
                                           "code_expired",
                                           "code_rejected",
                                           "reconnect_required",
                                           "provider_unavailable",
                                           "misconfigured",
                                           "provider_error",
                                           "malformed_callback"};

const char *conn_status_name(conn_status s)
{
    return (unsigned)s < 5 ? status_names[s] : "pending";
}

const char *conn_phase_name(conn_phase p)
{
    return (unsigned)p < 5 ? phase_names[p] : NULL;
}

const char *conn_reason_name(conn_reason r)
{
    return (unsigned)r < 10 ? reason_names[r] : NULL;
}

const char *conn_message(const conn_t *c)
{
    switch (c->status) {
    case CONN_CONNECTED:
        return "Your account is connected.";
    case CONN_DISCONNECTED:
        return "This account was disconnected.";
    case CONN_EXPIRED:
        return "This connection attempt expired before it was completed. Please connect again.";
    case CONN_PENDING:
        switch (c->phase) {
        case PHASE_AWAITING_CALLBACK:
            return "Waiting for you to approve the connection with the provider.";
        case PHASE_RETRYING:
            return "The provider is slow to answer; we are still trying to finish connecting.";
        default:
            return "Finishing the connection with the provider...";
        }
    case CONN_FAILED:
        break;
    }
    switch (c->reason) {
    case REASON_ACCESS_DENIED:
        return "The connection was not approved. You can try again whenever you are ready.";
    case REASON_CODE_EXPIRED:
        return "The approval expired before we could complete it. Please connect again.";
    case REASON_CODE_REJECTED:
        return "The provider did not accept this approval. Please connect again.";
    case REASON_RECONNECT_REQUIRED:
        if (c->refresh_failed)
            return "The provider no longer accepts this connection. Please connect again.";
        return "We could not confirm the connection with the provider. Please connect again.";
    case REASON_PROVIDER_UNAVAILABLE:
        return "The provider was unavailable. Please try connecting again in a few minutes.";
    case REASON_MISCONFIGURED:
        return "This connection is not set up correctly on our side. Please contact support.";
    case REASON_MALFORMED_CALLBACK:
    case REASON_INVALID_REQUEST:
        return "The provider sent an invalid response. Please connect again.";
    case REASON_PROVIDER_ERROR:
    case REASON_NONE:
        break;
    }
    return "The provider reported an error. Please connect again.";
}

void conn_init(conn_t *c, const char *id, const char *provider, int64_t now_ms)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->provider, sizeof c->provider, "%s", provider);
    c->status = CONN_PENDING;
    c->phase = PHASE_AWAITING_CALLBACK;
    c->created_at_ms = c->updated_at_ms = now_ms;
    c->livemode = -1;
    c->expires_in = -1;
}

int conn_answered(const conn_t *c, const char *hash)
{
    if (!hash || !hash[0])
        return 0;
    for (int i = 0; i < c->nanswered && i < CONN_ANSWERED_MAX; i++)
        if (strcmp(c->answered[i], hash) == 0)
            return 1;
    return 0;
}

void conn_answer(conn_t *c, const char *hash)
{
    if (!hash || !hash[0] || strlen(hash) >= CONN_HASH_MAX || conn_answered(c, hash))
        return;
    if (c->nanswered >= CONN_ANSWERED_MAX) {
        memmove(c->answered[0], c->answered[1], sizeof c->answered[0] * (CONN_ANSWERED_MAX - 1));
        c->nanswered = CONN_ANSWERED_MAX - 1;
    }
    snprintf(c->answered[c->nanswered++], CONN_HASH_MAX, "%s", hash);
}

static void add_time(cJSON *o, const char *k, int64_t ms)
{
    char ts[RECORDS_TIME_MAX];
    records_time_format(ms, ts);
    cJSON_AddStringToObject(o, k, ts);
}

static void add_str_or_null(cJSON *o, const char *k, const char *v)
{
    if (v && v[0])
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

char *conn_encode(const conn_t *c, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", CONN_SCHEMA);
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "provider", c->provider);
    cJSON_AddStringToObject(o, "status", conn_status_name(c->status));
    add_str_or_null(o, "phase", conn_phase_name(c->phase));
    add_str_or_null(o, "reason", conn_reason_name(c->reason));
    cJSON_AddNumberToObject(o, "version", (double)c->version);
    cJSON_AddNumberToObject(o, "created_at_ms", (double)c->created_at_ms);
    cJSON_AddNumberToObject(o, "updated_at_ms", (double)c->updated_at_ms);
    add_str_or_null(o, "code_sha256", c->code_hash);
    add_str_or_null(o, "code_sealed", c->code_sealed);
    add_str_or_null(o, "verifier_sealed", c->verifier_sealed);
    cJSON_AddNumberToObject(o, "received_at_ms", (double)c->received_at_ms);
    cJSON_AddNumberToObject(o, "deadline_ms", (double)c->deadline_ms);
    cJSON_AddNumberToObject(o, "attempts", c->attempts);
    cJSON_AddNumberToObject(o, "unknown_outcomes", c->unknown_outcomes);
    cJSON_AddBoolToObject(o, "claimed", c->claimed);
    add_str_or_null(o, "claimed_by", c->claimed_by);
    cJSON_AddNumberToObject(o, "claimed_at_ms", (double)c->claimed_at_ms);
    cJSON_AddNumberToObject(o, "retry_at_ms", (double)c->retry_at_ms);
    add_str_or_null(o, "last_error", c->last_error);
    cJSON_AddNumberToObject(o, "ignored_codes", c->ignored_codes);
    add_str_or_null(o, "last_ignored_sha256", c->last_ignored_hash);
    add_str_or_null(o, "account_id", c->account_id);
    if (c->livemode < 0)
        cJSON_AddNullToObject(o, "livemode");
    else
        cJSON_AddBoolToObject(o, "livemode", c->livemode);
    add_str_or_null(o, "scope", c->scope);
    add_str_or_null(o, "token_type", c->token_type);
    cJSON_AddNumberToObject(o, "expires_in", (double)c->expires_in);
    cJSON_AddNumberToObject(o, "tokens_at_ms", (double)c->tokens_at_ms);
    add_str_or_null(o, "access_token_sealed", c->access_sealed);
    add_str_or_null(o, "refresh_token_sealed", c->refresh_sealed);
    add_str_or_null(o, "return_to", c->return_to);
    add_str_or_null(o, "callback_error", c->callback_error);
    cJSON *ans = cJSON_AddArrayToObject(o, "answered_sha256");
    for (int i = 0; ans && i < c->nanswered && i < CONN_ANSWERED_MAX; i++)
        cJSON_AddItemToArray(ans, cJSON_CreateString(c->answered[i]));
    connmeta_add(o, &c->meta);
    cJSON_AddNumberToObject(o, "refresh_attempts", c->refresh_attempts);
    cJSON_AddNumberToObject(o, "refresh_unknown_outcomes", c->refresh_unknown);
    cJSON_AddNumberToObject(o, "refreshes", c->refreshes);
    cJSON_AddBoolToObject(o, "refresh_failed", c->refresh_failed);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding connection: out of memory");
    return s;
}

/* First-occurrence index of a record's members, so that the ~50 lookups of
 * conn_decode cost one hash probe each instead of a walk of the member list
 * (cJSON_GetObjectItemCaseSensitive compares the name with every member
 * before it: a strcmp-bound restore of the changelog, SPEC §9). Same answer
 * as cJSON: the first member with that name, NULL when none; an object with
 * more members than the table holds at half load is looked up by cJSON. */
#define FIELDS_SLOTS 128 /* power of two */

typedef struct {
    const cJSON *o;
    const cJSON *slot[FIELDS_SLOTS];
    int fallback; /* too many members: use cJSON's lookup */
} fields;

static unsigned fields_hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h & (FIELDS_SLOTS - 1);
}

static void fields_index(fields *f, const cJSON *o)
{
    memset(f, 0, sizeof *f);
    f->o = o;
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        if (!it->string || ++n > FIELDS_SLOTS / 2) {
            f->fallback = 1; /* (cJSON stops at a nameless member: let it) */
            return;
        }
        unsigned h = fields_hash(it->string);
        while (f->slot[h] && strcmp(f->slot[h]->string, it->string) != 0)
            h = (h + 1) & (FIELDS_SLOTS - 1);
        if (!f->slot[h])
            f->slot[h] = it; /* a later duplicate keeps the first */
    }
}

static const cJSON *fields_get(const fields *f, const char *k)
{
    if (f->fallback)
        return cJSON_GetObjectItemCaseSensitive(f->o, k);
    for (unsigned h = fields_hash(k);; h = (h + 1) & (FIELDS_SLOTS - 1)) {
        if (!f->slot[h])
            return NULL;
        if (strcmp(f->slot[h]->string, k) == 0)
            return f->slot[h];
    }
}

/* String or null field into out[cap]; required fields must be strings. */
static int get_str(const fields *o, const char *k, char *out, size_t cap, int required, err_t *e)
{
    const cJSON *v = fields_get(o, k);
    out[0] = '\0';
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return err_set(e, ERRC_PERMANENT, "connection record: missing %s", k);
        return 0;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return err_set(e, ERRC_PERMANENT, "connection record: bad %s", k);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_num(const fields *o, const char *k, int64_t *out, err_t *e)
{
    const cJSON *v = fields_get(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < -1 || v->valuedouble > 9.0e15)
        return err_set(e, ERRC_PERMANENT, "connection record: bad %s", k);
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* A field older workers did not write (SPEC §6: records restore across versions): absent
 * leaves *out as it is (0 after conn_decode's memset); present, it must pass get_num. */
static int get_opt_num(const fields *o, const char *k, int64_t *out, err_t *e)
{
    return fields_get(o, k) ? get_num(o, k, out, e) : 0;
}

/* A counter into an int: get_num's number in [min, 1e9] (an int, unlike get_num's range);
 * optional counters may be absent (left 0). */
static int get_count(const fields *o, const char *k, int *out, int64_t min, int optional, err_t *e)
{
    int64_t n = 0;
    if (optional && !fields_get(o, k))
        return 0;
    if (get_num(o, k, &n, e) < 0)
        return -1;
    if (n < min || n > 1000000000)
        return err_set(e, ERRC_PERMANENT, "connection record: bad %s", k);
    *out = (int)n;
    return 0;
}

static int lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* The answered code hashes (absent in records of older workers: none; a
 * longer list from a newer worker keeps its newest CONN_ANSWERED_MAX). */
static int decode_answered(const fields *o, conn_t *c, err_t *e)
{
    const cJSON *a = fields_get(o, "answered_sha256");
    if (!a || cJSON_IsNull(a))
        return 0;
    if (!cJSON_IsArray(a))
        return err_set(e, ERRC_PERMANENT, "connection record: bad answered_sha256");
    int n = cJSON_GetArraySize(a), i = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, a)
    {
        if (!cJSON_IsString(h) || !h->valuestring[0] || strlen(h->valuestring) >= CONN_HASH_MAX)
            return err_set(e, ERRC_PERMANENT, "connection record: bad answered_sha256");
        if (i++ >= n - CONN_ANSWERED_MAX)
            conn_answer(c, h->valuestring);
    }
    return 0;
}

int conn_decode(const char *json, size_t len, conn_t *c, err_t *e)
{
    memset(c, 0, sizeof *c);
    cJSON *o = cJSON_ParseWithLength(json, len);
    int rc = -1;
    char schema[32], status[16], phase[24], reason[24];
    if (!cJSON_IsObject(o)) {
        err_set(e, ERRC_PERMANENT, "connection record: not a JSON object");
        goto out;
    }
    /* Unknown fields are tolerated (SPEC §6): a record written by a newer
     * worker still restores; the fields this version needs are checked. */
    fields f;
    fields_index(&f, o);
    if (get_str(&f, "schema", schema, sizeof schema, 1, e) < 0)
        goto out;
    if (strcmp(schema, CONN_SCHEMA) != 0) {
        err_set(e, ERRC_PERMANENT, "connection record: schema %.32s", schema);
        goto out;
    }
    if (get_str(&f, "id", c->id, sizeof c->id, 1, e) < 0 ||
        get_str(&f, "provider", c->provider, sizeof c->provider, 1, e) < 0 ||
        get_str(&f, "status", status, sizeof status, 1, e) < 0 ||
        get_str(&f, "phase", phase, sizeof phase, 0, e) < 0 ||
        get_str(&f, "reason", reason, sizeof reason, 0, e) < 0 ||
        get_str(&f, "code_sha256", c->code_hash, sizeof c->code_hash, 0, e) < 0 ||
        get_str(&f, "code_sealed", c->code_sealed, sizeof c->code_sealed, 0, e) < 0 ||
        get_str(&f, "verifier_sealed", c->verifier_sealed, sizeof c->verifier_sealed, 0, e) < 0 ||
        get_str(&f, "last_error", c->last_error, sizeof c->last_error, 0, e) < 0 ||
        get_str(&f, "last_ignored_sha256", c->last_ignored_hash, sizeof c->last_ignored_hash, 0,
                e) < 0 ||
        get_str(&f, "account_id", c->account_id, sizeof c->account_id, 0, e) < 0 ||
        get_str(&f, "scope", c->scope, sizeof c->scope, 0, e) < 0 ||
        get_str(&f, "token_type", c->token_type, sizeof c->token_type, 0, e) < 0 ||
        get_str(&f, "access_token_sealed", c->access_sealed, sizeof c->access_sealed, 0, e) < 0 ||
        get_str(&f, "refresh_token_sealed", c->refresh_sealed, sizeof c->refresh_sealed, 0, e) <
            0 ||
        get_str(&f, "return_to", c->return_to, sizeof c->return_to, 0, e) < 0 ||
        get_str(&f, "callback_error", c->callback_error, sizeof c->callback_error, 0, e) < 0 ||
        connmeta_from(o, 0, &c->meta, e) < 0)
        goto out;
    int si = lookup(status_names, 5, status);
    int pi = phase[0] ? lookup(phase_names, 5, phase) : 0;
    int ri = reason[0] ? lookup(reason_names, 10, reason) : 0;
    if (si < 0 || pi < 0 || ri < 0) {
        err_set(e, ERRC_PERMANENT, "connection record: bad status, phase or reason");
        goto out;
    }
    c->status = (conn_status)si;
    c->phase = (conn_phase)pi;
    c->reason = (conn_reason)ri;
    if (get_num(&f, "version", &c->version, e) < 0 ||
        get_num(&f, "created_at_ms", &c->created_at_ms, e) < 0 ||
        get_num(&f, "updated_at_ms", &c->updated_at_ms, e) < 0 ||
        get_num(&f, "received_at_ms", &c->received_at_ms, e) < 0 ||
        get_num(&f, "deadline_ms", &c->deadline_ms, e) < 0 ||
        get_num(&f, "retry_at_ms", &c->retry_at_ms, e) < 0 ||
        get_num(&f, "expires_in", &c->expires_in, e) < 0)
        goto out;
    /* Absent in records of older workers: tokens_at_ms (0 = unknown), the refresh
     * counters (none yet) and the claim's lease (0 / ""). */
    if (get_opt_num(&f, "tokens_at_ms", &c->tokens_at_ms, e) < 0 ||
        get_opt_num(&f, "claimed_at_ms", &c->claimed_at_ms, e) < 0 ||
        get_count(&f, "refresh_attempts", &c->refresh_attempts, 0, 1, e) < 0 ||
        get_count(&f, "refresh_unknown_outcomes", &c->refresh_unknown, 0, 1, e) < 0 ||
        get_count(&f, "refreshes", &c->refreshes, 0, 1, e) < 0 ||
        get_count(&f, "attempts", &c->attempts, -1, 0, e) < 0 ||
        get_count(&f, "unknown_outcomes", &c->unknown_outcomes, -1, 0, e) < 0 ||
        get_count(&f, "ignored_codes", &c->ignored_codes, -1, 0, e) < 0)
        goto out;
    const cJSON *rf = fields_get(&f, "refresh_failed");
    if (rf && !cJSON_IsBool(rf)) {
        err_set(e, ERRC_PERMANENT, "connection record: bad refresh_failed");
        goto out;
    }
    c->refresh_failed = cJSON_IsTrue(rf) ? 1 : 0;
    const cJSON *cl = fields_get(&f, "claimed");
    const cJSON *lm = fields_get(&f, "livemode");
    if (!cJSON_IsBool(cl) || !(cJSON_IsBool(lm) || cJSON_IsNull(lm))) {
        err_set(e, ERRC_PERMANENT, "connection record: bad claimed or livemode");
        goto out;
    }
    c->claimed = cJSON_IsTrue(cl);
    if (get_str(&f, "claimed_by", c->claimed_by, sizeof c->claimed_by, 0, e) < 0)
        goto out;
    c->livemode = cJSON_IsNull(lm) ? -1 : cJSON_IsTrue(lm);
    if (decode_answered(&f, c, e) < 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

uint64_t conn_public_hash(const conn_t *c)
{
    /* The fields conn_status_json prints, in its order (keep in step). */
    uint64_t h = 14695981039346656037ULL;
    int st = (int)c->status, ph = c->status == CONN_PENDING ? (int)c->phase : -1,
        rs = c->status == CONN_FAILED ? (int)c->reason : -1;
    h = fnv_str(h, c->provider);
    h = fnv(h, &st, sizeof st);
    h = fnv(h, &ph, sizeof ph);
    h = fnv(h, &rs, sizeof rs);
    h = fnv_str(h, conn_message(c));
    if (c->status == CONN_CONNECTED && c->account_id[0]) {
        h = fnv_str(h, c->account_id);
        h = fnv(h, &c->livemode, sizeof c->livemode);
        h = fnv_str(h, c->scope);
    }
    h = fnv(h, &c->attempts, sizeof c->attempts);
    h = fnv(h, &c->created_at_ms, sizeof c->created_at_ms);
    int during = c->status == CONN_FAILED && c->refresh_failed;
    h = fnv(h, &during, sizeof during);
    return fnv_str(h, c->meta.json);
}

char *conn_status_json(const conn_t *c, err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", STATUS_SCHEMA);
    cJSON_AddStringToObject(o, "id", c->id);
    cJSON_AddStringToObject(o, "provider", c->provider);
    cJSON_AddStringToObject(o, "status", conn_status_name(c->status));
    add_str_or_null(o, "phase", c->status == CONN_PENDING ? conn_phase_name(c->phase) : NULL);
    add_str_or_null(o, "reason", c->status == CONN_FAILED ? conn_reason_name(c->reason) : NULL);
    cJSON_AddStringToObject(o, "message", conn_message(c));
    /* Tells the webhook dispatcher that this failure is a refresh's
     * (connection.refresh_failed); not part of the public document. */
    if (c->status == CONN_FAILED && c->refresh_failed)
        cJSON_AddStringToObject(o, "failed_during", "refresh");
    if (c->status == CONN_CONNECTED && c->account_id[0]) {
        cJSON *a = cJSON_AddObjectToObject(o, "account");
        cJSON_AddStringToObject(a, "id", c->account_id);
        if (c->livemode < 0)
            cJSON_AddNullToObject(a, "livemode");
        else
            cJSON_AddBoolToObject(a, "livemode", c->livemode);
        add_str_or_null(a, "scope", c->scope);
    } else {
        cJSON_AddNullToObject(o, "account");
    }
    cJSON_AddNumberToObject(o, "attempts", c->attempts);
    add_time(o, "created_at", c->created_at_ms);
    add_time(o, "updated_at", c->updated_at_ms);
    cJSON_AddNumberToObject(o, "version", (double)c->version);
    connmeta_add(o, &c->meta); /* for the platform view and webhooks, not the public doc */
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding status: out of memory");
    return s;
}

char *conn_dlq_json(const char *reason, const char *topic, int32_t partition, int64_t offset,
                    const char *key, size_t key_len, const char *original, size_t orig_len,
                    int attempts, const char *first_error, const char *last_error, int64_t now_ms,
                    err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "schema", DLQ_SCHEMA);
    cJSON_AddStringToObject(o, "reason", reason);
    cJSON_AddStringToObject(o, "source_topic", topic);
    cJSON_AddNumberToObject(o, "partition", partition);
    cJSON_AddNumberToObject(o, "offset", (double)offset);
    /* Key and original bytes may be anything: carried as bounded strings
     * with invalid bytes replaced, so the DLQ record is always valid JSON. */
    char kbuf[256], *obuf = malloc(orig_len + 1);
    if (!obuf) {
        cJSON_Delete(o);
        err_set(e, ERRC_FATAL, "dlq: out of memory");
        return NULL;
    }
    size_t kn = key_len < sizeof kbuf - 1 ? key_len : sizeof kbuf - 1;
    for (size_t i = 0; i < kn; i++)
        kbuf[i] = ((unsigned char)key[i] >= 0x20 && (unsigned char)key[i] < 0x7f) ? key[i] : '?';
    kbuf[kn] = '\0';
    for (size_t i = 0; i < orig_len; i++)
        obuf[i] = ((unsigned char)original[i] >= 0x20 && (unsigned char)original[i] < 0x7f)
                      ? original[i]
                      : '?';
    obuf[orig_len] = '\0';
    if (key)
        cJSON_AddStringToObject(o, "key", kbuf);
    else
        cJSON_AddNullToObject(o, "key");
    if (original)
        cJSON_AddStringToObject(o, "original", obuf);
    else
        cJSON_AddNullToObject(o, "original");
    free(obuf);
    cJSON_AddNumberToObject(o, "attempts", attempts);
    cJSON_AddStringToObject(o, "first_error", first_error ? first_error : reason);
    cJSON_AddStringToObject(o, "last_error", last_error ? last_error : reason);
    add_time(o, "at", now_ms);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        err_set(e, ERRC_FATAL, "encoding dlq: out of memory");
    return s;
}
