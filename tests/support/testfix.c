/* testfix — see testfix.h. */
#include "tests/support/testfix.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/apikeys.h"
#include "common/crypto.h"
#include "common/log.h"
#include "tests/support/testhttp.h"
#include "tests/support/testproc.h"

/* Fixed test keys (32 bytes, base64url): state 0x00..0x1f, data 0x20..0x3f. */
static const char STATE_KEYS[] = "{\"active\":\"k1\",\"keys\":{\"k1\":"
                                 "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}}";
static const char DATA_KEYS[] = "{\"active\":\"d1\",\"keys\":{\"d1\":"
                                "\"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8\"}}";

/* Simulators started and not yet stopped, for testfix_sim_stop_all. */
static pid_t g_sims[TESTFIX_MAX_SIMS];

static int fits(int n, size_t cap)
{
    return n >= 0 && (size_t)n < cap;
}

/* ---- the temporary directory and the build -------------------------------------------- */

int testfix_tmpdir(char *dir, size_t cap, const char *name)
{
    if (!fits(snprintf(dir, cap, "/tmp/oauthq-itest-%s-XXXXXX", name), cap) || !mkdtemp(dir)) {
        fprintf(stderr, "testfix: no temporary directory for %s: %s\n", name, strerror(errno));
        if (cap)
            dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "testfix: could not remove %s: %s\n", path, strerror(errno));
    return 0; /* remove what can be removed */
}

int testfix_tmpdir_remove(const char *dir, const char *prog)
{
    if (!dir || !dir[0])
        return 0;
    if (getenv("OAUTHQ_KEEP_TEST_LOGS")) {
        fprintf(stderr, "%s: logs kept in %s\n", prog, dir);
        return 0;
    }
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return access(dir, F_OK) == 0 ? -1 : 0;
}

