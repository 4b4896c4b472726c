/*
 * provhttp — see provhttp.h. The body and the response live in secret bufs
 * (common/buf); the Retry-After value is kept from the last response only
 * (a 1xx interim response starts a new one).
 */
#include "common/provhttp.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/crypto.h"

#define RETRY_AFTER_HDR 32
#define FORM_MAX        (64 * 1024) /* request body bound: fields are checked far below this */

struct provhttp {
    const char *url;
    CURL *h;
    struct curl_slist *hdrs;
    buf_t form; /* request body: codes, secrets, tokens */
    buf_t resp; /* response body: tokens */
    int overflow;
    char retry_after[RETRY_AFTER_HDR];
};

static void wipe_str(char *s)
{
    if (s)
        crypto_wipe(s, strlen(s));
}

/* Append one header (copied by libcurl): 0 or -1 (list unchanged). */
static int add_header(provhttp_t *p, const char *h)
{
    struct curl_slist *s = curl_slist_append(p->hdrs, h);
    if (!s)
        return -1;
    p->hdrs = s;
    return 0;
}

provhttp_t *provhttp_new(const char *url, size_t body_max)
{
    provhttp_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->url = url;
    buf_init(&p->form, FORM_MAX, 1);
    buf_init(&p->resp, body_max, 1);
    if (add_header(p, "Accept: application/json") != 0 ||
        add_header(p, "Content-Type: application/x-www-form-urlencoded") != 0 ||
        add_header(p, "Expect:") != 0) {
        provhttp_free(p);
        return NULL;
    }
    return p;
}

int provhttp_form(provhttp_t *p, const char *name, const char *value)
{
    if ((buf_len(&p->form) > 0 && buf_adds(&p->form, "&") != 0) ||
        buf_add_formenc(&p->form, name) != 0 || buf_adds(&p->form, "=") != 0 ||
        buf_add_formenc(&p->form, value) != 0)
        return -1;
    return 0;
}

/* Standard base64 with padding of in[n] appended to b. */
static int b64_std(buf_t *b, const unsigned char *in, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        char q[4] = {t[(v >> 18) & 63], t[(v >> 12) & 63], i + 1 < n ? t[(v >> 6) & 63] : '=',
                     i + 2 < n ? t[v & 63] : '='};
        if (buf_add(b, q, sizeof q) != 0)
            return -1;
    }
    return 0;
}

int provhttp_basic(provhttp_t *p, const char *user, const char *pass)
{
    buf_t pair, hdr;
    buf_init(&pair, FORM_MAX, 1);
    buf_init(&hdr, 2 * FORM_MAX, 1);
    int rc = buf_add_formenc(&pair, user) == 0 && buf_adds(&pair, ":") == 0 &&
                     buf_add_formenc(&pair, pass) == 0 &&
                     buf_adds(&hdr, "Authorization: Basic ") == 0 &&
                     b64_std(&hdr, (const unsigned char *)buf_str(&pair), buf_len(&pair)) == 0 &&
                     add_header(p, buf_str(&hdr)) == 0
                 ? 0
                 : -1;
    buf_free(&pair);
    buf_free(&hdr);
    return rc;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    provhttp_t *p = ud;
    size_t n = size * nmemb;
    int rc = buf_add(&p->resp, ptr, n);
    if (rc == BUF_TOO_LARGE)
        p->overflow = 1;
    return rc == 0 ? n : 0; /* 0 aborts: CURLE_WRITE_ERROR */
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    provhttp_t *p = ud;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        p->retry_after[0] = '\0'; /* a new response (after 1xx) starts */
        return n;
    }
    static const char name[] = "retry-after:";
    size_t nl = sizeof name - 1;
    if (n > nl && strncasecmp(ptr, name, nl) == 0) {
        size_t vl = n - nl;
        if (vl >= sizeof p->retry_after)
            vl = sizeof p->retry_after - 1;
        memcpy(p->retry_after, ptr + nl, vl);
        p->retry_after[vl] = '\0';
    }
    return n;
}

int provhttp_prepare(provhttp_t *p, int connect_ms, int total_ms, void *private_ptr)
{
    CURL *h = p->h ? NULL : curl_easy_init();
    if (!h)
        return -1;
    p->h = h;
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_URL, p->url) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, buf_str(&p->form)) != CURLE_OK;
    bad |=
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)buf_len(&p->form)) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, p->hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)total_ms) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)p->resp.max) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "oauthq-worker") != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, p) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, p) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PRIVATE, private_ptr) != CURLE_OK;
    return bad ? -1 : 0;
}

CURL *provhttp_easy(const provhttp_t *p)
{
    return p ? p->h : NULL;
}

int provhttp_perform(provhttp_t *p)
{
    return p->h ? (int)curl_easy_perform(p->h) : (int)CURLE_FAILED_INIT;
}

long provhttp_status(const provhttp_t *p)
{
    long status = 0;
    if (p && p->h)
        curl_easy_getinfo(p->h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

const char *provhttp_body(const provhttp_t *p, size_t *len)
{
    *len = buf_len(&p->resp);
    return buf_str(&p->resp);
}

const char *provhttp_retry_after(const provhttp_t *p)
{
    return p->retry_after[0] ? p->retry_after : NULL;
}

int provhttp_too_large(const provhttp_t *p, int curl_code)
{
    return p->overflow || curl_code == CURLE_FILESIZE_EXCEEDED;
}

void provhttp_wipe_body(provhttp_t *p)
{
    if (p)
        buf_reset(&p->resp);
}

void provhttp_free(provhttp_t *p)
{
    if (!p)
        return;
    if (p->h)
        curl_easy_cleanup(p->h);
    for (struct curl_slist *s = p->hdrs; s; s = s->next)
        wipe_str(s->data);
    curl_slist_free_all(p->hdrs);
    buf_free(&p->form);
    buf_free(&p->resp);
    crypto_wipe(p, sizeof *p);
    free(p);
}

int provhttp_parse_retry_after(const char *v, int cap)
{
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    long n = 0;
    int digits = 0;
    while (*v >= '0' && *v <= '9') {
        if (++digits > 10)
            return -1;
        n = n * 10 + (*v - '0');
        v++;
    }
    while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
        v++;
    if (digits == 0 || *v != '\0')
        return -1;
    return n > cap ? cap : (int)n;
}

int provhttp_retry_after_s(long status, const char *retry_after, int cap)
{
    int ra = provhttp_parse_retry_after(retry_after, cap);
    if (ra < 0)
        ra = 0;
    return status == 429 && ra < 1 ? 1 : ra;
}

static void json_wipe(cJSON *j)
{
    for (cJSON *it = j; it; it = it->next) {
        if (it->valuestring)
            wipe_str(it->valuestring);
        if (it->child)
            json_wipe(it->child);
    }
}

void provhttp_json_free(cJSON *j)
{
    if (!j)
        return;
    json_wipe(j);
    cJSON_Delete(j);
}

cJSON *provhttp_json_object(const char *body, size_t len, size_t max)
{
    if (!body || len == 0 || len > max || memchr(body, '\0', len))
        return NULL;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (j && !cJSON_IsObject(j)) {
        provhttp_json_free(j);
        j = NULL;
    }
    return j;
}
