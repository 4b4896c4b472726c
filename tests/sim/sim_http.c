/*
 * sim_http — see sim_http.h. libmicrohttpd with an internal polling thread
 * and one thread per connection, so a delayed or hanging request blocks only
 * its own connection. Each request gets a context created by the URI log
 * callback (which also keeps the raw, undecoded request-target) and freed by
 * the completion callback.
 */
#include "tests/sim/sim_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"

#define SLEEP_SLICE_MS  20
#define HANG_POLL_MS    50
#define IDLE_TIMEOUT_S  30
#define THREAD_STACK    (512 * 1024)
#define LISTEN_HOST_MAX 256

static const char INTERNAL_ERR[] =
    "{\"error\":\"api_error\",\"error_description\":\"Internal simulator error.\"}";
static const char TOO_LARGE[] =
    "{\"error\":\"invalid_request\",\"error_description\":\"Request body too large.\"}";
static const char URI_TOO_LONG[] =
    "{\"error\":\"invalid_request\",\"error_description\":\"Request URI too long.\"}";

struct sim_http {
    struct MHD_Daemon *d;
    sim_core_t *core;
    atomic_int stopping;
    int port;
};

typedef struct {
    char *uri;
    int uri_too_long;
    int started;
    buf_t body; /* form posts: client secrets, codes */
} req_ctx;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Sleep ms, waking early when the server stops. */
static void sleep_interruptible(sim_http_t *h, long ms)
{
    int64_t end = clock_mono_ms() + ms;
    for (;;) {
        if (atomic_load(&h->stopping))
            return;
        int64_t left = end - clock_mono_ms();
        if (left <= 0)
            return;
        sleep_ms(left < SLEEP_SLICE_MS ? (long)left : SLEEP_SLICE_MS);
    }
}

/* Answer nothing until the peer closes, the server stops or the bound passes. */
static void hang(sim_http_t *h, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    int64_t end = clock_mono_ms() + SIM_CORE_HANG_MAX_MS;
    while (!atomic_load(&h->stopping) && clock_mono_ms() < end) {
        if (fd < 0) {
            sleep_ms(HANG_POLL_MS);
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
        int n = poll(&p, 1, HANG_POLL_MS);
        if (n < 0 && errno != EINTR)
            return;
        if (n <= 0)
            continue;
        if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
            return;
        char ch;
        ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return;
        sleep_ms(HANG_POLL_MS); /* pipelined bytes: keep hanging */
    }
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    req_ctx *rc = calloc(1, sizeof *rc);
    if (rc)
        buf_init(&rc->body, SIM_HTTP_BODY_MAX, 1);
    if (!rc)
        return NULL;
    size_t n = strlen(uri);
    if (n > SIM_HTTP_URI_MAX) {
        rc->uri_too_long = 1;
        return rc;
    }
    rc->uri = malloc(n + 1);
    if (!rc->uri) {
        free(rc);
        return NULL;
    }
    memcpy(rc->uri, uri, n + 1);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_ctx *rc = *con_cls;
    if (!rc)
        return;
    free(rc->uri);
    buf_free(&rc->body);
    free(rc);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* Our own cut/hang faults close connections on purpose: not a warning. */
    log_level lvl = strstr(msg, "Application reported internal error") ? LOGL_DEBUG : LOGL_WARN;
    log_kv(lvl, "mhd", "msg", msg);
}

static enum MHD_Result send_static(struct MHD_Connection *conn, unsigned status, const char *json)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, const sim_core_resp *r)
{
    const char *body = r->body ? r->body : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    int ok = 1;
    char num[32];
    if (r->content_type)
        ok &=
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type) == MHD_YES;
    if (r->no_store) {
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES;
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_PRAGMA, "no-cache") == MHD_YES;
    }
    if (r->location)
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location) == MHD_YES;
    if (r->retry_after_s > 0) {
        snprintf(num, sizeof num, "%d", r->retry_after_s);
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, num) == MHD_YES;
    }
    if (r->www_authenticate)
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                      "Basic realm=\"oauthq-provider-sim\"") == MHD_YES;
    if (r->allow)
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow) == MHD_YES;
    enum MHD_Result res = ok ? MHD_queue_response(conn, (unsigned)r->status, resp) : MHD_NO;
    MHD_destroy_response(resp);
    return res;
}