int testfix_test_logs(void)
{
    if (mkdir("var", 0755) != 0 && errno != EEXIST)
        return -1;
    if (mkdir("var/test-logs", 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int testfix_build(char *out, size_t cap)
{
    const char *b = getenv("OAUTHQ_BUILD");
    if (!b || !*b)
        b = "build";
    if (b[0] == '/')
        return fits(snprintf(out, cap, "%s", b), cap) ? 0 : -1;
    char cwd[TESTFIX_PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    return fits(snprintf(out, cap, "%s/%s", cwd, b), cap) ? 0 : -1;
}

int testfix_bin(char *out, size_t cap, const char *prog)
{
    char build[TESTFIX_PATH_MAX];
    if (testfix_build(build, sizeof build) < 0 ||
        !fits(snprintf(out, cap, "%s/%s", build, prog), cap))
        return -1;
    if (access(out, X_OK) != 0) {
        fprintf(stderr, "testfix: %s is missing (build it first)\n", out);
        return -1;
    }
    return 0;
}

void testfix_topic_prefix(const char *name, char *out, size_t cap)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "itest-%s-%ld-%ld.", name, (long)getpid(), (long)time(NULL));
    setenv("OAUTHQ_TOPIC_PREFIX", prefix, 1);
    if (out)
        snprintf(out, cap, "%s", prefix);
}

/* ---- files in the temporary directory ------------------------------------------------- */

int testfix_write(const char *dir, const char *name, const char *text, char *path, size_t cap)
{
    char p[TESTFIX_PATH_MAX];
    if (!fits(snprintf(p, sizeof p, "%s/%s", dir, name), sizeof p))
        return -1;
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "testfix: cannot write %s: %s\n", p, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    if (close(fd) != 0 || off < len)
        return -1;
    if (path && !fits(snprintf(path, cap, "%s", p), cap))
        return -1;
    return 0;
}

int testfix_secret(const char *dir, const char *name, const char *secret, char *path, size_t cap)
{
    char line[1024];
    if (!fits(snprintf(line, sizeof line, "%s\n", secret), sizeof line))
        return -1;
    int rc = testfix_write(dir, name, line, path, cap);
    crypto_wipe(line, sizeof line);
    return rc;
}

static int key_file(const char *dir, const char *name, const char *json, const char *env,
                    char *path, size_t cap)
{
    char p[TESTFIX_PATH_MAX];
    if (testfix_write(dir, name, json, p, sizeof p) < 0)
        return -1;
    setenv(env, p, 1);
    if (path && !fits(snprintf(path, cap, "%s", p), cap))
        return -1;
    return 0;
}

int testfix_state_keys(const char *dir, char *path, size_t cap)
{
    return key_file(dir, "state.json", STATE_KEYS, "OAUTHQ_STATE_KEY_FILE", path, cap);
}

int testfix_data_keys(const char *dir, char *path, size_t cap)
{
    return key_file(dir, "data.json", DATA_KEYS, "OAUTHQ_DATA_KEYS_FILE", path, cap);
}

/* Write doc to dir/name, named in env, when ok (building it went well);
 * frees doc either way. */
static int json_file(const char *dir, const char *name, cJSON *doc, int ok, const char *env)
{
    char *text = ok && doc ? cJSON_Print(doc) : NULL;
    int rc = text ? key_file(dir, name, text, env, NULL, 0) : -1;
    free(text);
    cJSON_Delete(doc);
    return rc;
}

int testfix_api_keys(const char *dir, testfix_api_key *keys, size_t n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_AddObjectToObject(doc, "keys") : NULL;
    int rc = list ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char key[APIKEYS_KEY_MAX], hex[65];
        err_t e = {0};
        if (apikeys_generate(keys[i].name, key, hex, &e) < 0) {
            fprintf(stderr, "testfix: api key %s: %s\n", keys[i].name, e.msg);
            rc = -1;
            break;
        }
        snprintf(keys[i].auth, sizeof keys[i].auth, "Authorization: Bearer %s", key);
        crypto_wipe(key, sizeof key);
        if (keys[i].unlisted)
            continue;
        cJSON *k = cJSON_AddObjectToObject(list, keys[i].name);
        cJSON *scopes = k ? cJSON_AddArrayToObject(k, "scopes") : NULL;
        if (!k || !cJSON_AddStringToObject(k, "sha256", hex) || !scopes) {
            rc = -1;
            break;
        }
        const char *s = keys[i].scopes ? keys[i].scopes : "";
        while (*s) {
            size_t len = strcspn(s, ",");
            char scope[64];
            snprintf(scope, sizeof scope, "%.*s", (int)len, s);
            cJSON_AddItemToArray(scopes, cJSON_CreateString(scope));
            s += len + (s[len] == ',');
        }
    }
    return json_file(dir, "api_keys.json", doc, rc == 0, "OAUTHQ_API_KEYS_FILE");
}

static cJSON *provider_json(const testfix_provider *p)
{
    char url[TESTFIX_PATH_MAX];
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "name", p->name);
    cJSON_AddStringToObject(o, "profile", p->profile ? p->profile : "sim");
    snprintf(url, sizeof url, "%s/oauth/authorize", p->base);
    cJSON_AddStringToObject(o, "authorize_url", url);
    snprintf(url, sizeof url, "%s/oauth/token", p->base);
    cJSON_AddStringToObject(o, "token_url", url);
    if (p->deauthorize) {
        snprintf(url, sizeof url, "%s/oauth/deauthorize", p->base);
        cJSON_AddStringToObject(o, "deauthorize_url", url);
    }
    cJSON_AddStringToObject(o, "client_id", p->client_id);
    cJSON_AddStringToObject(o, "client_secret_file", p->secret_file);
    if (p->scope)
        cJSON_AddStringToObject(o, "scope", p->scope);
    if (p->pkce)
        cJSON_AddTrueToObject(o, "pkce");
    cJSON_AddStringToObject(o, "token_auth", p->token_auth ? p->token_auth : "client_secret_post");
    cJSON_AddNumberToObject(o, "code_ttl_s", p->code_ttl_s ? p->code_ttl_s : 300);
    if (p->no_refresh_rotation)
        cJSON_AddFalseToObject(o, "refresh_rotation");
    if (p->refresh_ahead_s)
        cJSON_AddNumberToObject(o, "refresh_ahead_s", p->refresh_ahead_s);
    if (p->issuer)
        cJSON_AddStringToObject(o, "issuer", p->issuer);
    return o;
}

