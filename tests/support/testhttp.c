/* testhttp — see testhttp.h. */
#include "tests/support/testhttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

typedef struct {
    char *p;
    size_t len, cap, max;
    int overflow;
} buf;

static int buf_add(buf *b, const char *s, size_t n)
{
    if (b->len + n > b->max) {
        b->overflow = 1;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

typedef struct {
    buf body, hdrs;
    testhttp_resp *out;
} ctx;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    ctx *c = ud;
    return buf_add(&c->body, p, sz * n) == 0 ? sz * n : 0;
}

/* Copy the value of "Name: value" into dst when name matches. */
static void take(const char *line, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl + 1;
    size_t vl = len - nl - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    if (vl >= cap)
        vl = cap - 1;
    memcpy(dst, v, vl);
    dst[vl] = '\0';
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    ctx *c = ud;
    size_t len = sz * n;
    testhttp_resp *o = c->out;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* a new response block (e.g. after 100 Continue): start over */
        c->hdrs.len = 0;
        if (c->hdrs.p)
            c->hdrs.p[0] = '\0';
        o->location[0] = o->content_type[0] = o->retry_after[0] = '\0';
        o->cache_control[0] = o->set_cookie[0] = o->www_authenticate[0] = '\0';
        return len;
    }
    buf_add(&c->hdrs, p, len);
    take(p, len, "Location", o->location, sizeof o->location);
    take(p, len, "Content-Type", o->content_type, sizeof o->content_type);
    take(p, len, "Retry-After", o->retry_after, sizeof o->retry_after);
    take(p, len, "Cache-Control", o->cache_control, sizeof o->cache_control);
    take(p, len, "Set-Cookie", o->set_cookie, sizeof o->set_cookie);
    take(p, len, "WWW-Authenticate", o->www_authenticate, sizeof o->www_authenticate);
    return len;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int testhttp_do_timeout(const char *method, const char *url, const char *const *headers,
                        const char *body, long timeout_ms, testhttp_resp *out)
{
    memset(out, 0, sizeof *out);
    ctx c = {.body = {.max = (size_t)TESTHTTP_BODY_MAX},
             .hdrs = {.max = TESTHTTP_HEADERS_MAX},
             .out = out};
    CURL *h = curl_easy_init();
    struct curl_slist *sl = NULL;
    if (!h) {
        out->curl_code = CURLE_FAILED_INIT;
        strcpy(out->error, "curl_easy_init failed");
        return -1;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        struct curl_slist *n = curl_slist_append(sl, headers[i]);
        if (n)
            sl = n;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    if (sl)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
    if (body || (method && strcmp(method, "POST") == 0)) {
        const char *b = body ? body : "";
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(b));
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b);
    }
    if (method && strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (method && strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);

    long long t0 = now_ms();
    CURLcode rc = curl_easy_perform(h);
    out->elapsed_ms = (long)(now_ms() - t0);
    out->curl_code = (int)rc;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    else
        snprintf(out->error, sizeof out->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
    curl_easy_cleanup(h);
    curl_slist_free_all(sl);
    out->body = c.body.p ? c.body.p : calloc(1, 1);
    out->body_len = c.body.len;
    out->headers = c.hdrs.p ? c.hdrs.p : calloc(1, 1);
    c.body.p = c.hdrs.p = NULL; /* ownership moved to out */
    return rc == CURLE_OK ? 0 : -1;
}

int testhttp_do(const char *method, const char *url, const char *const *headers, const char *body,
                testhttp_resp *out)
{
    return testhttp_do_timeout(method, url, headers, body, TESTHTTP_TIMEOUT_MS, out);
}

void testhttp_resp_free(testhttp_resp *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

void testhttp_cookie_header(const testhttp_resp *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *h = r->headers; h && *h;) {
        const char *eol = strchr(h, '\n');
        size_t n = eol ? (size_t)(eol - h) : strlen(h);
        if (n > 11 && strncasecmp(h, "Set-Cookie:", 11) == 0) {
            const char *v = h + 11;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, ";\r\n");
            int w = snprintf(out + o, cap - o, "%s%.*s", o ? "; " : "Cookie: ", (int)vl, v);
            if (w < 0 || (size_t)w >= cap - o)
                break;
            o += (size_t)w;
        }
        h += n + (eol ? 1 : 0);
    }
}
