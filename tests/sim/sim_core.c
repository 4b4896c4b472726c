/*
 * sim_core — see sim_core.h. Pure decisions over in-memory state; the only
 * outside calls are OpenSSL (RAND_bytes, SHA-256) and cJSON. One mutex
 * guards all state. Codes are never stored: records are keyed by the
 * lowercase hex sha256 of the code, which is also the stats key.
 */
#include "tests/sim/sim_core.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/buf.h"

#define FORM_MAX_PARAMS 32
#define FORM_MAX_BYTES  65536
#define STATE_MAX       1024
#define CODE_RAND_LEN   32
#define TOKEN_RAND_LEN  32
#define ACCT_RAND_LEN   16
#define ACCT_MAX        32
#define TBL_MIN_BUCKETS 1024

static const char JSON_CT[] = "application/json";
static const char REUSE_DESC[] = "This authorization code has already been used. All tokens "
                                 "issued with this code have been revoked.";

typedef enum {
    GRANT_NONE = 0,
    GRANT_ACTIVE,
    GRANT_REVOKED,
    GRANT_DEAUTHORIZED,
} grant_state;

/* One record per code hash: the issued code (if we issued it), its grant,
 * and its token-request counters. A refresh token is a record too (is_rt):
 * keyed by the hash of the refresh token, in the family of the grant whose
 * account is acct (looked up in by_acct, never a pointer: the grant record
 * may be evicted), with its own request counter. */
typedef struct ent {
    char hash[65];
    struct ent *hnext;         /* chain in by_hash */
    struct ent *anext;         /* chain in by_acct (only with a grant) */
    struct ent *older, *newer; /* insertion order, for eviction */
    int issued, consumed, dead, fault_pending, has_challenge;
    int64_t issued_ms;
    char *redirect_uri;
    char challenge[44];
    char scope[16];
    sim_core_fault fault;
    long fault_ms;
    uint64_t token_requests;
    uint64_t after_consumed; /* token requests that found the code already consumed */
    int last_status;         /* -1: no token request yet */
    grant_state grant;
    char acct[ACCT_MAX];
    int is_rt, rotated;        /* refresh-token record; rotated out */
    uint64_t refresh_requests; /* refresh requests naming this token */
    sim_core_fault rfault;     /* code: fault for its first refresh token */
    long rfault_ms;
} ent;

typedef struct {
    ent **b;
    size_t nb;
    size_t n;
} tbl;

enum { BY_HASH = 0, BY_ACCT = 1 };

struct sim_core {
    pthread_mutex_t mu;
    char *client_id;
    char *client_secret;
    char **redirect_uris;
    size_t n_redirect_uris;
    int64_t code_ttl_ms;
    long latency_ms;
    size_t max_codes;
    int64_t access_ttl_ms;
    int rotation;
    tbl by_hash, by_acct;
    ent *oldest, *newest;
    size_t n_ents;
    uint64_t token_requests;
    uint64_t grants_active, grants_revoked, grants_deauthorized;
};

typedef struct {
    const char *k[FORM_MAX_PARAMS];
    const char *v[FORM_MAX_PARAMS];
    size_t n;
    char *buf;
} form;

/* ---- small helpers ------------------------------------------------------ */

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int is_unreserved(int ch)
{
    return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Decode application/x-www-form-urlencoded bytes ('+' is space, %XX) into
 * out (cap includes the NUL). Rejects raw controls/space, bad escapes, NUL. */
static int url_decode(const char *in, size_t len, char *out, size_t cap, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        int dec;
        if (ch == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval((unsigned char)in[i + 1]), lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            dec = hi * 16 + lo;
            if (dec == 0)
                return -1;
            i += 2;
        } else if (ch == '+') {
            dec = ' ';
        } else if (ch <= 0x20 || ch == 0x7f) {
            return -1;
        } else {
            dec = ch;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)dec;
    }
    if (o >= cap)
        return -1;
    out[o] = '\0';
    if (outlen)
        *outlen = o;
    return 0;
}

/* Parse a urlencoded string; 0, -1 malformed/duplicate/too many, -2 OOM. */
static int form_parse(const char *s, size_t len, form *f)
{
    memset(f, 0, sizeof *f);
    if (len > FORM_MAX_BYTES)
        return -1;
    size_t cap = len + 2 * FORM_MAX_PARAMS + 1;
    f->buf = malloc(cap);
    if (!f->buf)
        return -2;
    size_t used = 0, i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != '&')
            j++;
        if (j > i) {
            if (f->n == FORM_MAX_PARAMS)
                return -1;
            const char *eq = memchr(s + i, '=', j - i);
            size_t klen = eq ? (size_t)(eq - (s + i)) : j - i;
            const char *vs = eq ? eq + 1 : s + j;
            size_t vlen = eq ? (size_t)(s + j - vs) : 0;
            size_t kout = 0, vout = 0;
            char *k = f->buf + used;
            if (url_decode(s + i, klen, k, cap - used, &kout) != 0 || kout == 0)
                return -1;
            used += kout + 1;
            char *v = f->buf + used;
            if (url_decode(vs, vlen, v, cap - used, &vout) != 0)
                return -1;
            used += vout + 1;
            for (size_t p = 0; p < f->n; p++)
                if (strcmp(f->k[p], k) == 0)
                    return -1;
            f->k[f->n] = k;
            f->v[f->n] = v;
            f->n++;
        }
        i = j + 1;
    }
    return 0;
}

static void form_free(form *f)
{
    free(f->buf);
    f->buf = NULL;
    f->n = 0;
}

static const char *form_get(const form *f, const char *k)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->k[i], k) == 0)
            return f->v[i];
    return NULL;
}

/* Random [A-Za-z0-9]{n} into out[n+1] from RAND_bytes (rejection sampling). */
static int rand_alnum(char *out, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char buf[64];
    size_t i = 0;
    while (i < n) {
        if (RAND_bytes(buf, (int)sizeof buf) != 1)
            return -1;
        for (size_t j = 0; j < sizeof buf && i < n; j++)
            if (buf[j] < 248)
                out[i++] = A[buf[j] % 62];
    }
    out[n] = '\0';
    return 0;
}

static int sha256(const void *data, size_t len, unsigned char md[32])
{
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    return 0;
}

