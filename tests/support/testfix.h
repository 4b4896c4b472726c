/*
 * testfix — the fixtures integration tests share: a temporary directory,
 * the files a test writes into it (secrets, key rings, API keys,
 * providers.json), the provider simulator as a process, and the URLs around
 * it.
 *
 * Everything a test writes lives in its temporary directory (files mode
 * 0600), removed at the end unless OAUTHQ_KEEP_TEST_LOGS is set; every
 * process started here is stopped by pid (testproc), testfix_sim_stop_all
 * in the group teardown stops what a failed test left running. Binaries
 * come from $OAUTHQ_BUILD (default build/), as an absolute path. The files
 * that configure the binaries under test are also named in their
 * environment variable (OAUTHQ_STATE_KEY_FILE, OAUTHQ_DATA_KEYS_FILE,
 * OAUTHQ_API_KEYS_FILE, OAUTHQ_PROVIDERS_FILE), which spawned processes
 * inherit. Key material is fixed test data, never a real secret.
 *
 * Setup functions return -1 (or NULL) with a line on stderr on failure;
 * the tests assert. The readings of the simulator's stats (testfix_sim_stats,
 * _grants, _code_num) run inside cmocka tests and fail the running test
 * when the simulator did not answer or the value is missing. Not
 * thread-safe: call from the test's main thread.
 */
#ifndef OAUTHQ_TESTS_SUPPORT_TESTFIX_H
#define OAUTHQ_TESTS_SUPPORT_TESTFIX_H

#include <stddef.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#define TESTFIX_PATH_MAX 512
#define TESTFIX_AUTH_MAX 256
#define TESTFIX_MAX_SIMS 16

/* ---- the temporary directory and the build -------------------------------------------- */

/* mkdtemp /tmp/oauthq-itest-NAME-XXXXXX into dir[cap]; 0 or -1. */
int testfix_tmpdir(char *dir, size_t cap, const char *name);

/* The end of dir: with OAUTHQ_KEEP_TEST_LOGS set, "PROG: logs kept in DIR"
 * on stderr and dir stays; otherwise dir and everything below it is
 * removed (without following links). 0, or -1 when something stayed. An
 * empty dir (setup failed before testfix_tmpdir) is a no-op. */
int testfix_tmpdir_remove(const char *dir, const char *prog);

/* var/test-logs/ below the current directory, where tests append the
 * records and documents the schema checks read; 0 or -1. */
int testfix_test_logs(void);

/* $OAUTHQ_BUILD (default "build"), absolute, into out[cap]; 0 or -1. */
int testfix_build(char *out, size_t cap);

/* BUILD/prog into out[cap]; -1 (and a line naming PROG) when it is not an
 * executable file: build it first. */
int testfix_bin(char *out, size_t cap, const char *prog);

/* OAUTHQ_TOPIC_PREFIX=itest-NAME-PID-TIME. (this run's own topics), also
 * into out[cap] when out is not NULL. */
void testfix_topic_prefix(const char *name, char *out, size_t cap);

/* ---- files in the temporary directory ------------------------------------------------- */

/* Write text to dir/name (mode 0600), its path into path[cap] when path is
 * not NULL; 0 or -1. */
int testfix_write(const char *dir, const char *name, const char *text, char *path, size_t cap);

/* A client secret file: secret and a newline, as an operator writes it. */
int testfix_secret(const char *dir, const char *name, const char *secret, char *path, size_t cap);

/* dir/state.json, a state key ring with the fixed test key "k1" (tests
 * mint state and connection ids with it), named in OAUTHQ_STATE_KEY_FILE. */
int testfix_state_keys(const char *dir, char *path, size_t cap);

/* dir/data.json, a data key ring with the fixed test key "d1" (sealed
 * tokens), named in OAUTHQ_DATA_KEYS_FILE. */
int testfix_data_keys(const char *dir, char *path, size_t cap);

/* One API key to generate (SPEC §4a). */
typedef struct {
    const char *name;            /* the key's id in api_keys.json */
    const char *scopes;          /* comma-separated, e.g. "connections:write,connections:read" */
    int unlisted;                /* 1: generated the same way but left out of the file */
    char auth[TESTFIX_AUTH_MAX]; /* out: "Authorization: Bearer <key>" */
} testfix_api_key;

/* Generate every key of keys[n], write the listed ones to
 * dir/api_keys.json, named in OAUTHQ_API_KEYS_FILE; 0 or -1. */
int testfix_api_keys(const char *dir, testfix_api_key *keys, size_t n);

