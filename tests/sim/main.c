/*
 * oauthq-provider-sim — a strict Stripe Connect-shaped OAuth provider for
 * tests, demos and benchmarks (SPEC §7).
 *
 *   oauthq-provider-sim --listen HOST:PORT --client-id ID
 *       --client-secret-file PATH [--redirect-uri URI]... [--code-ttl S]
 *       [--latency-ms N] [--access-ttl S] [--no-refresh-rotation]
 *
 * Bad or missing arguments: message on stderr, exit 2. Runs until SIGTERM or
 * SIGINT, then stops cleanly and exits 0. The client secret is read from a
 * file (never argv) and registered with log_secret(); codes, secrets and
 * tokens are never logged. Logging honours OAUTHQ_LOG_LEVEL and
 * OAUTHQ_LOG_FORMAT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/err.h"
#include "common/log.h"
#include "tests/sim/sim_core.h"
#include "tests/sim/sim_http.h"

#define MAX_REDIRECTS   64
#define SECRET_FILE_MAX 4096

static const char USAGE[] =
    "usage: oauthq-provider-sim --listen HOST:PORT --client-id ID --client-secret-file PATH\n"
    "                           [--redirect-uri URI]... [--code-ttl S] [--latency-ms N]\n"
    "                           [--access-ttl S] [--no-refresh-rotation]\n"
    "\n"
    "A Stripe Connect-shaped OAuth provider simulator (oauthq SPEC section 7).\n"
    "\n"
    "  --listen HOST:PORT        address to listen on ([V6]:PORT for IPv6; port 0 = any)\n"
    "  --client-id ID            the one registered client id\n"
    "  --client-secret-file PATH file holding the client secret (trailing newline trimmed)\n"
    "  --redirect-uri URI        allowed redirect URI (repeatable; none: any http(s) URI)\n"
    "  --code-ttl S              authorization code lifetime in seconds (default 300)\n"
    "  --latency-ms N            extra delay added to every token answer (default 0)\n"
    "  --access-ttl S            announce expires_in=S on every token answer (default: none)\n"
    "  --no-refresh-rotation     answer the same refresh token on refresh (Stripe-like);\n"
    "                            default: rotate, and revoke the grant on reuse\n"
    "  --help                    this text\n"
    "\n"
    "Endpoints: GET /oauth/authorize, POST /oauth/token, POST /oauth/deauthorize,\n"
    "GET /_sim/stats. Fault injection: /oauth/authorize?...&sim_fault=deny|latency:MS|\n"
    "429|500_before|500_after|cut_after|hang applies to that code's first token request;\n"
    "&sim_refresh_fault=F (same values but deny) to the first refresh of its refresh token.\n"
    "Environment: OAUTHQ_LOG_LEVEL (debug|info|warn|error), OAUTHQ_LOG_FORMAT (json|text).\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "oauthq-provider-sim: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'oauthq-provider-sim --help'.\n");
    return 2;
}

/* Parse a decimal in [lo, hi]; 0 or -1. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 9 || strspn(s, "0123456789") != n)
        return -1;
    long v = strtol(s, NULL, 10);
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Read the secret file (bounded), trimming trailing CR/LF. */
static int read_secret(const char *path, char *out, size_t cap, err_t *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERRC_FATAL, "cannot open client secret file %s: %s", path,
                       strerror(errno));
    size_t len = 0;
    for (;;) {
        if (len + 1 >= cap) {
            close(fd);
            return err_set(e, ERRC_FATAL, "client secret file %s is too large", path);
        }
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            return err_set(e, ERRC_FATAL, "cannot read client secret file %s: %s", path,
                           strerror(err));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
        len--;
    out[len] = '\0';
    if (len == 0)
        return err_set(e, ERRC_FATAL, "client secret file %s is empty", path);
    if (strlen(out) != len)
        return err_set(e, ERRC_FATAL, "client secret file %s contains a NUL byte", path);
    if (len >= SIM_CORE_ID_MAX)
        return err_set(e, ERRC_FATAL, "client secret in %s is longer than %d bytes", path,
                       SIM_CORE_ID_MAX - 1);
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen = NULL, *client_id = NULL, *secret_file = NULL;
    const char *redirects[MAX_REDIRECTS];
    size_t n_redirects = 0;
    long code_ttl_s = 300, latency_ms = 0, access_ttl_s = 0;
    int no_rotation = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (strcmp(a, "--no-refresh-rotation") == 0) {
            no_rotation = 1;
            continue;
        }
        if (strcmp(a, "--listen") != 0 && strcmp(a, "--client-id") != 0 &&
            strcmp(a, "--client-secret-file") != 0 && strcmp(a, "--redirect-uri") != 0 &&
            strcmp(a, "--code-ttl") != 0 && strcmp(a, "--latency-ms") != 0 &&
            strcmp(a, "--access-ttl") != 0)
            return usage_error("unknown argument '%s'", a);
        if (i + 1 >= argc)
            return usage_error("%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            if (listen)
                return usage_error("%s given twice", a);
            listen = v;
        } else if (strcmp(a, "--client-id") == 0) {
            if (client_id)
                return usage_error("%s given twice", a);
            if (!*v || strlen(v) >= SIM_CORE_ID_MAX)
                return usage_error("%s: bad client id", a);
            client_id = v;
        } else if (strcmp(a, "--client-secret-file") == 0) {
            if (secret_file)
                return usage_error("%s given twice", a);
            secret_file = v;
        } else if (strcmp(a, "--redirect-uri") == 0) {
            if (n_redirects == MAX_REDIRECTS)
                return usage_error("too many %s (at most 64)", a);
            if ((strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) ||
                strlen(v) >= SIM_CORE_URI_MAX || strchr(v, '#'))
                return usage_error("--redirect-uri '%s' is not an absolute http(s) URI", v);
            redirects[n_redirects++] = v;
        } else if (strcmp(a, "--code-ttl") == 0) {
            if (parse_long(v, 1, 86400, &code_ttl_s) != 0)
                return usage_error("--code-ttl '%s': expected seconds in 1..86400", v);
        } else if (strcmp(a, "--access-ttl") == 0) {
            if (parse_long(v, 1, SIM_CORE_MAX_ACCESS_TTL_MS / 1000, &access_ttl_s) != 0)
                return usage_error("--access-ttl '%s': expected seconds in 1..86400", v);
        } else {
            if (parse_long(v, 0, SIM_CORE_MAX_LATENCY_MS, &latency_ms) != 0)
                return usage_error("--latency-ms '%s': expected 0..600000", v);
        }
    }
    if (!listen)
        return usage_error("%s is required", "--listen");
    if (!client_id)
        return usage_error("%s is required", "--client-id");
    if (!secret_file)
        return usage_error("%s is required", "--client-secret-file");

    err_t e;
    err_clear(&e);
    const char *lvl = getenv("OAUTHQ_LOG_LEVEL"), *fmt = getenv("OAUTHQ_LOG_FORMAT");
    if (log_init("provider-sim", lvl && *lvl ? lvl : "info", fmt && *fmt ? fmt : "json", &e) != 0) {
        fprintf(stderr, "oauthq-provider-sim: %s\n", e.msg);
        return 2;
    }
    char secret[SECRET_FILE_MAX];
    if (read_secret(secret_file, secret, sizeof secret, &e) != 0) {
        fprintf(stderr, "oauthq-provider-sim: %s\n", e.msg);
        return 2;
    }
    if (log_secret(secret, strlen(secret)) != 0)
        log_kv(LOGL_WARN, "secret_not_scrubbed", "reason", "too short to register for redaction");

    /* Block the stop signals before any thread exists; main waits for them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    sim_core_opts o = {
        .client_id = client_id,
        .client_secret = secret,
        .redirect_uris = redirects,
        .n_redirect_uris = n_redirects,
        .code_ttl_ms = (int64_t)code_ttl_s * 1000,
        .latency_ms = latency_ms,
        .access_ttl_ms = (int64_t)access_ttl_s * 1000,
        .no_refresh_rotation = no_rotation,
    };
    sim_core_t *core = sim_core_new(&o, &e);
    OPENSSL_cleanse(secret, sizeof secret);
    if (!core) {
        log_kv(LOGL_ERROR, "start_failed", "error", e.msg);
        return 1;
    }
    sim_http_t *http = sim_http_start(core, listen, &e);
    if (!http) {
        log_kv(LOGL_ERROR, "start_failed", "error", e.msg);
        sim_core_free(core);
        return 1;
    }
    char port[16], ttl[24], lat[24], nred[16], attl[24];
    snprintf(port, sizeof port, "%d", sim_http_port(http));
    snprintf(ttl, sizeof ttl, "%ld", code_ttl_s);
    snprintf(lat, sizeof lat, "%ld", latency_ms);
    snprintf(nred, sizeof nred, "%zu", n_redirects);
    snprintf(attl, sizeof attl, "%ld", access_ttl_s);
    log_kv(LOGL_INFO, "listening", "listen", listen, "port", port, "client_id", client_id,
           "code_ttl_s", ttl, "latency_ms", lat, "redirect_uris", nred, "access_ttl_s", attl,
           "refresh_rotation", no_rotation ? "off" : "on");

    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    char signame[16];
    snprintf(signame, sizeof signame, "%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    log_kv(LOGL_INFO, "stopping", "signal", signame);
    sim_http_stop(http);
    sim_core_free(core);
    log_kv(LOGL_INFO, "stopped");
    return 0;
}