int sim_core_sha256_hex(const char *s, size_t len, char out[65])
{
    static const char H[] = "0123456789abcdef";
    unsigned char md[32];
    if (sha256(s, len, md) != 0)
        return -1;
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = H[md[i] >> 4];
        out[2 * i + 1] = H[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

/* base64url without padding of 32 bytes → 43 chars + NUL. */
static void b64url32(const unsigned char in[32], char out[44])
{
    static const char B[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 3 <= 32; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = B[(v >> 18) & 63];
        out[o++] = B[(v >> 12) & 63];
        out[o++] = B[(v >> 6) & 63];
        out[o++] = B[v & 63];
    }
    unsigned v = (unsigned)in[30] << 16 | (unsigned)in[31] << 8; /* 2 bytes remain */
    out[o++] = B[(v >> 18) & 63];
    out[o++] = B[(v >> 12) & 63];
    out[o++] = B[(v >> 6) & 63];
    out[o] = '\0';
}

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Strict standard base64 (padded) decode; 0 or -1. */
static int b64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
    if (len == 0 || len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = in[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad)
                return -1;
            v[k] = b64val((unsigned char)ch);
            if (v[k] < 0)
                return -1;
        }
        unsigned w =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        size_t nb = 3 - (size_t)pad;
        if (o + nb > cap)
            return -1;
        out[o++] = (unsigned char)(w >> 16);
        if (nb > 1)
            out[o++] = (unsigned char)(w >> 8);
        if (nb > 2)
            out[o++] = (unsigned char)w;
    }
    *outlen = o;
    return 0;
}

int sim_core_parse_basic(const char *header, char *user, size_t user_cap, char *pass,
                         size_t pass_cap)
{
    if (!header || strncasecmp(header, "Basic", 5) != 0 || header[5] != ' ')
        return -1;
    const char *p = header + 5;
    while (*p == ' ')
        p++;
    size_t len = strlen(p);
    while (len > 0 && p[len - 1] == ' ')
        len--;
    unsigned char raw[2 * SIM_CORE_ID_MAX + 4];
    size_t rawlen = 0;
    if (len > 4 * (sizeof raw / 3) || b64_decode(p, len, raw, sizeof raw, &rawlen) != 0)
        return -1;
    const unsigned char *colon = memchr(raw, ':', rawlen);
    if (!colon)
        return -1;
    for (size_t i = 0; i < rawlen; i++)
        if (raw[i] < 0x20 || raw[i] == 0x7f)
            return -1;
    size_t ulen = (size_t)(colon - raw);
    if (url_decode((const char *)raw, ulen, user, user_cap, NULL) != 0)
        return -1;
    if (url_decode((const char *)colon + 1, rawlen - ulen - 1, pass, pass_cap, NULL) != 0)
        return -1;
    return 0;
}

int sim_core_parse_fault(const char *s, sim_core_fault *fault, long *ms)
{
    static const struct {
        const char *name;
        sim_core_fault f;
    } names[] = {
        {"deny", SIM_FAULT_DENY},
        {"429", SIM_FAULT_429},
        {"500_before", SIM_FAULT_500_BEFORE},
        {"500_after", SIM_FAULT_500_AFTER},
        {"cut_after", SIM_FAULT_CUT_AFTER},
        {"hang", SIM_FAULT_HANG},
    };
    *ms = 0;
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *fault = names[i].f;
            return 0;
        }
    }
    if (strncmp(s, "latency:", 8) == 0) {
        const char *d = s + 8;
        size_t n = strlen(d);
        if (n == 0 || n > 7)
            return -1;
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (d[i] < '0' || d[i] > '9')
                return -1;
            v = v * 10 + (d[i] - '0');
        }
        if (v > SIM_CORE_MAX_LATENCY_MS)
            return -1;
        *fault = SIM_FAULT_LATENCY;
        *ms = v;
        return 0;
    }
    return -1;
}

/* ---- hash tables (intrusive, chained) ---------------------------------- */

static ent **nextp(ent *e, int which)
{
    return which == BY_ACCT ? &e->anext : &e->hnext;
}

static const char *keyof(const ent *e, int which)
{
    return which == BY_ACCT ? e->acct : e->hash;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int tbl_init(tbl *t)
{
    t->nb = TBL_MIN_BUCKETS;
    t->n = 0;
    t->b = calloc(t->nb, sizeof *t->b);
    return t->b ? 0 : -1;
}

static int tbl_grow(tbl *t, int which)
{
    size_t nb = t->nb * 2;
    ent **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < t->nb; i++) {
        ent *e = t->b[i];
        while (e) {
            ent *next = *nextp(e, which);
            size_t h = (size_t)(fnv1a(keyof(e, which)) & (nb - 1));
            *nextp(e, which) = b[h];
            b[h] = e;
            e = next;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
    return 0;
}

static ent *tbl_get(const tbl *t, const char *k, int which)
{
    size_t h = (size_t)(fnv1a(k) & (t->nb - 1));
    for (ent *e = t->b[h]; e; e = *nextp(e, which))
        if (strcmp(keyof(e, which), k) == 0)
            return e;
    return NULL;
}

static int tbl_put(tbl *t, ent *e, int which)
{
    if (t->n >= t->nb && tbl_grow(t, which) != 0)
        return -1;
    size_t h = (size_t)(fnv1a(keyof(e, which)) & (t->nb - 1));
    *nextp(e, which) = t->b[h];
    t->b[h] = e;
    t->n++;
    return 0;
}

static void tbl_del(tbl *t, ent *e, int which)
{
    size_t h = (size_t)(fnv1a(keyof(e, which)) & (t->nb - 1));
    for (ent **pp = &t->b[h]; *pp; pp = nextp(*pp, which)) {
        if (*pp == e) {
            *pp = *nextp(e, which);
            *nextp(e, which) = NULL;
            t->n--;
            return;
        }
    }
}

/* ---- records ------------------------------------------------------------ */

static void ent_free(ent *e)
{
    if (!e)
        return;
    free(e->redirect_uri);
    free(e);
}

static void ent_unlink(sim_core_t *c, ent *e)
{
    tbl_del(&c->by_hash, e, BY_HASH);
    if (e->acct[0] && !e->is_rt)
        tbl_del(&c->by_acct, e, BY_ACCT);
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    c->n_ents--;
}

/* Move e to the newest end of the eviction order; caller holds mu. */
static void ent_touch(sim_core_t *c, ent *e)
{
    if (c->newest == e)
        return;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer->older = e->older;
    e->older = c->newest;
    e->newer = NULL;
    c->newest->newer = e;
    c->newest = e;
}

/* Insert a fresh record (evicting the oldest when full, never keep, which
 * the caller still uses; may be NULL); caller holds mu. */
static int ent_insert(sim_core_t *c, ent *e, ent *keep)
{
    while (c->n_ents >= c->max_codes && c->oldest) {
        if (c->oldest == keep) {
            if (keep == c->newest)
                break; /* keep is the only record: exceed the bound by one */
            ent_touch(c, keep);
        }
        ent *old = c->oldest;
        ent_unlink(c, old);
        ent_free(old);
    }
    if (tbl_put(&c->by_hash, e, BY_HASH) != 0)
        return -1;
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->n_ents++;
    return 0;
}

/* ---- responses ---------------------------------------------------------- */

void sim_core_resp_free(sim_core_resp *r)
{
    if (!r)
        return;
    cJSON_free(r->body);
    free(r->location);
    memset(r, 0, sizeof *r);
}

/* Render obj (consumed) as the JSON body of r with the given status. */
static int resp_json(sim_core_resp *r, int status, cJSON *obj)
{
    if (!obj)
        return -1;
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s)
        return -1;
    r->status = status;
    r->body = s;
    r->content_type = JSON_CT;
    r->no_store = 1;
    return 0;
}

static int resp_err(sim_core_resp *r, int status, const char *error, const char *desc,
                    const char *event)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "error", error) ||
        !cJSON_AddStringToObject(o, "error_description", desc)) {
        cJSON_Delete(o);
        return -1;
    }
    r->event = event;
    return resp_json(r, status, o);
}

