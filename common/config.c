/* config — see config.h. */
#include "common/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

typedef enum { T_STR, T_INT } vtype;

typedef struct {
    const char *name;
    const char *def;
    const char *doc;
    vtype type;
    size_t off;
    size_t cap; /* strings: buffer size; ints: maximum */
    long min;
} var;

#define STR(f)         T_STR, offsetof(config_t, f), sizeof(((config_t *)0)->f), 0
#define INT(f, lo, hi) T_INT, offsetof(config_t, f), (hi), (lo)

static const var vars[] = {
    {"OAUTHQ_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers (host:port,...)",
     STR(kafka_bootstrap)},
    {"OAUTHQ_TOPIC_PREFIX", "oauthq.", "prefix of every topic name", STR(topic_prefix)},
    {"OAUTHQ_TOPIC_PARTITIONS", "4",
     "partitions of the topics (creation; ids route over it, other counts are refused)",
     INT(topic_partitions, 1, 1024)},
    {"OAUTHQ_TOPIC_REPLICATION", "1", "replication factor when creating topics",
     INT(topic_replication, 1, 16)},
    {"OAUTHQ_LISTEN", "127.0.0.1:8080", "intake HTTP listen address host:port", STR(listen)},
    {"OAUTHQ_PUBLIC_URL", "http://127.0.0.1:8080",
     "external base URL of the intake (redirect_uri, links)", STR(public_url)},
    {"OAUTHQ_DATA_DIR", "var/data", "directory of local SQLite stores and instance id",
     STR(data_dir)},
    {"OAUTHQ_PROVIDERS_FILE", "", "providers JSON file (SPEC §7 shape)", STR(providers_file)},
    {"OAUTHQ_STATE_KEY_FILE", "", "HMAC keyring for state tokens and connection ids",
     STR(state_key_file)},
    {"OAUTHQ_DATA_KEYS_FILE", "", "AES-256-GCM keyring for tokens at rest", STR(data_keys_file)},
    {"OAUTHQ_API_KEYS_FILE", "",
     "platform API keys (SHA-256 hashes and scopes); empty: every server-side call is refused",
     STR(api_keys_file)},
    {"OAUTHQ_INSTANCE_ID", "", "stable instance id (default: persisted in the data dir)",
     STR(instance_id)},
    {"OAUTHQ_LOG_LEVEL", "info", "debug | info | warn | error", STR(log_level)},
    {"OAUTHQ_LOG_FORMAT", "json", "json | text", STR(log_format)},
    {"OAUTHQ_KAFKA_TIMEOUT_MS", "10000", "bound for Kafka admin/metadata calls",
     INT(kafka_timeout_ms, 100, 600000)},
    {"OAUTHQ_STATE_TTL_S", "600", "lifetime of a started flow (state token) in seconds",
     INT(state_ttl_s, 30, 86400)},
    {"OAUTHQ_RETURN_TO_ALLOWLIST", "",
     "comma-separated URL prefixes return_to may start with (empty: none allowed)",
     STR(return_to_allowlist)},
    {"OAUTHQ_HTTP_THREADS", "4", "intake HTTP worker threads", INT(http_threads, 1, 64)},
    {"OAUTHQ_HTTP_MAX_CONNECTIONS", "1024", "intake open connections limit",
     INT(http_max_connections, 1, 65536)},
    {"OAUTHQ_HTTP_PER_IP_CONNECTIONS", "256", "intake connections per client address",
     INT(http_per_ip, 1, 65536)},
    {"OAUTHQ_HTTP_MAX_INFLIGHT", "1024", "callbacks waiting for Kafka at once (then 503)",
     INT(http_max_inflight, 1, 65536)},
    {"OAUTHQ_PRODUCE_TIMEOUT_MS", "5000",
     "delivery bound of a callback record; the HTTP deadline is this + 2 s",
     INT(produce_timeout_ms, 500, 120000)},
    {"OAUTHQ_WORKER_BATCH", "256", "records the worker takes from one consumer poll",
     INT(worker_batch, 1, 10000)},
    {"OAUTHQ_WORKER_COMMIT_MS", "20",
     "worker transaction interval (settles, claims, DLQ and offsets together)",
     INT(worker_commit_ms, 1, 10000)},
    {"OAUTHQ_WORKER_COMMIT_GAP_MS", "2",
     "settles and claims commit this long after the previous transaction ended (not at the tick)",
     INT(worker_commit_gap_ms, 0, 10000)},
    {"OAUTHQ_WORKER_LEASE_MS", "2000",
     "a claimed token request leaves only within this long of its claim",
     INT(worker_lease_ms, 100, 60000)},
    {"OAUTHQ_WORKER_TAKEOVER_MARGIN_MS", "5000",
     "clock-skew margin before a new owner re-sends an open claim",
     INT(worker_takeover_margin_ms, 0, 600000)},
    {"OAUTHQ_WORKER_PROBE_INTERVAL_MS", "30000",
     "after invalid_client: how long a provider's codes are held before one probes again",
     INT(worker_probe_interval_ms, 100, 3600000)},
    {"OAUTHQ_SESSION_EXPIRY_MARGIN_MS", "30000",
     "worker: a session with no callback this long after its expiry becomes expired (covers the "
     "intake's HTTP deadline, clock skew and worker lag)",
     INT(session_expiry_margin_ms, 0, 3600000)},
    {"OAUTHQ_WORKER_BENCH_NO_TXN", "0",
     "bench only: plain offset commits instead of transactions (no exactly-once)",
     INT(worker_bench_no_txn, 0, 1)},
    {"OAUTHQ_WORKER_CONCURRENCY", "256", "token requests in flight at once (one per key)",
     INT(worker_concurrency, 1, 1024)},
    {"OAUTHQ_EXCHANGE_TIMEOUT_MS", "10000", "total bound of one token request",
     INT(exchange_timeout_ms, 100, 120000)},
    {"OAUTHQ_EXCHANGE_CONNECT_TIMEOUT_MS", "3000", "connect bound of one token request",
     INT(exchange_connect_timeout_ms, 100, 60000)},
    {"OAUTHQ_DEMO", "0", "1: the intake serves the demo start page at /", INT(demo, 0, 1)},
    {"OAUTHQ_OPEN_START", "0",
     "1: GET /oauth/start?provider= works without a connect session (demos only)",
     INT(open_start, 0, 1)},
    {"OAUTHQ_STATUS_MAX_WAIT_S", "30", "longest ?wait= a status long-poll may ask for",
     INT(status_max_wait_s, 1, 30)},
    {"OAUTHQ_REFRESH_SKEW_S", "60",
     "GET /v1/connections/{id}/token serves an access token only this long before its expiry",
     INT(refresh_skew_s, 0, 3600)},
    {"OAUTHQ_TOKEN_REFRESH_WAIT_MS", "10000",
     "the token call waits this long for a refresh it asked for, then answers 503 refresh_pending",
     INT(token_refresh_wait_ms, 100, 30000)},
    {"OAUTHQ_WORKER_LISTEN", "127.0.0.1:9102",
     "worker's /metrics, /healthz, /readyz listener (empty: off)", STR(worker_listen)},
    {"OAUTHQ_WEBHOOK_URL", "", "webhook endpoint of the platform (http or https; dispatcher)",
     STR(webhook_url)},
    {"OAUTHQ_WEBHOOK_SECRET_FILE", "",
     "webhook signing secrets, one whsec_<base64> per line (several: rotation)", STR(webhook_keys)},
    {"OAUTHQ_WEBHOOK_LISTEN", "127.0.0.1:9103",
     "dispatcher's /metrics, /healthz, /readyz listener (empty: off)", STR(webhook_listen)},
    {"OAUTHQ_WEBHOOK_CONCURRENCY", "32",
     "webhook deliveries in flight at once (one per connection)",
     INT(webhook_concurrency, 1, 1024)},
    {"OAUTHQ_WEBHOOK_TIMEOUT_MS", "10000", "total bound of one webhook delivery",
     INT(webhook_timeout_ms, 100, 120000)},
    {"OAUTHQ_WEBHOOK_RETRY_BASE_MS", "5000", "first webhook retry delay (doubles, with jitter)",
     INT(webhook_retry_base_ms, 1, 3600000)},
    {"OAUTHQ_WEBHOOK_RETRY_CAP_S", "3600", "longest delay between two webhook attempts",
     INT(webhook_retry_cap_s, 1, 86400)},
    {"OAUTHQ_WEBHOOK_RETRY_MAX_S", "86400",
     "retry a webhook this long after its first attempt, then record it failed",
     INT(webhook_retry_max_s, 1, 2592000)},
    {"OAUTHQ_WEBHOOK_COMMIT_MS", "100",
     "dispatcher transaction interval (delivery states and status offsets together)",
     INT(webhook_commit_ms, 1, 10000)},
};

