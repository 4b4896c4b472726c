/* httpd — see httpd.h. */
#include "common/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"

typedef enum { REQ_READING, REQ_DISPATCHED, REQ_SUSPENDED, REQ_RESPONDED } req_state;

struct httpd_req {
    httpd_t *d;
    struct MHD_Connection *conn;
    atomic_int refs;
    /* req_state: written by the connection's MHD thread, read by
     * httpd_wake from any thread (the publisher's, after the deadline
     * already answered): atomic. */
    atomic_int state;
    int wake_pending;    /* guarded by d->mu */
    int timed_out;       /* guarded by d->mu until the wake is processed */
    int64_t deadline_ms; /* monotonic */
    httpd_wake_fn on_wake;
    httpd_req *prev, *next; /* suspended list, guarded by d->mu */
    char *uri;
    char *path; /* uri up to '?', not decoded */
    size_t path_len;
    int uri_too_long;
    char method[16];
    buf_t body; /* secret: form posts may carry secrets */
    int body_too_big;
    char *hdr_name[HTTPD_HEADERS_MAX];
    char *hdr_value[HTTPD_HEADERS_MAX];
    int nhdr;
    void *data;
    void (*data_free)(void *);
    char reqid[20];
};

struct httpd {
    struct MHD_Daemon *mhd;
    httpd_handler handler;
    void *app;
    int max_suspended;
    atomic_int suspended;
    atomic_int draining;
    atomic_int stopping;
    atomic_uint seq;
    unsigned seq_base;
    pthread_mutex_t mu;
    httpd_req *susp_head;
    pthread_t deadline_thread;
    int port;
};

/* ---- request lifetime ---------------------------------------------------- */

void httpd_req_ref(httpd_req *r)
{
    atomic_fetch_add(&r->refs, 1);
}

void httpd_req_unref(httpd_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->data_free && r->data)
        r->data_free(r->data);
    for (int i = 0; i < r->nhdr; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_value[i]);
    }
    buf_free(&r->body);
    if (r->uri) {
        crypto_wipe(r->uri, strlen(r->uri)); /* callback URIs carry codes */
        free(r->uri);
    }
    free(r->path);
    free(r);
}

/* MHD calls this first for every request, with the raw URI: it becomes the
 * request's context (*con_cls), so the handler sees the undecoded query. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    httpd_t *d = cls;
    httpd_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->d = d;
    r->conn = conn;
    r->state = REQ_READING;
    buf_init(&r->body, HTTPD_BODY_MAX, 1);
    size_t n = strnlen(uri, HTTPD_URI_MAX + 1);
    if (n > HTTPD_URI_MAX) {
        r->uri_too_long = 1;
        n = 1;
        uri = "/";
    }
    r->uri = strndup(uri, n);
    if (!r->uri) {
        free(r);
        return NULL;
    }
    const char *q = strchr(r->uri, '?');
    r->path_len = q ? (size_t)(q - r->uri) : n;
    r->path = strndup(r->uri, r->path_len);
    if (!r->path) {
        free(r->uri);
        free(r);
        return NULL;
    }
    snprintf(r->reqid, sizeof r->reqid, "%08x%08x", d->seq_base, atomic_fetch_add(&d->seq, 1));
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    httpd_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    r->conn = NULL;
    httpd_req_unref(r);
}

static void respond_error(httpd_req *r, int status, const char *code, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", code, msg);
    httpd_respond(r, status, "application/json", body, (size_t)n);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)url;
    (void)version;
    httpd_t *d = cls;
    httpd_req *r = *con_cls;
    if (!r)
        return MHD_NO; /* allocation failed in on_uri: drop the connection */
    r->conn = conn;
    switch ((req_state)atomic_load(&r->state)) {
    case REQ_READING:
        if (r->method[0] == '\0') {
            /* First call: headers only. Answer later, once the body ended. */
            snprintf(r->method, sizeof r->method, "%s", method);
            return MHD_YES;
        }
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            if (r->body_too_big)
                return MHD_YES;
            int rc = buf_add(&r->body, upload_data, n);
            if (rc == BUF_TOO_LARGE)
                r->body_too_big = 1; /* keep reading (and discarding) to answer 413 */
            return rc == BUF_NOMEM ? MHD_NO : MHD_YES;
        }
        r->state = REQ_DISPATCHED;
        if (r->uri_too_long)
            respond_error(r, 414, "uri_too_long", "Request URI too long.");
        else if (r->body_too_big)
            respond_error(r, 413, "body_too_large", "Request body too large.");
        else if (atomic_load(&d->draining))
            respond_error(r, 503, "shutting_down", "Server is shutting down; retry.");
        else
            d->handler(d->app, r);
        break;
    case REQ_SUSPENDED: {
        /* Resumed by httpd_wake or the deadline thread. */
        pthread_mutex_lock(&d->mu);
        int timed_out = r->timed_out;
        pthread_mutex_unlock(&d->mu);
        atomic_fetch_sub(&d->suspended, 1);
        r->state = REQ_DISPATCHED;
        r->on_wake(d->app, r, timed_out);
        break;
    }
    case REQ_DISPATCHED:
    case REQ_RESPONDED:
        break;
    }
    if (r->state == REQ_SUSPENDED)
        return MHD_YES;
    if (r->state != REQ_RESPONDED) {
        log_kv(LOGL_ERROR, "http_no_response", "request_id", r->reqid, "path", httpd_path(r));
        respond_error(r, 500, "internal", "Internal error.");
    }
    return MHD_YES;
}

