/*
 * testhttp — a small blocking libcurl client for integration tests.
 *
 * One request per call, no redirect following, default timeout
 * TESTHTTP_TIMEOUT_MS. Fills the status, the body (malloc'd, NUL-terminated,
 * bounded by TESTHTTP_BODY_MAX), all response headers as one string, and a
 * few headers by name. A POST body is sent as given, with curl's default
 * Content-Type application/x-www-form-urlencoded unless a header overrides it.
 */
#ifndef OAUTHQ_TESTS_SUPPORT_TESTHTTP_H
#define OAUTHQ_TESTS_SUPPORT_TESTHTTP_H

#include <stddef.h>

#define TESTHTTP_TIMEOUT_MS  10000
#define TESTHTTP_BODY_MAX    (64L * 1024 * 1024)
#define TESTHTTP_HEADERS_MAX 65536

typedef struct {
    long status;     /* HTTP status; 0 when no answer */
    char *body;      /* malloc'd, NUL-terminated ("" when empty) */
    size_t body_len; /* bytes in body */
    char *headers;   /* malloc'd raw response header block ("Name: value\r\n"...) */
    char location[4096];
    char content_type[256];
    char retry_after[64];
    char cache_control[256];
    char set_cookie[1024];
    char www_authenticate[256];
    int curl_code;   /* CURLcode: 0 when an HTTP answer arrived */
    char error[256]; /* curl's message when curl_code != 0 */
    long elapsed_ms; /* wall time of the request */
} testhttp_resp;

/* Send method url with optional NULL-terminated "Name: value" headers and
 * body; 0 when any HTTP answer arrived, -1 on transport failure (see
 * out->curl_code/error). out must be freed with testhttp_resp_free. */
int testhttp_do(const char *method, const char *url, const char *const *headers, const char *body,
                testhttp_resp *out);

/* testhttp_do with a total timeout of timeout_ms. */
int testhttp_do_timeout(const char *method, const char *url, const char *const *headers,
                        const char *body, long timeout_ms, testhttp_resp *out);

/* "Cookie: n1=v1; n2=v2" from every Set-Cookie of r (what a browser
 * would send back), into out[cap]; "" when r set none. */
void testhttp_cookie_header(const testhttp_resp *r, char *out, size_t cap);

/* Free what out owns and zero it; NULL is a no-op. */
void testhttp_resp_free(testhttp_resp *r);

#endif