/* Location values are built in a common/buf (bounded by SIM_LOCATION_MAX). */
#define SIM_LOCATION_MAX 16384

static int sb_put(buf_t *b, const char *s, size_t n)
{
    return buf_add(b, s, n) == 0 ? 0 : -1;
}

static int sb_pct(buf_t *b, const char *v)
{
    static const char H[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char t[3];
        if (is_unreserved(*p)) {
            if (sb_put(b, (const char *)p, 1) != 0)
                return -1;
            continue;
        }
        t[0] = '%';
        t[1] = H[*p >> 4];
        t[2] = H[*p & 15];
        if (sb_put(b, t, 3) != 0)
            return -1;
    }
    return 0;
}

/* Start a redirect to base: base + ('?' | '&' | ''). */
static int sb_redirect_base(buf_t *b, const char *base)
{
    if (sb_put(b, base, strlen(base)) != 0)
        return -1;
    const char *q = strchr(base, '?');
    if (!q)
        return sb_put(b, "?", 1);
    char last = base[strlen(base) - 1];
    if (last == '?' || last == '&')
        return 0;
    return sb_put(b, "&", 1);
}

static int sb_param(buf_t *b, int first, const char *name, const char *value)
{
    if (!first && sb_put(b, "&", 1) != 0)
        return -1;
    if (sb_put(b, name, strlen(name)) != 0 || sb_put(b, "=", 1) != 0)
        return -1;
    return sb_pct(b, value);
}

/* ---- lifecycle ---------------------------------------------------------- */

sim_core_t *sim_core_new(const sim_core_opts *o, err_t *e)
{
    if (!o || !o->client_id || !o->client_id[0] || !o->client_secret || !o->client_secret[0]) {
        err_set(e, ERRC_FATAL, "sim_core: client_id and client_secret are required");
        return NULL;
    }
    if (strlen(o->client_id) >= SIM_CORE_ID_MAX || strlen(o->client_secret) >= SIM_CORE_ID_MAX) {
        err_set(e, ERRC_FATAL, "sim_core: client_id or client_secret longer than %d bytes",
                SIM_CORE_ID_MAX - 1);
        return NULL;
    }
    if (o->code_ttl_ms < 0 || o->latency_ms < 0 || o->latency_ms > SIM_CORE_MAX_LATENCY_MS ||
        o->access_ttl_ms < 0 || o->access_ttl_ms > SIM_CORE_MAX_ACCESS_TTL_MS) {
        err_set(e, ERRC_FATAL, "sim_core: code_ttl_ms/latency_ms/access_ttl_ms out of range");
        return NULL;
    }
    for (size_t i = 0; i < o->n_redirect_uris; i++) {
        const char *u = o->redirect_uris[i];
        if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
            strlen(u) >= SIM_CORE_URI_MAX || strchr(u, '#')) {
            err_set(e, ERRC_FATAL, "sim_core: redirect URI #%zu is not an absolute http(s) URI",
                    i + 1);
            return NULL;
        }
    }
    sim_core_t *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERRC_FATAL, "sim_core: out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        err_set(e, ERRC_FATAL, "sim_core: mutex init failed");
        return NULL;
    }
    c->code_ttl_ms = o->code_ttl_ms ? o->code_ttl_ms : SIM_CORE_DEFAULT_CODE_TTL_MS;
    c->latency_ms = o->latency_ms;
    c->max_codes = o->max_codes ? o->max_codes : SIM_CORE_DEFAULT_MAX_CODES;
    c->access_ttl_ms = o->access_ttl_ms;
    c->rotation = !o->no_refresh_rotation;
    c->client_id = xstrdup(o->client_id);
    c->client_secret = xstrdup(o->client_secret);
    int bad = !c->client_id || !c->client_secret || tbl_init(&c->by_hash) != 0 ||
              tbl_init(&c->by_acct) != 0;
    if (!bad && o->n_redirect_uris) {
        c->redirect_uris = calloc(o->n_redirect_uris, sizeof *c->redirect_uris);
        bad = !c->redirect_uris;
        for (size_t i = 0; !bad && i < o->n_redirect_uris; i++) {
            c->redirect_uris[i] = xstrdup(o->redirect_uris[i]);
            bad = !c->redirect_uris[i];
            c->n_redirect_uris = i + 1;
        }
    }
    if (bad) {
        sim_core_free(c);
        err_set(e, ERRC_FATAL, "sim_core: out of memory");
        return NULL;
    }
    return c;
}