/* ---- deadlines ------------------------------------------------------------ */

/* Caller holds d->mu. */
static void unlink_suspended(httpd_t *d, httpd_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        d->susp_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Caller holds d->mu; r is suspended and not yet woken. */
static void wake_locked(httpd_t *d, httpd_req *r, int timed_out)
{
    r->wake_pending = 1;
    r->timed_out = timed_out;
    unlink_suspended(d, r);
    MHD_resume_connection(r->conn);
}

static void *deadline_main(void *arg)
{
    httpd_t *d = arg;
    while (!atomic_load(&d->stopping)) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = clock_mono_ms();
        pthread_mutex_lock(&d->mu);
        httpd_req *r = d->susp_head;
        while (r) {
            httpd_req *next = r->next;
            if (now >= r->deadline_ms)
                wake_locked(d, r, 1);
            r = next;
        }
        pthread_mutex_unlock(&d->mu);
    }
    return NULL;
}

int httpd_suspend(httpd_req *r, int timeout_ms, httpd_wake_fn on_wake)
{
    httpd_t *d = r->d;
    if (atomic_fetch_add(&d->suspended, 1) >= d->max_suspended) {
        atomic_fetch_sub(&d->suspended, 1);
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    r->on_wake = on_wake;
    r->deadline_ms = clock_mono_ms() + timeout_ms;
    r->wake_pending = 0;
    r->timed_out = 0;
    r->state = REQ_SUSPENDED;
    r->prev = NULL;
    r->next = d->susp_head;
    if (d->susp_head)
        d->susp_head->prev = r;
    d->susp_head = r;
    MHD_suspend_connection(r->conn);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

void httpd_wake(httpd_req *r)
{
    httpd_t *d = r->d;
    pthread_mutex_lock(&d->mu);
    if (r->state == REQ_SUSPENDED && !r->wake_pending)
        wake_locked(d, r, 0);
    pthread_mutex_unlock(&d->mu);
}

int httpd_suspended(httpd_t *d)
{
    return atomic_load(&d->suspended);
}

/* ---- accessors --------------------------------------------------------------- */

const char *httpd_method(const httpd_req *r)
{
    return r->method;
}

const char *httpd_path(const httpd_req *r)
{
    return r->path;
}

const char *httpd_query(const httpd_req *r, size_t *len)
{
    const char *q = r->uri + r->path_len;
    if (*q == '?')
        q++;
    if (len)
        *len = strlen(q);
    return q;
}

const char *httpd_header(const httpd_req *r, const char *name)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

const char *httpd_cookie(const httpd_req *r, const char *name)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name) : NULL;
}

const char *httpd_body(const httpd_req *r, size_t *len)
{
    if (len)
        *len = buf_len(&r->body);
    return buf_str(&r->body);
}

int httpd_wants_html(const httpd_req *r)
{
    const char *a = httpd_header(r, "Accept");
    if (!a)
        return 0;
    const char *html = strcasestr(a, "text/html");
    const char *json = strcasestr(a, "application/json");
    return html && (!json || html < json);
}

const char *httpd_request_id(const httpd_req *r)
{
    return r->reqid;
}

void httpd_set_data(httpd_req *r, void *data, void (*free_fn)(void *))
{
    r->data = data;
    r->data_free = free_fn;
}

void *httpd_data(const httpd_req *r)
{
    return r->data;
}

/* ---- responses ------------------------------------------------------------------ */