/* One entry of providers.json; the optional keys are written only when
 * set, so an unset one means the provider module's default. */
typedef struct {
    const char *name;
    const char *profile; /* NULL: "sim" */
    const char *base;    /* BASE/oauth/authorize and BASE/oauth/token */
    const char *client_id;
    const char *secret_file; /* client_secret_file */
    const char *token_auth;  /* NULL: "client_secret_post" */
    int code_ttl_s;          /* 0: 300 */
    int pkce;                /* 1: "pkce": true */
    int deauthorize;         /* 1: "deauthorize_url": BASE/oauth/deauthorize */
    int no_refresh_rotation; /* 1: "refresh_rotation": false */
    int refresh_ahead_s;     /* 0: none (no background refresh) */
    const char *scope;       /* NULL: none */
    const char *issuer;      /* NULL: none */
} testfix_provider;

/* dir/providers.json with p[n], named in OAUTHQ_PROVIDERS_FILE; 0 or -1. */
int testfix_providers(const char *dir, const testfix_provider *p, size_t n);

/* ---- processes and addresses ---------------------------------------------------------- */

/* A loopback address that was free a moment ago. */
typedef struct {
    int port;
    char listen[32]; /* 127.0.0.1:PORT */
    char url[48];    /* http://127.0.0.1:PORT */
} testfix_addr;

/* Fill a with a free port; 0 or -1. */
int testfix_addr_new(testfix_addr *a);

/* testproc_spawn(argv) with stdout and stderr appended to dir/LOGNAME. */
pid_t testfix_spawn(const char *dir, const char *logname, char *const argv[]);

/* ---- the provider simulator (tests/sim) ----------------------------------------------- */

typedef struct {
    pid_t pid;
    int port;
    char base[64];              /* http://127.0.0.1:PORT */
    char log[TESTFIX_PATH_MAX]; /* dir/NAME.log: its stdout and stderr */
} testfix_sim;

/* Start BUILD/oauthq-provider-sim on a free port with --client-id,
 * --client-secret-file, then args and extra (each NULL-terminated, either
 * may be NULL: a test's fixed arguments and one case's own), and wait
 * (bounded) until it answers /_sim/stats; a port taken meanwhile is tried
 * again, three times at most. 0, or -1 with nothing left running. */
int testfix_sim_start(testfix_sim *s, const char *dir, const char *name, const char *client_id,
                      const char *secret_file, const char *const *args, const char *const *extra);

/* Stop s (testproc_stop) and forget it: its exit status (0 after a clean
 * SIGTERM), -1 when it had to be killed. */
int testfix_sim_stop(testfix_sim *s);

/* Stop every simulator started and not yet stopped (group teardown). */
void testfix_sim_stop_all(void);

/* GET BASE/_sim/stats, parsed (cJSON_Delete it); fails the test when
 * the simulator did not answer 200 with JSON. */
cJSON *testfix_sim_stats(const char *base);

/* stats.grants.WHICH (active, revoked, deauthorized); fails the test when
 * missing. */
long testfix_sim_grants(const cJSON *stats, const char *which);

/* The per-code entry of stats (codes are keyed by their SHA-256), or NULL
 * when the simulator never saw code. */
const cJSON *testfix_sim_code(const cJSON *stats, const char *code);

/* stats.codes[sha256(code)].KEY (token_requests, last_status); fails the
 * test when the code or the key is missing. */
long testfix_sim_code_num(const cJSON *stats, const char *code, const char *key);

/* ---- the product's log lines ---------------------------------------------------------- */

/* Capture every line the product's modules log in this process (common/log's
 * sink), up to cap bytes (later lines are dropped), for the checks that no
 * secret reaches a log; 0 or -1. */
int testfix_log_capture(size_t cap);

/* The lines captured so far, one per line ("" before any). */
const char *testfix_log_text(void);

/* Give the sink back to common/log and free the capture. */
void testfix_log_capture_end(void);

/* ---- URLs ----------------------------------------------------------------------------- */

/* BASE/oauth/authorize?response_type=code&client_id=CID&redirect_uri=
 * <redirect_uri, percent-encoded> followed by tail as given (e.g.
 * "&state=x&sim_fault=429", may be NULL), into out[cap]; 0 or -1. */
int testfix_authorize_url(char *out, size_t cap, const char *base, const char *client_id,
                          const char *redirect_uri, const char *tail);

/* The raw value of query parameter name in url, malloc'd, or NULL. */
char *testfix_url_param(const char *url, const char *name);

#endif