static void log_request(const char *method, const char *uri, const sim_core_resp *r)
{
    char path[128], status[16], hash[13];
    size_t plen = strcspn(uri, "?");
    if (plen >= sizeof path)
        plen = sizeof path - 1;
    memcpy(path, uri, plen);
    path[plen] = '\0';
    snprintf(status, sizeof status, "%d",
             r->action == SIM_CORE_ANSWER ? r->status : 0); /* 0: no answer sent */
    snprintf(hash, sizeof hash, "%.12s", r->code_sha256);
    log_level lvl = strcmp(path, "/_sim/stats") == 0 ? LOGL_DEBUG : LOGL_INFO;
    if (!log_enabled(lvl))
        return;
    if (hash[0])
        log_kv(lvl, "sim_request", "method", method, "path", path, "status", status, "outcome",
               r->event ? r->event : "", "code_sha256", hash);
    else
        log_kv(lvl, "sim_request", "method", method, "path", path, "status", status, "outcome",
               r->event ? r->event : "");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)url;
    (void)version;
    sim_http_t *h = cls;
    req_ctx *rc = *con_cls;
    if (!rc)
        return MHD_NO;
    if (!rc->started) {
        rc->started = 1;
        if (rc->uri_too_long)
            return send_static(conn, MHD_HTTP_URI_TOO_LONG, URI_TOO_LONG);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno != 0 || end == cl || v > SIM_HTTP_BODY_MAX)
                return send_static(conn, MHD_HTTP_CONTENT_TOO_LARGE, TOO_LARGE);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Past the bound (a chunked body) or out of memory: close. */
        if (buf_add(&rc->body, upload_data, *upload_data_size) != 0)
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }

    sim_core_req rq = {
        .method = method,
        .uri = rc->uri ? rc->uri : "",
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .content_type =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .body = buf_str(&rc->body),
        .body_len = buf_len(&rc->body),
    };
    sim_core_resp r;
    err_t e;
    err_clear(&e);
    if (sim_core_handle(h->core, &rq, clock_mono_ms(), &r, &e) != 0) {
        log_kv(LOGL_ERROR, "sim_internal_error", "error", e.msg);
        return send_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, INTERNAL_ERR);
    }
    log_request(method, rq.uri, &r);
    if (r.delay_ms > 0 && r.action != SIM_CORE_HANG)
        sleep_interruptible(h, r.delay_ms);
    enum MHD_Result res;
    switch (r.action) {
    case SIM_CORE_CUT:
        res = MHD_NO; /* MHD closes the connection without an answer */
        break;
    case SIM_CORE_HANG:
        hang(h, conn);
        res = MHD_NO;
        break;
    default:
        res = send_resp(conn, &r);
        break;
    }
    sim_core_resp_free(&r);
    return res;
}

/* Split "HOST:PORT" / "[V6]:PORT" and resolve to a socket address. */
static int resolve_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sslen,
                          err_t *e)
{
    char host[LISTEN_HOST_MAX];
    const char *colon, *hs;
    size_t hlen;
    if (!listen || !*listen)
        return err_set(e, ERRC_FATAL, "listen address is empty");
    if (listen[0] == '[') {
        const char *rb = strchr(listen, ']');
        if (!rb || rb[1] != ':')
            return err_set(e, ERRC_FATAL, "listen address '%s': expected [V6]:PORT", listen);
        hs = listen + 1;
        hlen = (size_t)(rb - hs);
        colon = rb + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return err_set(e, ERRC_FATAL, "listen address '%s': expected HOST:PORT", listen);
        hs = listen;
        hlen = (size_t)(colon - listen);
    }
    if (hlen == 0 || hlen >= sizeof host)
        return err_set(e, ERRC_FATAL, "listen address '%s': bad host", listen);
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    const char *port = colon + 1;
    size_t plen = strlen(port);
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen || atoi(port) > 65535)
        return err_set(e, ERRC_FATAL, "listen address '%s': bad port", listen);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res)
        return err_set(e, ERRC_FATAL, "listen address '%s': %s", listen, gai_strerror(rc));
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

sim_http_t *sim_http_start(sim_core_t *core, const char *listen, err_t *e)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    if (!core) {
        err_set(e, ERRC_FATAL, "sim_http: no core");
        return NULL;
    }
    if (resolve_listen(listen, &ss, &sslen, e) != 0)
        return NULL;
    sim_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        err_set(e, ERRC_FATAL, "sim_http: out of memory");
        return NULL;
    }
    h->core = core;
    atomic_init(&h->stopping, 0);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        /* the logger must be the first option */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)SIM_HTTP_MAX_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)SIM_HTTP_MAX_CONNS,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)THREAD_STACK, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        err_set(e, ERRC_FATAL, "sim_http: cannot listen on %s (address in use or not local?)",
                listen);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&bound, &blen) == 0) {
        if (bound.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        else if (bound.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    }
    return h;
}

int sim_http_port(const sim_http_t *h)
{
    return h ? h->port : -1;
}

void sim_http_stop(sim_http_t *h)
{
    if (!h)
        return;
    atomic_store(&h->stopping, 1);
    MHD_stop_daemon(h->d);
    free(h);
}
