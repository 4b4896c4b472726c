/*
 * oauthq-webhooks — entry point of the webhook dispatcher (SPEC §4b).
 * Configuration from OAUTHQ_* variables (see --help); the loop lives in
 * dispatcher.c. Exit codes: 0 after SIGTERM/SIGINT, 3 on a configuration
 * or fatal Kafka error: a supervisor restarts the process, which restores
 * the committed delivery states from the webhooks topic.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"
#include "webhooks/dispatcher.h"

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
            printf("usage: oauthq-webhooks\n\nThe oauthq webhook dispatcher: consumes the status "
                   "topic and POSTs every final\nstatus to OAUTHQ_WEBHOOK_URL, signed per the "
                   "Standard Webhooks specification\n(webhook-id, webhook-timestamp, "
                   "webhook-signature), in version order per\nconnection, retried with "
                   "exponential backoff; delivery state in the webhooks topic.\n\n");
            config_usage(stdout);
            return 0;
        }
        fprintf(stderr, "oauthq-webhooks: no arguments expected (see --help)\n");
        return 2;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 ||
        log_init("webhooks", cfg.log_level, cfg.log_format, &e) < 0) {
        fprintf(stderr, "oauthq-webhooks: %s\n", e.msg);
        return 3;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dispatcher_t *d = dispatcher_open(&cfg, &e);
    if (!d) {
        log_kv(LOGL_ERROR, "webhooks_start_failed", "reason", e.msg, "class", errc_name(e.cls));
        curl_global_cleanup();
        return 3;
    }
    int rc = dispatcher_run(d, &stop_flag, &e);
    if (rc < 0)
        log_kv(LOGL_ERROR, "webhooks_fatal", "reason", e.msg, "class", errc_name(e.cls));
    dispatcher_close(d);
    curl_global_cleanup();
    log_kv(LOGL_INFO, "webhooks_stopped");
    return rc < 0 ? 3 : 0;
}