void sim_core_free(sim_core_t *c)
{
    if (!c)
        return;
    ent *e = c->oldest;
    while (e) {
        ent *next = e->newer;
        ent_free(e);
        e = next;
    }
    free(c->by_hash.b);
    free(c->by_acct.b);
    for (size_t i = 0; i < c->n_redirect_uris; i++)
        free(c->redirect_uris[i]);
    free(c->redirect_uris);
    if (c->client_secret)
        OPENSSL_cleanse(c->client_secret, strlen(c->client_secret));
    free(c->client_secret);
    free(c->client_id);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- client authentication --------------------------------------------- */

static int ct_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* resp_err for client_auth: 1 when the answer is ready, -1 on failure. */
static int auth_err(sim_core_resp *r, int status, const char *error, const char *desc)
{
    return resp_err(r, status, error, desc, status == 401 ? "invalid_client" : "invalid_request") <
                   0
               ? -1
               : 1;
}

/* Authenticate the client (Basic or body secret). Returns 0 when
 * authenticated, 1 when r holds the error answer, -1 on internal error. */
static int client_auth(const sim_core_t *c, const sim_core_req *rq, const form *f,
                       int require_client_id, sim_core_resp *r)
{
    const char *body_id = form_get(f, "client_id");
    const char *body_secret = form_get(f, "client_secret");
    const char *authz = rq->authorization;
    if (authz && *authz) {
        char user[SIM_CORE_ID_MAX], pass[SIM_CORE_ID_MAX];
        int ok;
        if (body_secret)
            return auth_err(r, 400, "invalid_request",
                            "Only one client authentication method may be used.");
        r->www_authenticate = 1;
        if (sim_core_parse_basic(authz, user, sizeof user, pass, sizeof pass) != 0)
            return auth_err(r, 401, "invalid_client", "Malformed client authentication.");
        /* RFC 6749 §2.3.1 (id:secret) or Stripe's (secret as user, no password). */
        ok = (ct_streq(user, c->client_id) && ct_streq(pass, c->client_secret)) ||
             (ct_streq(user, c->client_secret) && pass[0] == '\0');
        OPENSSL_cleanse(pass, sizeof pass);
        OPENSSL_cleanse(user, sizeof user);
        if (!ok || (body_id && strcmp(body_id, c->client_id) != 0))
            return auth_err(r, 401, "invalid_client", "Invalid client credentials.");
        r->www_authenticate = 0;
    } else if (body_secret) {
        if (!ct_streq(body_secret, c->client_secret) ||
            (body_id && strcmp(body_id, c->client_id) != 0))
            return auth_err(r, 401, "invalid_client", "Invalid client credentials.");
    } else {
        return auth_err(r, 401, "invalid_client",
                        "No client authentication was provided. Send client_secret or use "
                        "HTTP Basic authentication.");
    }
    if (require_client_id && !body_id)
        return auth_err(r, 400, "invalid_request", "Missing required param: client_id.");
    return 0;
}

static int form_content_type(const char *ct)
{
    static const char F[] = "application/x-www-form-urlencoded";
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = sizeof F - 1;
    if (strncasecmp(ct, F, n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/* ---- /oauth/authorize --------------------------------------------------- */

static int valid_http_uri(const char *u)
{
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
        return 0;
    if (strlen(u) >= SIM_CORE_URI_MAX || strchr(u, '#'))
        return 0;
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return 0;
    return strlen(u) > (u[4] == 's' ? 8u : 7u);
}

static int valid_challenge(const char *s)
{
    if (strlen(s) != 43)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!isalnum(*p) && *p != '-' && *p != '_')
            return 0;
    return 1;
}

static int h_authorize(sim_core_t *c, const char *query, int64_t now, sim_core_resp *r)
{
    form f;
    int rc = form_parse(query, strlen(query), &f), ret;
    if (rc == -2) {
        form_free(&f);
        return -1;
    }
    if (rc != 0) {
        form_free(&f);
        return resp_err(r, 400, "invalid_request", "Malformed or duplicated query parameter.",
                        "authorize_bad_query");
    }
    const char *client_id = form_get(&f, "client_id");
    const char *response_type = form_get(&f, "response_type");
    const char *redirect = form_get(&f, "redirect_uri");
    const char *state = form_get(&f, "state");
    const char *scope = form_get(&f, "scope");
    const char *challenge = form_get(&f, "code_challenge");
    const char *method = form_get(&f, "code_challenge_method");
    const char *fault_s = form_get(&f, "sim_fault");
    const char *deny_s = form_get(&f, "sim_deny");
    const char *rfault_s = form_get(&f, "sim_refresh_fault");
    sim_core_fault fault = SIM_FAULT_NONE, rfault = SIM_FAULT_NONE;
    long fault_ms = 0, rfault_ms = 0;

    if (!client_id) {
        ret = resp_err(r, 400, "invalid_request", "Missing required param: client_id.",
                       "authorize_invalid");
        goto out;
    }
    if (strcmp(client_id, c->client_id) != 0) {
        ret = resp_err(r, 400, "invalid_client", "No such application.", "authorize_invalid");
        goto out;
    }
    if (!redirect) {
        if (c->n_redirect_uris == 0) {
            ret = resp_err(r, 400, "invalid_request",
                           "Missing required param: redirect_uri (none is registered).",
                           "authorize_invalid");
            goto out;
        }
        redirect = c->redirect_uris[0];
    } else if (c->n_redirect_uris) {
        int found = 0;
        for (size_t i = 0; i < c->n_redirect_uris && !found; i++)
            found = strcmp(redirect, c->redirect_uris[i]) == 0;
        if (!found) {
            ret = resp_err(r, 400, "invalid_request",
                           "Invalid redirect_uri: it does not match a registered redirect URI.",
                           "authorize_invalid");
            goto out;
        }
    } else if (!valid_http_uri(redirect)) {
        ret = resp_err(r, 400, "invalid_request",
                       "Invalid redirect_uri: it must be an absolute http(s) URI.",
                       "authorize_invalid");
        goto out;
    }
    if (!response_type) {
        ret = resp_err(r, 400, "invalid_request", "Missing required param: response_type.",
                       "authorize_invalid");
        goto out;
    }
    if (strcmp(response_type, "code") != 0) {
        ret = resp_err(r, 400, "unsupported_response_type", "Only response_type=code is supported.",
                       "authorize_invalid");
        goto out;
    }
    if (state && strlen(state) > STATE_MAX) {
        ret = resp_err(r, 400, "invalid_request", "The state parameter is too long.",
                       "authorize_invalid");
        goto out;
    }
    if (scope && strcmp(scope, "read_write") != 0 && strcmp(scope, "read_only") != 0) {
        ret = resp_err(r, 400, "invalid_scope", "Invalid scope: use read_write or read_only.",
                       "authorize_invalid");
        goto out;
    }
    if (method && !challenge) {
        ret =
            resp_err(r, 400, "invalid_request",
                     "code_challenge_method was sent without code_challenge.", "authorize_invalid");
        goto out;
    }
    if (challenge) {
        if (!method || strcmp(method, "S256") != 0) {
            ret = resp_err(r, 400, "invalid_request",
                           "Only code_challenge_method=S256 is supported.", "authorize_invalid");
            goto out;
        }
        if (!valid_challenge(challenge)) {
            ret = resp_err(r, 400, "invalid_request",
                           "Invalid code_challenge: expected 43 base64url characters.",
                           "authorize_invalid");
            goto out;
        }
    }
    if (fault_s && sim_core_parse_fault(fault_s, &fault, &fault_ms) != 0) {
        ret = resp_err(r, 400, "invalid_request", "Unknown sim_fault.", "authorize_invalid");
        goto out;
    }
    if (rfault_s &&
        (sim_core_parse_fault(rfault_s, &rfault, &rfault_ms) != 0 || rfault == SIM_FAULT_DENY)) {
        ret =
            resp_err(r, 400, "invalid_request", "Unknown sim_refresh_fault.", "authorize_invalid");
        goto out;
    }
    if (deny_s) {
        if (strcmp(deny_s, "1") != 0 || (fault_s && fault != SIM_FAULT_DENY)) {
            ret = resp_err(r, 400, "invalid_request", "Invalid sim_deny.", "authorize_invalid");
            goto out;
        }
        fault = SIM_FAULT_DENY;
    }

    buf_t loc;
    buf_init(&loc, SIM_LOCATION_MAX, 0);
    if (fault == SIM_FAULT_DENY) {
        if (sb_redirect_base(&loc, redirect) != 0 ||
            sb_param(&loc, 1, "error", "access_denied") != 0 ||
            sb_put(&loc, "&error_description=The+user+denied+your+request", 47) != 0 ||
            (state && sb_param(&loc, 0, "state", state) != 0)) {
            buf_free(&loc);
            ret = -1;
            goto out;
        }
        r->status = 302;
        r->location = buf_take(&loc, NULL);
        r->no_store = 1;
        r->event = "authorize_denied";
        ret = 0;
        goto out;
    }

    ent *e = calloc(1, sizeof *e);
    char code[3 + CODE_RAND_LEN + 1];
    if (!e || !(e->redirect_uri = xstrdup(redirect))) {
        ent_free(e);
        ret = -1;
        goto out;
    }
    e->issued = 1;
    e->issued_ms = now;
    e->last_status = -1;
    if (challenge) {
        e->has_challenge = 1;
        memcpy(e->challenge, challenge, 44);
    }
    snprintf(e->scope, sizeof e->scope, "%s", scope ? scope : "read_write");
    e->fault = fault;
    e->fault_ms = fault_ms;
    e->fault_pending = fault != SIM_FAULT_NONE;
    e->rfault = rfault;
    e->rfault_ms = rfault_ms;

    pthread_mutex_lock(&c->mu);
    int ok = 0;
    for (int tries = 0; tries < 4 && !ok; tries++) {
        memcpy(code, "ac_", 3);
        if (rand_alnum(code + 3, CODE_RAND_LEN) != 0 ||
            sim_core_sha256_hex(code, strlen(code), e->hash) != 0)
            break;
        ok = tbl_get(&c->by_hash, e->hash, BY_HASH) == NULL;
    }
    if (ok)
        ok = ent_insert(c, e, NULL) == 0;
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        ent_free(e);
        ret = -1;
        goto out;
    }
    memcpy(r->code_sha256, e->hash, 65);
    if (sb_redirect_base(&loc, redirect) != 0 || sb_param(&loc, 1, "code", code) != 0 ||
        (state && sb_param(&loc, 0, "state", state) != 0)) {
        buf_free(&loc);
        OPENSSL_cleanse(code, sizeof code);
        ret = -1;
        goto out;
    }
    OPENSSL_cleanse(code, sizeof code);
    r->status = 302;
    r->location = buf_take(&loc, NULL);
    r->no_store = 1;
    r->event = "code_issued";
    ret = 0;
out:
    form_free(&f);
    return ret;
}

/* ---- /oauth/token ------------------------------------------------------- */

static int valid_verifier(const char *v)
{
    size_t n = strlen(v);
    if (n < 43 || n > 128)
        return 0;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (!is_unreserved(*p))
            return 0;
    return 1;
}

#define RT_LEN (3 + TOKEN_RAND_LEN)

/* Mint a refresh token of the family acct into rt[RT_LEN + 1] and record it
 * (never evicting keep); the fault fires on its first refresh. mu held. */
static int rt_mint(sim_core_t *c, const char *acct, const char *scope, sim_core_fault fault,
                   long fault_ms, ent *keep, char rt[RT_LEN + 1])
{
    ent *n = calloc(1, sizeof *n);
    if (!n)
        return -1;
    int ok = 0;
    for (int tries = 0; tries < 4 && !ok; tries++) {
        memcpy(rt, "rt_", 3);
        if (rand_alnum(rt + 3, TOKEN_RAND_LEN) != 0 ||
            sim_core_sha256_hex(rt, RT_LEN, n->hash) != 0)
            break;
        ok = tbl_get(&c->by_hash, n->hash, BY_HASH) == NULL;
    }
    if (!ok || ent_insert(c, n, keep) != 0) {
        OPENSSL_cleanse(rt, RT_LEN + 1);
        free(n);
        return -1;
    }
    n->is_rt = 1;
    n->issued = 1;
    n->last_status = -1;
    snprintf(n->acct, sizeof n->acct, "%s", acct);
    snprintf(n->scope, sizeof n->scope, "%s", scope);
    n->fault = fault;
    n->fault_ms = fault_ms;
    n->fault_pending = fault != SIM_FAULT_NONE;
    return 0;
}

/* Add expires_in when access tokens have a lifetime. */
static int add_expiry(const sim_core_t *c, cJSON *o)
{
    if (c->access_ttl_ms <= 0)
        return 1;
    return cJSON_AddNumberToObject(o, "expires_in", (double)((c->access_ttl_ms + 999) / 1000)) !=
           NULL;
}

static int token_success(sim_core_t *c, ent *e, sim_core_resp *r)
{
    char at[8 + TOKEN_RAND_LEN + 1], rt[RT_LEN + 1], pk[8 + TOKEN_RAND_LEN + 1];
    char acct[ACCT_MAX];
    memcpy(at, "sk_test_", 8);
    memcpy(pk, "pk_test_", 8);
    memcpy(acct, "acct_", 5);
    if (rand_alnum(at + 8, TOKEN_RAND_LEN) != 0 || rand_alnum(pk + 8, TOKEN_RAND_LEN) != 0 ||
        rand_alnum(acct + 5, ACCT_RAND_LEN) != 0)
        return -1;
    /* account ids are random; a collision would only confuse deauthorize */
    if (tbl_get(&c->by_acct, acct, BY_ACCT))
        return -1;
    memcpy(e->acct, acct, sizeof acct);
    if (tbl_put(&c->by_acct, e, BY_ACCT) != 0) {
        e->acct[0] = '\0';
        return -1;
    }
    if (rt_mint(c, e->acct, e->scope, e->rfault, e->rfault_ms, e, rt) != 0) {
        tbl_del(&c->by_acct, e, BY_ACCT);
        e->acct[0] = '\0';
        return -1;
    }
    e->consumed = 1;
    e->grant = GRANT_ACTIVE;
    c->grants_active++;
    cJSON *o = cJSON_CreateObject();
    int bad = !o || !cJSON_AddStringToObject(o, "access_token", at) ||
              !cJSON_AddStringToObject(o, "refresh_token", rt) ||
              !cJSON_AddStringToObject(o, "token_type", "bearer") || !add_expiry(c, o) ||
              !cJSON_AddStringToObject(o, "scope", e->scope) ||
              !cJSON_AddFalseToObject(o, "livemode") ||
              !cJSON_AddStringToObject(o, "stripe_user_id", e->acct) ||
              !cJSON_AddStringToObject(o, "stripe_publishable_key", pk);
    OPENSSL_cleanse(at, sizeof at);
    OPENSSL_cleanse(rt, sizeof rt);
    if (bad) {
        cJSON_Delete(o);
        return -1;
    }
    r->event = "token_issued";
    return resp_json(r, 200, o);
}

/* The token decision proper, after counting and the pre-faults; mu held. */
static int token_decide(sim_core_t *c, const sim_core_req *rq, const form *f, ent *e, int64_t now,
                        sim_core_resp *r)
{
    int rc = client_auth(c, rq, f, 0, r);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    const char *gt = form_get(f, "grant_type");
    const char *code = form_get(f, "code");
    if (!gt)
        return resp_err(r, 400, "invalid_request", "Missing required param: grant_type.",
                        "invalid_request");
    if (strcmp(gt, "authorization_code") != 0)
        return resp_err(r, 400, "unsupported_grant_type",
                        "Only grant_type=authorization_code and refresh_token are supported.",
                        "unsupported_grant_type");
    if (!code || !code[0] || !e)
        return resp_err(r, 400, "invalid_request", "Missing required param: code.",
                        "invalid_request");
    if (!e->issued)
        return resp_err(r, 400, "invalid_grant", "Authorization code provided does not exist.",
                        "code_unknown");
    if (e->consumed) {
        e->after_consumed++;
        if (e->grant == GRANT_ACTIVE) {
            e->grant = GRANT_REVOKED;
            c->grants_active--;
            c->grants_revoked++;
        }
        return resp_err(r, 400, "invalid_grant", REUSE_DESC, "code_reused");
    }
    if (e->dead || now > e->issued_ms + c->code_ttl_ms) {
        e->dead = 1;
        return resp_err(r, 400, "invalid_grant", "This authorization code has expired.",
                        "code_expired");
    }
    const char *redirect = form_get(f, "redirect_uri");
    if (redirect && strcmp(redirect, e->redirect_uri) != 0)
        return resp_err(r, 400, "invalid_grant",
                        "redirect_uri does not match the one used in the authorization request.",
                        "redirect_mismatch");
    const char *verifier = form_get(f, "code_verifier");
    if (e->has_challenge) {
        unsigned char md[32];
        char b64[44];
        if (!verifier)
            return resp_err(r, 400, "invalid_grant", "Missing required param: code_verifier.",
                            "pkce_failed");
        if (!valid_verifier(verifier))
            return resp_err(r, 400, "invalid_grant", "Invalid code_verifier.", "pkce_failed");
        if (sha256(verifier, strlen(verifier), md) != 0)
            return -1;
        b64url32(md, b64);
        if (CRYPTO_memcmp(b64, e->challenge, 43) != 0)
            return resp_err(r, 400, "invalid_grant",
                            "code_verifier does not match the code_challenge.", "pkce_failed");
    } else if (verifier) {
        return resp_err(r, 400, "invalid_grant",
                        "code_verifier sent for a code issued without code_challenge.",
                        "pkce_failed");
    }
    return token_success(c, e, r);
}

/* The decision of a token request (code or refresh grant); mu held. */
typedef int (*decide_fn)(sim_core_t *c, const sim_core_req *rq, const form *f, ent *e, int64_t now,
                         sim_core_resp *r);

/* Apply e's pending fault around decide (SPEC §7 fault semantics, the same
 * for codes and refresh tokens): 429, 500_before and hang answer before any
 * validation; latency delays; 500_after and cut_after decide, then replace
 * the answer. Records e's last_status. mu held. */
static int faulted_decide(sim_core_t *c, const sim_core_req *rq, const form *f, ent *e, int64_t now,
                          const char *hash, decide_fn decide, sim_core_resp *r)
{
    int ret = 0;
    sim_core_fault post = SIM_FAULT_NONE;
    if (e && e->fault_pending) {
        e->fault_pending = 0;
        switch (e->fault) {
        case SIM_FAULT_429:
            ret = resp_err(r, 429, "rate_limit", "Too many requests. Retry later.", "fault_429");
            r->retry_after_s = 1;
            goto record;
        case SIM_FAULT_500_BEFORE:
            ret = resp_err(r, 500, "api_error", "An unknown error occurred.", "fault_500_before");
            goto record;
        case SIM_FAULT_HANG:
            r->action = SIM_CORE_HANG;
            r->event = "fault_hang";
            goto record;
        case SIM_FAULT_LATENCY:
            r->delay_ms += e->fault_ms;
            break;
        case SIM_FAULT_500_AFTER:
        case SIM_FAULT_CUT_AFTER:
            post = e->fault;
            break;
        case SIM_FAULT_NONE:
        case SIM_FAULT_DENY:
            break;
        }
    }
    ret = decide(c, rq, f, e, now, r);
    if (ret == 0 && post == SIM_FAULT_500_AFTER) {
        const char *ev = r->status == 200 ? "fault_500_after" : "fault_500_after_failed";
        sim_core_resp_free(r);
        memcpy(r->code_sha256, hash, 65);
        r->delay_ms = c->latency_ms;
        ret = resp_err(r, 500, "api_error", "An unknown error occurred.", ev);
    } else if (ret == 0 && post == SIM_FAULT_CUT_AFTER) {
        r->event = r->status == 200 ? "fault_cut_after" : "fault_cut_after_failed";
        r->action = SIM_CORE_CUT;
    }
record:
    if (e && ret == 0)
        e->last_status = r->action == SIM_CORE_ANSWER ? r->status : 0;
    return ret;
}

/* Revoke the grant of family acct (reuse detected); mu held. */
static void family_revoke(sim_core_t *c, const char *acct)
{
    ent *g = tbl_get(&c->by_acct, acct, BY_ACCT);
    if (g && g->grant == GRANT_ACTIVE) {
        g->grant = GRANT_REVOKED;
        c->grants_active--;
        c->grants_revoked++;
    }
}

/* The refresh decision proper, after counting and the pre-faults; e is the
 * presented token's record (NULL: none named). May evict nothing but e's
 * neighbours (e is kept). mu held. */
static int refresh_decide(sim_core_t *c, const sim_core_req *rq, const form *f, ent *e, int64_t now,
                          sim_core_resp *r)
{
    (void)now; /* refresh tokens do not expire */
    int rc = client_auth(c, rq, f, 0, r);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    if (!e)
        return resp_err(r, 400, "invalid_request", "Missing required param: refresh_token.",
                        "invalid_request");
    if (!e->issued)
        return resp_err(r, 400, "invalid_grant", "Refresh token provided does not exist.",
                        "refresh_unknown");
    const ent *g = tbl_get(&c->by_acct, e->acct, BY_ACCT);
    if (!g || g->grant != GRANT_ACTIVE)
        return resp_err(r, 400, "invalid_grant", "This refresh token has been revoked.",
                        "refresh_revoked");
    if (e->rotated) {
        family_revoke(c, e->acct);
        return resp_err(r, 400, "invalid_grant",
                        "This refresh token has already been used. All tokens issued with it "
                        "have been revoked.",
                        "refresh_reused");
    }
    char at[8 + TOKEN_RAND_LEN + 1], rt[RT_LEN + 1];
    memcpy(at, "sk_test_", 8);
    if (rand_alnum(at + 8, TOKEN_RAND_LEN) != 0)
        return -1;
    const char *out_rt = form_get(f, "refresh_token");
    if (c->rotation) {
        if (rt_mint(c, e->acct, e->scope, SIM_FAULT_NONE, 0, e, rt) != 0)
            return -1;
        e->rotated = 1;
        out_rt = rt;
    }
    cJSON *o = cJSON_CreateObject();
    int bad = !o || !cJSON_AddStringToObject(o, "access_token", at) ||
              !cJSON_AddStringToObject(o, "refresh_token", out_rt) ||
              !cJSON_AddStringToObject(o, "token_type", "bearer") || !add_expiry(c, o) ||
              !cJSON_AddStringToObject(o, "scope", e->scope) ||
              !cJSON_AddFalseToObject(o, "livemode") ||
              !cJSON_AddStringToObject(o, "stripe_user_id", e->acct);
    OPENSSL_cleanse(at, sizeof at);
    OPENSSL_cleanse(rt, sizeof rt);
    if (bad) {
        cJSON_Delete(o);
        return -1;
    }
    r->event = c->rotation ? "refresh_rotated" : "refreshed";
    return resp_json(r, 200, o);
}

/* grant_type=refresh_token: count, apply a pending fault, decide. */
static int h_refresh(sim_core_t *c, const sim_core_req *rq, const form *f, int64_t now,
                     sim_core_resp *r)
{
    const char *rt = form_get(f, "refresh_token");
    char hash[65] = "";
    if (rt && rt[0] && sim_core_sha256_hex(rt, strlen(rt), hash) != 0)
        return -1;
    int ret = 0;
    ent *e = NULL;
    r->delay_ms = c->latency_ms;

    pthread_mutex_lock(&c->mu);
    if (hash[0]) {
        e = tbl_get(&c->by_hash, hash, BY_HASH);
        if (!e) {
            e = calloc(1, sizeof *e);
            if (e) {
                memcpy(e->hash, hash, 65);
                e->is_rt = 1;
                e->last_status = -1;
            }
            if (!e || ent_insert(c, e, NULL) != 0) {
                free(e);
                pthread_mutex_unlock(&c->mu);
                return -1;
            }
        }
        if (!e->is_rt) { /* a code presented as a refresh token: unknown, not counted */
            e = NULL;
            ret = resp_err(r, 400, "invalid_grant", "Refresh token provided does not exist.",
                           "refresh_unknown");
            goto unlock;
        }
        e->refresh_requests++;
        memcpy(r->code_sha256, hash, 65);
    }
    ret = faulted_decide(c, rq, f, e, now, hash, refresh_decide, r);
unlock:
    pthread_mutex_unlock(&c->mu);
    return ret;
}

static int h_token(sim_core_t *c, const sim_core_req *rq, int64_t now, sim_core_resp *r)
{
    if (!form_content_type(rq->content_type))
        return resp_err(r, 400, "invalid_request",
                        "Content-Type must be application/x-www-form-urlencoded.",
                        "invalid_request");
    form f;
    int rc = form_parse(rq->body ? rq->body : "", rq->body ? rq->body_len : 0, &f);
    if (rc != 0) {
        form_free(&f);
        if (rc == -2)
            return -1;
        return resp_err(r, 400, "invalid_request", "Malformed or duplicated parameter.",
                        "invalid_request");
    }
    const char *gtype = form_get(&f, "grant_type");
    if (gtype && strcmp(gtype, "refresh_token") == 0) {
        int rrc = h_refresh(c, rq, &f, now, r);
        form_free(&f);
        return rrc;
    }
    const char *code = form_get(&f, "code");
    char hash[65] = "";
    if (code && code[0] && sim_core_sha256_hex(code, strlen(code), hash) != 0) {
        form_free(&f);
        return -1;
    }
    int ret = 0;
    ent *e = NULL;
    r->delay_ms = c->latency_ms;

    pthread_mutex_lock(&c->mu);
    if (hash[0]) {
        c->token_requests++;
        e = tbl_get(&c->by_hash, hash, BY_HASH);
        if (!e) {
            e = calloc(1, sizeof *e);
            if (e) {
                memcpy(e->hash, hash, 65);
                e->last_status = -1;
            }
            if (!e || ent_insert(c, e, NULL) != 0) {
                free(e);
                e = NULL;
                ret = -1;
                goto unlock;
            }
        }
        e->token_requests++;
        memcpy(r->code_sha256, hash, 65);
    }
    ret = faulted_decide(c, rq, &f, e, now, hash, token_decide, r);
unlock:
    pthread_mutex_unlock(&c->mu);
    form_free(&f);
    return ret;
}

/* ---- /oauth/deauthorize ------------------------------------------------- */

static int h_deauthorize(sim_core_t *c, const sim_core_req *rq, sim_core_resp *r)
{
    if (!form_content_type(rq->content_type))
        return resp_err(r, 400, "invalid_request",
                        "Content-Type must be application/x-www-form-urlencoded.",
                        "invalid_request");
    form f;
    int rc = form_parse(rq->body ? rq->body : "", rq->body ? rq->body_len : 0, &f);
    if (rc != 0) {
        form_free(&f);
        if (rc == -2)
            return -1;
        return resp_err(r, 400, "invalid_request", "Malformed or duplicated parameter.",
                        "invalid_request");
    }
    int ret;
    rc = client_auth(c, rq, &f, 1, r);
    if (rc != 0) {
        form_free(&f);
        return rc < 0 ? -1 : 0;
    }
    const char *acct = form_get(&f, "stripe_user_id");
    if (!acct || !acct[0]) {
        ret = resp_err(r, 400, "invalid_request", "Missing required param: stripe_user_id.",
                       "invalid_request");
        form_free(&f);
        return ret;
    }
    pthread_mutex_lock(&c->mu);
    ent *e = strlen(acct) < ACCT_MAX ? tbl_get(&c->by_acct, acct, BY_ACCT) : NULL;
    int ok = e && e->grant == GRANT_ACTIVE;
    if (ok) {
        e->grant = GRANT_DEAUTHORIZED;
        c->grants_active--;
        c->grants_deauthorized++;
    }
    pthread_mutex_unlock(&c->mu);
    if (ok) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddStringToObject(o, "stripe_user_id", acct)) {
            cJSON_Delete(o);
            ret = -1;
        } else {
            r->event = "deauthorized";
            ret = resp_json(r, 200, o);
        }
    } else {
        char desc[160];
        int printable = strlen(acct) < 64;
        for (const unsigned char *p = (const unsigned char *)acct; printable && *p; p++)
            printable = isalnum(*p) || *p == '_';
        snprintf(desc, sizeof desc,
                 "This application is not connected to stripe account %s, or that account "
                 "does not exist.",
                 printable ? acct : "(invalid id)");
        ret = resp_err(r, 401, "invalid_client", desc, "deauthorize_unknown");
    }
    form_free(&f);
    return ret;
}