int testfix_providers(const char *dir, const testfix_provider *p, size_t n)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *list = doc ? cJSON_AddArrayToObject(doc, "providers") : NULL;
    int rc = list ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        cJSON *o = provider_json(&p[i]);
        if (!o)
            rc = -1;
        else
            cJSON_AddItemToArray(list, o);
    }
    return json_file(dir, "providers.json", doc, rc == 0, "OAUTHQ_PROVIDERS_FILE");
}

/* ---- processes and addresses ---------------------------------------------------------- */

int testfix_addr_new(testfix_addr *a)
{
    memset(a, 0, sizeof *a);
    a->port = testproc_free_port();
    if (a->port <= 0)
        return -1;
    snprintf(a->listen, sizeof a->listen, "127.0.0.1:%d", a->port);
    snprintf(a->url, sizeof a->url, "http://127.0.0.1:%d", a->port);
    return 0;
}

pid_t testfix_spawn(const char *dir, const char *logname, char *const argv[])
{
    char log[TESTFIX_PATH_MAX];
    if (!fits(snprintf(log, sizeof log, "%s/%s", dir, logname), sizeof log))
        return -1;
    return testproc_spawn(argv, log);
}

/* ---- the provider simulator ----------------------------------------------------------- */

static void track(pid_t pid)
{
    for (int i = 0; i < TESTFIX_MAX_SIMS; i++)
        if (g_sims[i] == 0) {
            g_sims[i] = pid;
            return;
        }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < TESTFIX_MAX_SIMS; i++)
        if (g_sims[i] == pid)
            g_sims[i] = 0;
}

#define SIM_ARGS_MAX 32

int testfix_sim_start(testfix_sim *s, const char *dir, const char *name, const char *client_id,
                      const char *secret_file, const char *const *args, const char *const *extra)
{
    char bin[TESTFIX_PATH_MAX];
    if (testfix_bin(bin, sizeof bin, "oauthq-provider-sim") < 0)
        return -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        memset(s, 0, sizeof *s);
        testfix_addr a;
        if (testfix_addr_new(&a) < 0)
            return -1;
        s->port = a.port;
        snprintf(s->base, sizeof s->base, "%s", a.url);
        if (!fits(snprintf(s->log, sizeof s->log, "%s/%s.log", dir, name), sizeof s->log))
            return -1;
        const char *argv[SIM_ARGS_MAX] = {bin,           "--listen", a.listen,
                                          "--client-id", client_id,  "--client-secret-file",
                                          secret_file};
        int n = 7;
        for (int i = 0; args && args[i] && n < SIM_ARGS_MAX - 1; i++)
            argv[n++] = args[i];
        for (int i = 0; extra && extra[i] && n < SIM_ARGS_MAX - 1; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        s->pid = testproc_spawn((char *const *)argv, s->log);
        if (s->pid <= 0)
            return -1;
        track(s->pid);
        char url[128];
        snprintf(url, sizeof url, "%s/_sim/stats", s->base);
        /* An answer from a process that took the port first is no start:
         * ours must still be running. */
        if (testproc_wait_http(url, 10000) == 0 && waitpid(s->pid, NULL, WNOHANG) == 0)
            return 0;
        testproc_stop(s->pid, 2000);
        untrack(s->pid);
    }
    fprintf(stderr, "testfix: simulator %s did not start (see %s)\n", name, s->log);
    s->pid = 0;
    return -1;
}

