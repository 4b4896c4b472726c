/*
 * buf — see buf.h. Growth doubles from BUF_INITIAL and is capped at max + 1
 * (room for the NUL), so a buffer never allocates more than its limit needs.
 */
#include "common/buf.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

#define BUF_INITIAL 256

void buf_init(buf_t *b, size_t max, int secret)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->secret = secret;
    b->err = 0;
}

/* Make room for n more bytes plus the NUL: 0, BUF_TOO_LARGE or BUF_NOMEM. */
static int grow(buf_t *b, size_t n)
{
    if (b->err)
        return b->err;
    if (n > b->max - b->len)
        return b->err = BUF_TOO_LARGE;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BUF_INITIAL;
    while (cap < need)
        cap = cap > (SIZE_MAX / 2) ? need : cap * 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p;
    if (b->secret) {
        p = malloc(cap); /* not realloc: the old block must be wiped, not left behind */
        if (!p)
            return b->err = BUF_NOMEM;
        if (b->p) {
            memcpy(p, b->p, b->len + 1);
            crypto_wipe(b->p, b->cap);
            free(b->p);
        }
    } else {
        p = realloc(b->p, cap);
        if (!p)
            return b->err = BUF_NOMEM;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_add(buf_t *b, const void *mem, size_t n)
{
    int rc = grow(b, n);
    if (rc != 0)
        return rc;
    if (n)
        memcpy(b->p + b->len, mem, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_adds(buf_t *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

int buf_add_formenc(buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t need = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        need +=
            isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' || *p == ' ' ? 1 : 3;
    int rc = grow(b, need);
    if (rc != 0)
        return rc;
    char *o = b->p + b->len;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else if (*p == ' ') {
            *o++ = '+';
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    b->len += need;
    b->p[b->len] = '\0';
    return 0;
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    if (b->err)
        return b->err;
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (k < 0)
        return b->err = BUF_NOMEM;
    if ((size_t)k < sizeof small)
        return buf_add(b, small, (size_t)k);
    int rc = grow(b, (size_t)k);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)k;
    return 0;
}

int buf_error(const buf_t *b)
{
    return b->err;
}

char *buf_take(buf_t *b, size_t *len)
{
    if (!b->err && !b->p && grow(b, 0) == 0)
        b->p[0] = '\0';
    if (b->err) {
        buf_free(b);
        return NULL;
    }
    char *p = b->p;
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

const char *buf_str(const buf_t *b)
{
    return b->p ? b->p : "";
}

size_t buf_len(const buf_t *b)
{
    return b->len;
}

void buf_reset(buf_t *b)
{
    if (b->p) {
        if (b->secret)
            crypto_wipe(b->p, b->cap);
        b->p[0] = '\0';
    }
    b->len = 0;
    b->err = 0;
}

void buf_free(buf_t *b)
{
    if (!b)
        return;
    if (b->p && b->secret)
        crypto_wipe(b->p, b->cap);
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->err = 0;
}