/* ---- /_sim/stats -------------------------------------------------------- */

/* The per-code grant state in the stats: what the chaos checker compares
 * with the connections the product shows as connected (SPEC §10). */
static const char *grant_name(grant_state g)
{
    switch (g) {
    case GRANT_ACTIVE:
        return "active";
    case GRANT_REVOKED:
        return "revoked";
    case GRANT_DEAUTHORIZED:
        return "deauthorized";
    case GRANT_NONE:
        break;
    }
    return NULL;
}

static int h_stats(sim_core_t *c, sim_core_resp *r)
{
    cJSON *o = cJSON_CreateObject(), *codes = NULL, *grants = NULL;
    int bad = !o;
    pthread_mutex_lock(&c->mu);
    if (!bad) {
        bad = !cJSON_AddNumberToObject(o, "token_requests", (double)c->token_requests) ||
              !(codes = cJSON_AddObjectToObject(o, "codes")) ||
              !(grants = cJSON_AddObjectToObject(o, "grants"));
    }
    for (ent *e = c->oldest; !bad && e; e = e->newer) {
        if (e->token_requests == 0 || e->is_rt)
            continue;
        cJSON *ce = cJSON_CreateObject();
        bad = !ce || !cJSON_AddNumberToObject(ce, "token_requests", (double)e->token_requests) ||
              !cJSON_AddNumberToObject(ce, "after_consumed", (double)e->after_consumed) ||
              !(e->last_status >= 0 ? cJSON_AddNumberToObject(ce, "last_status", e->last_status)
                                    : cJSON_AddNullToObject(ce, "last_status")) ||
              !(e->grant != GRANT_NONE ? cJSON_AddStringToObject(ce, "grant", grant_name(e->grant))
                                       : cJSON_AddNullToObject(ce, "grant"));
        if (bad || !cJSON_AddItemToObject(codes, e->hash, ce)) {
            cJSON_Delete(ce);
            bad = 1;
        }
    }
    cJSON *rts = NULL;
    if (!bad)
        bad = !(rts = cJSON_AddObjectToObject(o, "refresh_tokens"));
    for (ent *e = c->oldest; !bad && e; e = e->newer) {
        if (!e->is_rt || e->refresh_requests == 0)
            continue;
        cJSON *re = cJSON_CreateObject();
        bad = !re || !cJSON_AddNumberToObject(re, "requests", (double)e->refresh_requests);
        if (bad || !cJSON_AddItemToObject(rts, e->hash, re)) {
            cJSON_Delete(re);
            bad = 1;
        }
    }
    if (!bad)
        bad = !cJSON_AddNumberToObject(grants, "active", (double)c->grants_active) ||
              !cJSON_AddNumberToObject(grants, "revoked", (double)c->grants_revoked) ||
              !cJSON_AddNumberToObject(grants, "deauthorized", (double)c->grants_deauthorized);
    pthread_mutex_unlock(&c->mu);
    if (bad) {
        cJSON_Delete(o);
        return -1;
    }
    r->event = "stats";
    return resp_json(r, 200, o);
}

