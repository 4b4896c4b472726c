/* query — see query.h. Pure; any thread. */
#include "producer/query.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode src[n] into dst; returns decoded length or -1. */
static long decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '+') {
            dst[o++] = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            char d = (char)(h << 4 | l);
            if (d == '\0')
                return -1;
            dst[o++] = d;
            i += 2;
        } else if (c == '\0') {
            return -1;
        } else {
            dst[o++] = c;
        }
    }
    return (long)o;
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= QUERY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

int query_parse(const char *qs, size_t len, query_t *q, err_t *e)
{
    q->n = 0;
    if (len > QUERY_MAX_BYTES)
        return err_set(e, ERRC_PERMANENT, "query longer than %d bytes", QUERY_MAX_BYTES);
    size_t used = 0;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && qs[end] != '&')
            end++;
        if (end == i) { /* empty segment ("a=1&&b=2", trailing '&'): skip */
            i = end + 1;
            continue;
        }
        const char *eq = memchr(qs + i, '=', end - i);
        size_t nlen = eq ? (size_t)(eq - (qs + i)) : end - i;
        char name[QUERY_NAME_MAX * 3];
        if (nlen >= sizeof name)
            return err_set(e, ERRC_PERMANENT, "parameter name too long");
        long dn = decode(qs + i, nlen, name);
        if (dn < 0 || !name_ok(name, (size_t)dn))
            return err_set(e, ERRC_PERMANENT, "invalid parameter name");
        name[dn] = '\0';
        for (size_t k = 0; k < q->n; k++)
            if (strcmp(q->p[k].name, name) == 0)
                return err_set(e, ERRC_PERMANENT, "parameter '%s' given more than once", name);
        if (q->n == QUERY_MAX_PARAMS)
            return err_set(e, ERRC_PERMANENT, "more than %d parameters", QUERY_MAX_PARAMS);
        const char *vsrc = eq ? eq + 1 : qs + end;
        size_t vlen = eq ? (size_t)(qs + end - vsrc) : 0;
        char *dst = q->buf + used;
        long dv = decode(vsrc, vlen, dst); /* decoded ≤ encoded: fits in buf */
        if (dv < 0)
            return err_set(e, ERRC_PERMANENT, "parameter '%s': invalid %%-encoding", name);
        dst[dv] = '\0';
        used += (size_t)dv + 1;
        memcpy(q->p[q->n].name, name, (size_t)dn + 1);
        q->p[q->n].value = dst;
        q->p[q->n].len = (size_t)dv;
        q->n++;
        i = end + 1;
    }
    return 0;
}

const char *query_get(const query_t *q, const char *name, size_t *len)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->p[i].name, name) == 0) {
            if (len)
                *len = q->p[i].len;
            return q->p[i].value;
        }
    return NULL;
}

long query_escape(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        int unreserved = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                         (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' ||
                         *p == '~';
        size_t need = unreserved ? 1 : 3;
        if (o + need + 1 > cap)
            return -1;
        if (unreserved) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (cap == 0)
        return -1;
    out[o] = '\0';
    return (long)o;
}
