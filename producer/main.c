/*
 * oauthq-intake — entry point. Configuration from OAUTHQ_* variables (see
 * --help); everything else lives in intake.c so tests link the same code.
 * Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 3 on a
 * configuration error, a fatal producer error or a read model store failure.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/log.h"
#include "producer/intake.h"

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            printf("usage: oauthq-intake\n\nThe oauthq HTTP intake: /oauth/start, "
                   "/oauth/callback, /v1/connections, /healthz, /readyz, /metrics.\n"
                   "Answers a callback only after Kafka acknowledged its record.\n\n");
            config_usage(stdout);
            return 0;
        }
        fprintf(stderr, "oauthq-intake: no arguments expected (see --help)\n");
        return 2;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 ||
        log_init("intake", cfg.log_level, cfg.log_format, &e) < 0) {
        fprintf(stderr, "oauthq-intake: %s\n", e.msg);
        return 3;
    }
    /* Block the stop signals in every thread; main waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    intake_t *in = intake_open(&cfg, &e);
    if (!in) {
        log_kv(LOGL_ERROR, "intake_start_failed", "reason", e.msg, "class", errc_name(e.cls));
        return 3;
    }
    int rc = 0;
    for (;;) {
        struct timespec tick = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            log_kv(LOGL_INFO, "intake_stopping", "signal", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        if (intake_fatal(in)) {
            log_kv(LOGL_ERROR, "intake_fatal", "reason",
                   "producer or read model fatal error (logged above); exiting");
            rc = 3;
            break;
        }
    }
    intake_close(in, 5000);
    log_kv(LOGL_INFO, "intake_stopped");
    return rc;
}