int testfix_sim_stop(testfix_sim *s)
{
    if (s->pid <= 0)
        return -1;
    int rc = testproc_stop(s->pid, 5000);
    untrack(s->pid);
    s->pid = 0;
    return rc;
}

void testfix_sim_stop_all(void)
{
    for (int i = 0; i < TESTFIX_MAX_SIMS; i++)
        if (g_sims[i] > 0) {
            testproc_stop(g_sims[i], 5000);
            g_sims[i] = 0;
        }
}

cJSON *testfix_sim_stats(const char *base)
{
    char url[128];
    snprintf(url, sizeof url, "%s/_sim/stats", base);
    testhttp_resp r;
    cJSON *j = NULL;
    if (testhttp_do("GET", url, NULL, NULL, &r) == 0 && r.status == 200)
        j = cJSON_Parse(r.body);
    testhttp_resp_free(&r);
    if (!j)
        fail_msg("no stats from %s", url);
    return j;
}

long testfix_sim_grants(const cJSON *stats, const char *which)
{
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(stats, "grants"), which);
    if (!cJSON_IsNumber(v))
        fail_msg("no grants.%s in the simulator's stats", which);
    return (long)v->valuedouble;
}

const cJSON *testfix_sim_code(const cJSON *stats, const char *code)
{
    char hex[CRYPTO_SHA256_HEX];
    crypto_sha256_hex(code, strlen(code), hex);
    return cJSON_GetObjectItem(cJSON_GetObjectItem(stats, "codes"), hex);
}

long testfix_sim_code_num(const cJSON *stats, const char *code, const char *key)
{
    const cJSON *c = testfix_sim_code(stats, code);
    if (!c)
        fail_msg("the simulator's stats have no entry for the code");
    const cJSON *v = cJSON_GetObjectItem(c, key);
    if (!cJSON_IsNumber(v))
        fail_msg("no %s in the simulator's stats of the code", key);
    return (long)v->valuedouble;
}

/* ---- the product's log lines ---------------------------------------------------------- */

static char *g_log;
static size_t g_log_len, g_log_cap;

static void on_log(const char *line, void *ud)
{
    (void)ud;
    size_t n = strlen(line);
    if (!g_log || g_log_len + n + 2 > g_log_cap)
        return;
    memcpy(g_log + g_log_len, line, n);
    g_log_len += n;
    g_log[g_log_len++] = '\n';
    g_log[g_log_len] = '\0';
}

int testfix_log_capture(size_t cap)
{
    testfix_log_capture_end();
    g_log = calloc(1, cap);
    if (!g_log)
        return -1;
    g_log_cap = cap;
    log_set_sink(on_log, NULL);
    return 0;
}

const char *testfix_log_text(void)
{
    return g_log ? g_log : "";
}

void testfix_log_capture_end(void)
{
    log_set_sink(NULL, NULL);
    if (g_log)
        crypto_wipe(g_log, g_log_cap);
    free(g_log);
    g_log = NULL;
    g_log_len = g_log_cap = 0;
}

/* ---- URLs ----------------------------------------------------------------------------- */

int testfix_authorize_url(char *out, size_t cap, const char *base, const char *client_id,
                          const char *redirect_uri, const char *tail)
{
    char *enc = curl_easy_escape(NULL, redirect_uri, 0);
    if (!enc)
        return -1;
    int n =
        snprintf(out, cap, "%s/oauth/authorize?response_type=code&client_id=%s&redirect_uri=%s%s",
                 base, client_id, enc, tail ? tail : "");
    curl_free(enc);
    return fits(n, cap) ? 0 : -1;
}

char *testfix_url_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    size_t nl = strlen(name);
    while (q) {
        q++;
        if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t n = strcspn(v, "&#");
            char *out = malloc(n + 1);
            if (!out)
                return NULL;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        q = strchr(q, '&');
    }
    return NULL;
}