/* ---- routing ------------------------------------------------------------ */

int sim_core_handle(sim_core_t *c, const sim_core_req *rq, int64_t now_ms, sim_core_resp *out,
                    err_t *e)
{
    memset(out, 0, sizeof *out);
    const char *uri = rq->uri ? rq->uri : "";
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    const char *query = q ? q + 1 : "";
    const char *method = rq->method ? rq->method : "";
    static const struct {
        const char *path;
        const char *method;
    } routes[] = {
        {"/oauth/authorize", "GET"},
        {"/oauth/token", "POST"},
        {"/oauth/deauthorize", "POST"},
        {"/_sim/stats", "GET"},
    };
    int route = -1;
    for (int i = 0; i < (int)(sizeof routes / sizeof routes[0]); i++)
        if (strlen(routes[i].path) == plen && memcmp(routes[i].path, uri, plen) == 0)
            route = i;
    int rc;
    if (route < 0) {
        rc = resp_err(out, 404, "not_found", "Unrecognized request URL.", "not_found");
    } else if (strcmp(method, routes[route].method) != 0) {
        rc = resp_err(out, 405, "method_not_allowed", "Method not allowed for this URL.",
                      "method_not_allowed");
        out->allow = routes[route].method;
    } else {
        switch (route) {
        case 0:
            rc = h_authorize(c, query, now_ms, out);
            break;
        case 1:
            rc = h_token(c, rq, now_ms, out);
            break;
        case 2:
            rc = h_deauthorize(c, rq, out);
            break;
        default:
            rc = h_stats(c, out);
            break;
        }
    }
    if (rc != 0) {
        sim_core_resp_free(out);
        return err_set(e, ERRC_RETRIABLE, "sim_core: internal error (out of memory or RNG)");
    }
    return 0;
}
