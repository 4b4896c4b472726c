/* Unit tests of common/provhttp: the wire rules every provider request follows, checked on
 * the bytes a loopback server receives (one canned answer per connection). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/provhttp.h"

#define REQ_MAX 8192

typedef struct {
    int lfd, port;
    const char *answer; /* written after each request, then the connection is closed */
    int nconn;          /* connections accepted */
    char req[REQ_MAX];  /* the first request's bytes */
    pthread_t th;
} server;

/* Read one request (headers, then Content-Length bytes), bounded by 2 s per read. */
static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (n + 1 >= cap || poll(&p, 1, 2000) <= 0)
            break;
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        buf[n] = '\0';
        const char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(buf, "content-length:");
            size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            if (n >= want)
                break;
        }
    }
    return n;
}

static void *serve(void *arg)
{
    server *s = arg;
    for (int i = 0; i < 4; i++) { /* bounded: a client following redirects would come back */
        struct pollfd p = {s->lfd, POLLIN, 0};
        if (poll(&p, 1, 1500) <= 0)
            break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        static char buf[REQ_MAX];
        read_request(fd, buf, sizeof buf);
        if (s->nconn++ == 0)
            snprintf(s->req, sizeof s->req, "%s", buf);
        ssize_t w = write(fd, s->answer, strlen(s->answer));
        (void)w;
        close(fd);
    }
    return NULL;
}

static void server_start(server *s, const char *answer)
{
    memset(s, 0, sizeof *s);
    s->answer = answer;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void server_stop(server *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* One POST through provhttp to the server; returns the CURLcode, the handle in *out. */
static int post(server *s, size_t body_max, provhttp_t **out)
{
    static char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/token", s->port);
    provhttp_t *p = provhttp_new(url, body_max);
    assert_non_null(p);
    assert_int_equal(provhttp_form(p, "grant_type", "authorization_code"), 0);
    assert_int_equal(provhttp_form(p, "code", "a b&c=d"), 0);
    assert_int_equal(provhttp_basic(p, "client:id", "s3cr&t"), 0);
    assert_int_equal(provhttp_prepare(p, 2000, 3000, NULL), 0);
    int rc = provhttp_perform(p);
    *out = p;
    return rc;
}

static void test_request_bytes_follow_the_wire_rules(void **state)
{
    (void)state;
    server s;
    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
                     "Content-Length: 2\r\n\r\n{}");
    provhttp_t *p = NULL;
    assert_int_equal(post(&s, 1024, &p), CURLE_OK);
    server_stop(&s);
    assert_int_equal(provhttp_status(p), 200);
    size_t len = 0;
    assert_string_equal(provhttp_body(p, &len), "{}");
    assert_string_equal(provhttp_retry_after(p), " 7\r\n");
    provhttp_free(p);
    assert_int_equal(s.nconn, 1);
    assert_int_equal(strncmp(s.req, "POST /token HTTP/1.1\r\n", 22), 0);
    assert_non_null(strstr(s.req, "Accept: application/json\r\n"));
    assert_non_null(strstr(s.req, "Content-Type: application/x-www-form-urlencoded\r\n"));
    /* RFC 6749 §2.3.1: each part form-urlencoded, then base64 of "client%3Aid:s3cr%26t". */
    assert_non_null(strstr(s.req, "Authorization: Basic Y2xpZW50JTNBaWQ6czNjciUyNnQ=\r\n"));
    assert_non_null(strstr(s.req, "\r\n\r\ngrant_type=authorization_code&code=a+b%26c%3Dd"));
}

static void test_redirects_are_not_followed(void **state)
{
    (void)state;
    server s;
    server_start(&s, "HTTP/1.1 302 Found\r\nLocation: /token\r\nContent-Length: 0\r\n\r\n");
    provhttp_t *p = NULL;
    assert_int_equal(post(&s, 1024, &p), CURLE_OK);
    server_stop(&s);
    assert_int_equal(provhttp_status(p), 302);
    assert_int_equal(s.nconn, 1); /* the code went out once */
    provhttp_free(p);
}

static void test_answer_larger_than_the_bound_is_cut(void **state)
{
    (void)state;
    static char answer[4096];
    char body[2001];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    /* Without a Content-Length curl cannot refuse early: our buffer's bound must hold. */
    snprintf(answer, sizeof answer, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n%s",
             body);
    server s;
    server_start(&s, answer);
    provhttp_t *p = NULL;
    int rc = post(&s, 1000, &p);
    server_stop(&s);
    assert_int_not_equal(rc, CURLE_OK);
    assert_true(provhttp_too_large(p, rc));
    assert_int_equal(provhttp_status(p), 400);
    size_t len = 0;
    provhttp_body(p, &len);
    assert_true(len <= 1000);
    provhttp_free(p);
}

static void test_retry_after_and_json_rules(void **state)
{
    (void)state;
    assert_int_equal(provhttp_parse_retry_after(" 120 \r\n", 3600), 120);
    assert_int_equal(provhttp_parse_retry_after("99999", 3600), 3600);
    assert_int_equal(provhttp_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 3600), -1);
    assert_int_equal(provhttp_retry_after_s(429, NULL, 3600), 1);
    assert_int_equal(provhttp_retry_after_s(503, NULL, 3600), 0);
    assert_int_equal(provhttp_retry_after_s(503, "5", 3600), 5);
    cJSON *j = provhttp_json_object("{\"a\":\"b\"}", 9, 64);
    assert_non_null(j);
    provhttp_json_free(j);
    assert_null(provhttp_json_object("[1]", 3, 64));
    assert_null(provhttp_json_object("{\"a\":\"b\0c\"}", 11, 64));
    assert_null(provhttp_json_object("{\"a\":\"b\"}", 9, 8));
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_bytes_follow_the_wire_rules),
        cmocka_unit_test(test_redirects_are_not_followed),
        cmocka_unit_test(test_answer_larger_than_the_bound_is_cut),
        cmocka_unit_test(test_retry_after_and_json_rules),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
