/*
 * config — process configuration from OAUTHQ_* environment variables.
 *
 * One table (config.c) lists every variable with its default and a line of
 * documentation; config_load fills a config_t from it and validates, and
 * config_usage prints the table for --help. Secrets are never stored in
 * config_t: only the path of the file holding them; config_secret() reads a
 * NAME or NAME_FILE pair when a module needs the value.
 * config_t is a plain value owned by the caller; loading is single-threaded.
 */
#ifndef OAUTHQ_COMMON_CONFIG_H
#define OAUTHQ_COMMON_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "common/err.h"

#define CONFIG_PATH_MAX 512

typedef struct {
    char kafka_bootstrap[CONFIG_PATH_MAX]; /* OAUTHQ_KAFKA_BOOTSTRAP */
    char topic_prefix[64];                 /* OAUTHQ_TOPIC_PREFIX */
    int topic_partitions;                  /* OAUTHQ_TOPIC_PARTITIONS */
    int topic_replication;                 /* OAUTHQ_TOPIC_REPLICATION */
    char listen[128];                      /* OAUTHQ_LISTEN host:port */
    char public_url[CONFIG_PATH_MAX];      /* OAUTHQ_PUBLIC_URL */
    char data_dir[CONFIG_PATH_MAX];        /* OAUTHQ_DATA_DIR */
    char providers_file[CONFIG_PATH_MAX];  /* OAUTHQ_PROVIDERS_FILE */
    char state_key_file[CONFIG_PATH_MAX];  /* OAUTHQ_STATE_KEY_FILE */
    char data_keys_file[CONFIG_PATH_MAX];  /* OAUTHQ_DATA_KEYS_FILE */
    char api_keys_file[CONFIG_PATH_MAX];   /* OAUTHQ_API_KEYS_FILE */
    char instance_id[64];                  /* OAUTHQ_INSTANCE_ID */
    char log_level[16];                    /* OAUTHQ_LOG_LEVEL */
    char log_format[16];                   /* OAUTHQ_LOG_FORMAT */
    int kafka_timeout_ms;                  /* OAUTHQ_KAFKA_TIMEOUT_MS */
    int state_ttl_s;                       /* OAUTHQ_STATE_TTL_S */
    char return_to_allowlist[2048];        /* OAUTHQ_RETURN_TO_ALLOWLIST */
    int http_threads;                      /* OAUTHQ_HTTP_THREADS */
    int http_max_connections;              /* OAUTHQ_HTTP_MAX_CONNECTIONS */
    int http_per_ip;                       /* OAUTHQ_HTTP_PER_IP_CONNECTIONS */
    int http_max_inflight;                 /* OAUTHQ_HTTP_MAX_INFLIGHT */
    int produce_timeout_ms;                /* OAUTHQ_PRODUCE_TIMEOUT_MS */
    int worker_batch;                      /* OAUTHQ_WORKER_BATCH */
    int worker_concurrency;                /* OAUTHQ_WORKER_CONCURRENCY */
    int worker_commit_ms;                  /* OAUTHQ_WORKER_COMMIT_MS */
    int worker_lease_ms;                   /* OAUTHQ_WORKER_LEASE_MS */
    int worker_commit_gap_ms;              /* OAUTHQ_WORKER_COMMIT_GAP_MS */
    int worker_takeover_margin_ms;         /* OAUTHQ_WORKER_TAKEOVER_MARGIN_MS */
    int session_expiry_margin_ms;          /* OAUTHQ_SESSION_EXPIRY_MARGIN_MS */
    int worker_probe_interval_ms;          /* OAUTHQ_WORKER_PROBE_INTERVAL_MS */
    int worker_bench_no_txn;               /* OAUTHQ_WORKER_BENCH_NO_TXN */
    int exchange_timeout_ms;               /* OAUTHQ_EXCHANGE_TIMEOUT_MS */
    int exchange_connect_timeout_ms;       /* OAUTHQ_EXCHANGE_CONNECT_TIMEOUT_MS */
    int demo;                              /* OAUTHQ_DEMO */
    int open_start;                        /* OAUTHQ_OPEN_START */
    int status_max_wait_s;                 /* OAUTHQ_STATUS_MAX_WAIT_S */
    int refresh_skew_s;                    /* OAUTHQ_REFRESH_SKEW_S */
    int token_refresh_wait_ms;             /* OAUTHQ_TOKEN_REFRESH_WAIT_MS */
    char worker_listen[128];               /* OAUTHQ_WORKER_LISTEN */
    char webhook_url[CONFIG_PATH_MAX];     /* OAUTHQ_WEBHOOK_URL */
    char webhook_keys[CONFIG_PATH_MAX];    /* OAUTHQ_WEBHOOK_SECRET_FILE */
    char webhook_listen[128];              /* OAUTHQ_WEBHOOK_LISTEN */
    int webhook_concurrency;               /* OAUTHQ_WEBHOOK_CONCURRENCY */
    int webhook_timeout_ms;                /* OAUTHQ_WEBHOOK_TIMEOUT_MS */
    int webhook_retry_base_ms;             /* OAUTHQ_WEBHOOK_RETRY_BASE_MS */
    int webhook_retry_cap_s;               /* OAUTHQ_WEBHOOK_RETRY_CAP_S */
    int webhook_retry_max_s;               /* OAUTHQ_WEBHOOK_RETRY_MAX_S */
    int webhook_commit_ms;                 /* OAUTHQ_WEBHOOK_COMMIT_MS */
} config_t;

/* Environment lookup; tests pass their own, NULL means getenv. */
typedef const char *(*config_getenv_fn)(const char *name);

/* Fill `c` from the environment with defaults; validate every value.
 * Errors are ERRC_FATAL and name the variable. */
int config_load(config_t *c, config_getenv_fn getenv_fn, err_t *e);

/* Read a secret given as NAME (value) or NAME_FILE (path; one trailing
 * newline trimmed) into out[cap]; *len gets its length. Both set, neither
 * set, unreadable or too long → ERRC_FATAL naming the variable, never the
 * value. The caller owns and wipes `out`. */
int config_secret(const char *name, config_getenv_fn getenv_fn, char *out, size_t cap, size_t *len,
                  err_t *e);

/* Read a whole small file (≤ cap-1 bytes) into out, NUL-terminated. */
int config_read_file(const char *path, char *out, size_t cap, size_t *len, err_t *e);

/* Print the variable table (name, default, meaning) for --help. */
void config_usage(FILE *out);

/* Full topic name: prefix + suffix ("callbacks" → "oauthq.callbacks"). */
int config_topic(const config_t *c, const char *suffix, char *out, size_t cap, err_t *e);

#endif
