/*
 * log — see log.h.
 *
 * Global state (level, format, component, secret registry, sink) is set at
 * start-up by the main thread and read by every thread; the registry and
 * writes are protected by one mutex. Rendering is bounded: an over-long
 * value is cut and the line ends with a truncation marker.
 */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define REDACTED "[REDACTED]"

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_component[32] = "oauthq";
static log_level g_level = LOGL_INFO;
static int g_json = 1;
static char *g_secrets[LOG_SECRETS_MAX];
static size_t g_secret_lens[LOG_SECRETS_MAX];
static size_t g_nsecrets;
static void (*g_sink)(const char *line, void *ud);
static void *g_sink_ud;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_init(const char *component, const char *level, const char *format, err_t *e)
{
    int lvl = -1;
    for (int i = 0; i < 4; i++)
        if (level && strcasecmp(level, level_names[i]) == 0)
            lvl = i;
    if (lvl < 0)
        return err_set(e, ERRC_FATAL, "log level '%.32s' is not debug|info|warn|error",
                       level ? level : "(null)");
    int json;
    if (format && strcasecmp(format, "json") == 0)
        json = 1;
    else if (format && strcasecmp(format, "text") == 0)
        json = 0;
    else
        return err_set(e, ERRC_FATAL, "log format '%.32s' is not json|text",
                       format ? format : "(null)");
    pthread_mutex_lock(&log_mu);
    snprintf(g_component, sizeof g_component, "%s", component ? component : "oauthq");
    g_level = (log_level)lvl;
    g_json = json;
    pthread_mutex_unlock(&log_mu);
    return 0;
}

int log_secret(const char *value, size_t len)
{
    if (!value || len < LOG_SECRET_MIN_LEN)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < g_nsecrets; i++) {
        if (g_secret_lens[i] == len && memcmp(g_secrets[i], value, len) == 0) {
            rc = 0; /* already known */
            goto out;
        }
    }
    if (g_nsecrets < LOG_SECRETS_MAX) {
        char *copy = malloc(len + 1);
        if (copy) {
            memcpy(copy, value, len);
            copy[len] = '\0';
            g_secrets[g_nsecrets] = copy;
            g_secret_lens[g_nsecrets] = len;
            g_nsecrets++;
            rc = 0;
        }
    }
out:
    pthread_mutex_unlock(&log_mu);
    return rc;
}

void log_secrets_clear(void)
{
    pthread_mutex_lock(&log_mu);
    for (size_t i = 0; i < g_nsecrets; i++) {
        /* Wipe before free: the copy is itself a secret. */
        volatile char *p = g_secrets[i];
        for (size_t j = 0; j < g_secret_lens[i]; j++)
            p[j] = 0;
        free(g_secrets[i]);
        g_secrets[i] = NULL;
    }
    g_nsecrets = 0;
    pthread_mutex_unlock(&log_mu);
}

int log_enabled(log_level level)
{
    return level >= g_level;
}

void log_set_sink(void (*fn)(const char *line, void *ud), void *ud)
{
    pthread_mutex_lock(&log_mu);
    g_sink = fn;
    g_sink_ud = ud;
    pthread_mutex_unlock(&log_mu);
}

int log_key_is_secret(const char *key)
{
    static const char *const exact[] = {"code",          "state",  "password", "authorization",
                                        "cookie",        "secret", "token",    "code_verifier",
                                        "client_secret", NULL};
    static const char *const contains[] = {"secret", "token", "verifier", "password", NULL};
    if (!key)
        return 0;
    for (int i = 0; exact[i]; i++)
        if (strcasecmp(key, exact[i]) == 0)
            return 1;
    for (int i = 0; contains[i]; i++)
        if (strcasestr(key, contains[i]))
            return 1;
    return 0;
}

/* Bounded output buffer; `full` records truncation. */
typedef struct {
    char *p;
    size_t len, cap;
    int full;
} obuf;

static void ob_putc(obuf *b, char c)
{
    if (b->len + 1 < b->cap)
        b->p[b->len++] = c;
    else
        b->full = 1;
}

static void ob_puts(obuf *b, const char *s)
{
    while (*s)
        ob_putc(b, *s++);
}

/* JSON string escaping (RFC 8259); control bytes as \u00XX. */
static void ob_json_str(obuf *b, const char *s)
{
    ob_putc(b, '"');
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        switch (*u) {
        case '"':
            ob_puts(b, "\\\"");
            break;
        case '\\':
            ob_puts(b, "\\\\");
            break;
        case '\n':
            ob_puts(b, "\\n");
            break;
        case '\r':
            ob_puts(b, "\\r");
            break;
        case '\t':
            ob_puts(b, "\\t");
            break;
        default:
            if (*u < 0x20 || *u == 0x7f) {
                char hex[8];
                snprintf(hex, sizeof hex, "\\u%04x", *u);
                ob_puts(b, hex);
            } else {
                ob_putc(b, (char)*u);
            }
        }
    }
    ob_putc(b, '"');
}