static const char *lookup(config_getenv_fn fn, const char *name)
{
    return fn ? fn(name) : getenv(name);
}

int config_load(config_t *c, config_getenv_fn getenv_fn, err_t *e)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const var *v = &vars[i];
        const char *val = lookup(getenv_fn, v->name);
        if (!val)
            val = v->def;
        char *field = (char *)c + v->off;
        if (v->type == T_STR) {
            size_t n = strlen(val);
            if (n >= v->cap)
                return err_set(e, ERRC_FATAL, "%s: value too long (%zu bytes, max %zu)", v->name, n,
                               v->cap - 1);
            for (size_t k = 0; k < n; k++)
                if ((unsigned char)val[k] < 0x20)
                    return err_set(e, ERRC_FATAL, "%s: control character in value", v->name);
            memcpy(field, val, n + 1);
        } else {
            char *end = NULL;
            errno = 0;
            long n = strtol(val, &end, 10);
            if (errno || end == val || *end || n < v->min || n > (long)v->cap)
                return err_set(e, ERRC_FATAL, "%s: '%.32s' is not an integer in [%ld, %zu]",
                               v->name, val, v->min, v->cap);
            *(int *)(void *)field = (int)n;
        }
    }
    if (c->kafka_bootstrap[0] == '\0')
        return err_set(e, ERRC_FATAL, "OAUTHQ_KAFKA_BOOTSTRAP: must not be empty");
    for (const char *p = c->topic_prefix; *p; p++)
        if (!(*p == '.' || *p == '_' || *p == '-' || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return err_set(e, ERRC_FATAL, "OAUTHQ_TOPIC_PREFIX: only [A-Za-z0-9._-] allowed");
    if (strchr(c->listen, ':') == NULL)
        return err_set(e, ERRC_FATAL, "OAUTHQ_LISTEN: expected host:port, got '%.64s'", c->listen);
    if (strncmp(c->public_url, "http://", 7) != 0 && strncmp(c->public_url, "https://", 8) != 0)
        return err_set(e, ERRC_FATAL, "OAUTHQ_PUBLIC_URL: must start with http:// or https://");
    size_t n = strlen(c->public_url);
    while (n > 0 && c->public_url[n - 1] == '/')
        c->public_url[--n] = '\0'; /* one canonical form: no trailing slash */
    return 0;
}

int config_read_file(const char *path, char *out, size_t cap, size_t *len, err_t *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERRC_FATAL, "cannot open %s: %s", path, strerror(errno));
    size_t n = 0;
    for (;;) {
        if (n >= cap - 1) {
            char extra;
            ssize_t r = read(fd, &extra, 1);
            close(fd);
            if (r > 0)
                return err_set(e, ERRC_FATAL, "%s: larger than %zu bytes", path, cap - 1);
            break;
        }
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int saved = errno;
            close(fd);
            return err_set(e, ERRC_FATAL, "reading %s: %s", path, strerror(saved));
        }
        if (r == 0) {
            close(fd);
            break;
        }
        n += (size_t)r;
    }
    out[n] = '\0';
    if (len)
        *len = n;
    return 0;
}

