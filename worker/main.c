/*
 * oauthq-worker — entry point. Configuration from OAUTHQ_* variables (see
 * --help); the loop lives in worker.c. Exit codes: 0 after SIGTERM/SIGINT,
 * 3 on a configuration or fatal Kafka error (fenced, transaction failure):
 * a supervisor restarts the process, which takes its partitions back.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "worker/worker.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            printf("usage: oauthq-worker\n\nThe oauthq worker: consumes callbacks, exchanges "
                   "each code once (Kafka transactions,\nSQLite state per partition), publishes "
                   "connections and status.\n\n");
            config_usage(stdout);
            return 0;
        }
        fprintf(stderr, "oauthq-worker: no arguments expected (see --help)\n");
        return 2;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 ||
        log_init("worker", cfg.log_level, cfg.log_format, &e) < 0) {
        fprintf(stderr, "oauthq-worker: %s\n", e.msg);
        return 3;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    worker_t *w = worker_open(&cfg, &e);
    if (!w) {
        log_kv(LOGL_ERROR, "worker_start_failed", "reason", e.msg, "class", errc_name(e.cls));
        return 3;
    }
    int rc = worker_run(w, &stop_flag, &e);
    if (rc < 0)
        log_kv(LOGL_ERROR, "worker_fatal", "reason", e.msg, "class", errc_name(e.cls));
    worker_close(w);
    log_kv(LOGL_INFO, "worker_stopped");
    return rc < 0 ? 3 : 0;
}
