/* observe — the worker's metrics, consumer lag and its HTTP listener
 * (/metrics, /healthz, /readyz), which runs on its own threads and reads
 * only atomics and the lock-free metrics. */
#include "worker/worker_int.h"

/* Consumer lag: high watermark minus position over the assignment, from
 * librdkafka's cached watermarks (no request); refreshed every 5 s. */
void wk_update_lag(worker_t *w)
{
    int64_t now = now_ms();
    if (now - w->lag_checked_ms < 5000)
        return;
    w->lag_checked_ms = now;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->consumer, &a) || !a)
        return;
    int64_t lag = 0;
    if (rd_kafka_position(w->consumer, a) == 0) {
        for (int i = 0; i < a->cnt; i++) {
            int64_t lo = 0, hi = 0;
            if (rd_kafka_get_watermark_offsets(w->consumer, a->elems[i].topic,
                                               a->elems[i].partition, &lo, &hi) == 0 &&
                a->elems[i].offset >= 0 && hi > a->elems[i].offset)
                lag += hi - a->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
    metrics_gauge_set(w->m_lag, lag);
}

/* Runs on the listener's threads: touches only atomics and metrics. */
static void handle_http(void *app, httpd_req *r)
{
    worker_t *w = app;
    const char *path = httpd_path(r);
    if (strcmp(path, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (metrics_render(w->metrics, &text, &len, NULL) < 0)
            return httpd_respond(r, 500, "text/plain", "metrics unavailable\n", 20);
        httpd_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(path, "/healthz") == 0) {
        httpd_respond(r, 200, "application/json", "{\"status\":\"ok\"}", 15);
    } else if (strcmp(path, "/readyz") == 0) {
        int ok = atomic_load(&w->ready) && !atomic_load(&w->fatal);
        const char *b = ok ? "{\"status\":\"ready\"}" : "{\"status\":\"not_ready\"}";
        httpd_respond(r, ok ? 200 : 503, "application/json", b, strlen(b));
    } else {
        httpd_respond(r, 404, "application/json", "{\"error\":\"not_found\"}", 21);
    }
}

int wk_open_observability(worker_t *w, err_t *e)
{
    w->metrics = metrics_new();
    if (!w->metrics)
        return err_set(e, ERRC_FATAL, "out of memory");
    static const double exch_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    static const double restore_bounds[] = {0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120};
    w->m_batches = metrics_counter(w->metrics, "oauthq_worker_batches_total",
                                   "Batches of callbacks processed", NULL);
    w->m_committed = metrics_counter(w->metrics, "oauthq_worker_transactions_total",
                                     "Kafka transactions", "result=\"committed\"");
    w->m_aborted = metrics_counter(w->metrics, "oauthq_worker_transactions_total",
                                   "Kafka transactions", "result=\"aborted\"");
    w->m_unknown = metrics_counter(w->metrics, "oauthq_worker_unknown_outcomes_total",
                                   "Token requests whose outcome was unknown", NULL);
    w->m_retries = metrics_counter(w->metrics, "oauthq_worker_retries_scheduled_total",
                                   "Retries scheduled in the state store", NULL);
    w->m_dlq = metrics_counter(w->metrics, "oauthq_worker_dlq_total",
                               "Records sent to the dead-letter topic", NULL);
    w->m_takeovers = metrics_counter(w->metrics, "oauthq_worker_claims_taken_over_total",
                                     "Open claims resolved as unknown outcomes at takeover", NULL);
    w->m_exchange_s = metrics_histogram(w->metrics, "oauthq_worker_exchange_seconds",
                                        "Time from claim to settle of one token request", NULL,
                                        exch_bounds, sizeof exch_bounds / sizeof exch_bounds[0]);
    static const double txn_bounds[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5};
    static const char *const txn_phases[4] = {"produce", "send_offsets", "commit", "total"};
    /* The claim's cost in the slot's time: the claiming transaction and the
     * store update before the request may leave. */
    w->m_claim_wait_s = metrics_histogram(w->metrics, "oauthq_worker_claim_to_send_seconds",
                                          "Time from claim to the request handed to curl", NULL,
                                          txn_bounds, sizeof txn_bounds / sizeof txn_bounds[0]);
    for (int i = 0; i < 4; i++) {
        char lb[32];
        snprintf(lb, sizeof lb, "phase=\"%s\"", txn_phases[i]);
        w->m_txn_s[i] =
            metrics_histogram(w->metrics, "oauthq_worker_transaction_seconds",
                              "Duration of the worker's transactions (committed ones), by phase",
                              lb, txn_bounds, sizeof txn_bounds / sizeof txn_bounds[0]);
    }
    w->m_restore_s = metrics_histogram(
        w->metrics, "oauthq_worker_restore_seconds", "Time to bring a partition store up to date",
        NULL, restore_bounds, sizeof restore_bounds / sizeof restore_bounds[0]);
    w->m_not_sent =
        metrics_counter(w->metrics, "oauthq_worker_claims_not_sent_total",
                        "Claims whose lease ran out before the request could leave", NULL);
    w->m_waiting = metrics_gauge(w->metrics, "oauthq_worker_claims_waiting",
                                 "Committed claims waiting for an in-flight slot", NULL);
    w->m_inflight = metrics_gauge(w->metrics, "oauthq_worker_exchanges_in_flight",
                                  "Token requests handed to curl and not yet answered", NULL);
    w->m_lag = metrics_gauge(w->metrics, "oauthq_worker_consumer_lag",
                             "Callbacks not yet consumed on the assigned partitions", NULL);
    if (!w->cfg.worker_listen[0])
        return 0;
    httpd_opts o = {w->cfg.worker_listen, 1, 64, 64, 16, 10};
    w->http = httpd_start(&o, handle_http, w, e);
    if (!w->http)
        return err_wrap(e, "OAUTHQ_WORKER_LISTEN");
    char port[16];
    snprintf(port, sizeof port, "%d", httpd_port(w->http));
    log_kv(LOGL_INFO, "worker_listening", "listen", w->cfg.worker_listen, "port", port);
    return 0;
}