int config_secret(const char *name, config_getenv_fn getenv_fn, char *out, size_t cap, size_t *len,
                  err_t *e)
{
    char fname[128];
    snprintf(fname, sizeof fname, "%s_FILE", name);
    const char *val = lookup(getenv_fn, name);
    const char *path = lookup(getenv_fn, fname);
    if (val && *val && path && *path)
        return err_set(e, ERRC_FATAL, "set %s or %s, not both", name, fname);
    size_t n;
    if (path && *path) {
        if (config_read_file(path, out, cap, &n, e) < 0)
            return err_wrap(e, "%s", fname);
        if (n > 0 && out[n - 1] == '\n')
            out[--n] = '\0';
        if (n > 0 && out[n - 1] == '\r')
            out[--n] = '\0';
    } else if (val && *val) {
        n = strlen(val);
        if (n >= cap)
            return err_set(e, ERRC_FATAL, "%s: longer than %zu bytes", name, cap - 1);
        memcpy(out, val, n + 1);
    } else {
        return err_set(e, ERRC_FATAL, "%s or %s must be set", name, fname);
    }
    if (n == 0)
        return err_set(e, ERRC_FATAL, "%s: empty secret", path && *path ? fname : name);
    if (len)
        *len = n;
    return 0;
}

void config_usage(FILE *out)
{
    fprintf(out, "Environment (default in brackets):\n");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        fprintf(out, "  %-26s %s [%s]\n", vars[i].name, vars[i].doc, vars[i].def);
    fprintf(out, "  Secrets are read from NAME_FILE (a path) or NAME.\n");
}

int config_topic(const config_t *c, const char *suffix, char *out, size_t cap, err_t *e)
{
    int n = snprintf(out, cap, "%s%s", c->topic_prefix, suffix);
    if (n < 0 || (size_t)n >= cap || n > 249)
        return err_set(e, ERRC_FATAL, "topic name %s%s too long", c->topic_prefix, suffix);
    return 0;
}