/* Text values: quoted when they contain spaces or quotes; newlines escaped
 * so one event stays one line (log injection). */
static void ob_text_val(obuf *b, const char *s)
{
    int quote = s[0] == '\0' || strpbrk(s, " \"=\t") != NULL;
    if (quote)
        ob_putc(b, '"');
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '\n')
            ob_puts(b, "\\n");
        else if (*u == '"' && quote)
            ob_puts(b, "\\\"");
        else if (*u < 0x20 || *u == 0x7f)
            ob_putc(b, '?');
        else
            ob_putc(b, (char)*u);
    }
    if (quote)
        ob_putc(b, '"');
}

/* Replace every registered secret inside `line`, rebuilding through a
 * second bounded buffer (the marker may be longer than the secret).
 * Caller holds log_mu. */
static void scrub(char *line, size_t cap)
{
    if (g_nsecrets == 0)
        return;
    char tmp[LOG_LINE_MAX];
    tmp[0] = '\0';
    for (size_t i = 0; i < g_nsecrets; i++) {
        const char *hit = strstr(line, g_secrets[i]);
        if (!hit)
            continue;
        obuf b = {tmp, 0, sizeof tmp, 0};
        const char *p = line;
        while ((hit = strstr(p, g_secrets[i])) != NULL) {
            for (; p < hit; p++)
                ob_putc(&b, *p);
            ob_puts(&b, REDACTED);
            p = hit + g_secret_lens[i];
        }
        ob_puts(&b, p);
        size_t n = b.len < cap - 1 ? b.len : cap - 1;
        memcpy(line, tmp, n);
        line[n] = '\0';
    }
}

static void emit(log_level level, const char *event, const char *const *kv, size_t nkv)
{
    if (!log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    obuf b = {line, 0, sizeof line - 16, 0};
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    pthread_mutex_lock(&log_mu);
    if (g_json) {
        ob_puts(&b, "{\"ts\":");
        ob_json_str(&b, ts);
        ob_puts(&b, ",\"level\":");
        ob_json_str(&b, level_names[level]);
        ob_puts(&b, ",\"component\":");
        ob_json_str(&b, g_component);
        ob_puts(&b, ",\"event\":");
        ob_json_str(&b, event);
        for (size_t i = 0; i + 1 < nkv; i += 2) {
            size_t mark = b.len;
            ob_putc(&b, ',');
            ob_json_str(&b, kv[i]);
            ob_putc(&b, ':');
            ob_json_str(&b, log_key_is_secret(kv[i]) ? REDACTED : (kv[i + 1] ? kv[i + 1] : ""));
            if (b.full) {
                /* Drop the field that did not fit; the line stays valid JSON. */
                b.len = mark;
                b.cap = sizeof line;
                b.full = 0;
                ob_puts(&b, ",\"truncated\":true");
                break;
            }
        }
        ob_putc(&b, '}');
    } else {
        ob_puts(&b, ts);
        ob_putc(&b, ' ');
        ob_puts(&b, level_names[level]);
        ob_putc(&b, ' ');
        ob_puts(&b, g_component);
        ob_putc(&b, ' ');
        ob_puts(&b, event);
        for (size_t i = 0; i + 1 < nkv; i += 2) {
            ob_putc(&b, ' ');
            ob_puts(&b, kv[i]);
            ob_putc(&b, '=');
            ob_text_val(&b, log_key_is_secret(kv[i]) ? REDACTED : (kv[i + 1] ? kv[i + 1] : ""));
        }
        if (b.full)
            ob_puts(&b, " [truncated]");
    }
    line[b.len] = '\0';
    scrub(line, sizeof line - 2);
    if (g_sink) {
        g_sink(line, g_sink_ud);
    } else {
        size_t len = strlen(line);
        line[len++] = '\n';
        ssize_t w = write(STDERR_FILENO, line, len);
        (void)w; /* nowhere better to report a failed log write */
    }
    pthread_mutex_unlock(&log_mu);
}

#define KV_MAX 32

void log_kv_(log_level level, const char *event, ...)
{
    if (!log_enabled(level))
        return;
    const char *kv[KV_MAX];
    size_t n = 0;
    va_list ap;
    va_start(ap, event);
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL) {
        if (n < KV_MAX)
            kv[n++] = s;
    }
    va_end(ap);
    emit(level, event, kv, n & ~(size_t)1);
}

const char *log_code_id(const char *sha256_hex, char out[LOG_CODE_ID_LEN + 1])
{
    if (!sha256_hex || !sha256_hex[0])
        snprintf(out, LOG_CODE_ID_LEN + 1, "-");
    else
        snprintf(out, LOG_CODE_ID_LEN + 1, "%.*s", LOG_CODE_ID_LEN, sha256_hex);
    return out;
}