void httpd_add_header(httpd_req *r, const char *name, const char *value)
{
    if (r->nhdr >= HTTPD_HEADERS_MAX)
        return;
    r->hdr_name[r->nhdr] = strdup(name);
    r->hdr_value[r->nhdr] = strdup(value);
    if (r->hdr_name[r->nhdr] && r->hdr_value[r->nhdr])
        r->nhdr++;
}

static int has_header(const httpd_req *r, const char *name)
{
    for (int i = 0; i < r->nhdr; i++)
        if (strcasecmp(r->hdr_name[i], name) == 0)
            return 1;
    return 0;
}

void httpd_respond(httpd_req *r, int status, const char *content_type, const char *body, size_t len)
{
    if (r->state == REQ_RESPONDED || !r->conn)
        return;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return;
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    /* Secure defaults for every answer; handlers may add more. */
    if (!has_header(r, "Cache-Control"))
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "X-Request-Id", r->reqid);
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
    if (atomic_load(&r->d->draining))
        MHD_add_response_header(resp, "Connection", "close");
    MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->state = REQ_RESPONDED;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static int parse_listen(const char *listen, struct sockaddr_in *sa, err_t *e)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof host)
        return err_set(e, ERRC_FATAL, "listen address '%s' is not host:port", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return err_set(e, ERRC_FATAL, "listen address '%s': bad port", listen);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa->sin_addr) != 1)
        return err_set(e, ERRC_FATAL, "listen address '%s': host must be an IPv4 address", listen);
    return 0;
}

httpd_t *httpd_start(const httpd_opts *o, httpd_handler h, void *app, err_t *e)
{
    struct sockaddr_in sa;
    if (parse_listen(o->listen, &sa, e) < 0)
        return NULL;
    httpd_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(e, ERRC_FATAL, "out of memory");
        return NULL;
    }
    d->handler = h;
    d->app = app;
    d->max_suspended = o->max_suspended > 0 ? o->max_suspended : 1024;
    crypto_random(&d->seq_base, sizeof d->seq_base, NULL);
    pthread_mutex_init(&d->mu, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    /* One thread is MHD's internal polling thread alone: a pool of size 1
     * is not a pool (libmicrohttpd warns on every start if asked for one). */
    unsigned threads = (unsigned)(o->threads > 0 ? o->threads : 2);
    struct MHD_OptionItem pool[2] = {{MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL},
                                     {MHD_OPTION_END, 0, NULL}};
    if (threads < 2)
        pool[0] = pool[1];
    d->mhd = MHD_start_daemon(
        flags, ntohs(sa.sin_port), NULL, NULL, on_access, d, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, d, MHD_OPTION_NOTIFY_COMPLETED, on_completed, d,
        MHD_OPTION_ARRAY, pool, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(o->max_connections > 0 ? o->max_connections : 1024),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(o->per_ip_connections > 0 ? o->per_ip_connections : 256),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(HTTPD_URI_MAX + 24 * 1024),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(o->idle_timeout_s > 0 ? o->idle_timeout_s : 30),
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!d->mhd) {
        pthread_mutex_destroy(&d->mu);
        free(d);
        err_set(e, ERRC_FATAL, "cannot listen on %s: %s", o->listen, strerror(errno));
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
    d->port = di ? di->port : ntohs(sa.sin_port);
    if (pthread_create(&d->deadline_thread, NULL, deadline_main, d) != 0) {
        MHD_stop_daemon(d->mhd);
        pthread_mutex_destroy(&d->mu);
        free(d);
        err_set(e, ERRC_FATAL, "cannot start deadline thread");
        return NULL;
    }
    return d;
}

int httpd_port(const httpd_t *d)
{
    return d->port;
}

void httpd_quiesce(httpd_t *d)
{
    atomic_store(&d->draining, 1);
    MHD_socket s = MHD_quiesce_daemon(d->mhd);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

void httpd_stop(httpd_t *d)
{
    if (!d)
        return;
    atomic_store(&d->draining, 1);
    /* MHD must not be stopped with suspended connections: wake them all
     * (their on_wake answers 503 or the result they have) and give the
     * pool a bounded moment to answer. */
    pthread_mutex_lock(&d->mu);
    while (d->susp_head)
        wake_locked(d, d->susp_head, 1);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < 200 && atomic_load(&d->suspended) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&d->stopping, 1);
    pthread_join(d->deadline_thread, NULL);
    MHD_stop_daemon(d->mhd);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
