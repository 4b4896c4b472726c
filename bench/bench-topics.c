/*
 * bench-topics — create or delete the topics of one benchmark run.
 *
 *   bench-topics create     the product's topics under OAUTHQ_TOPIC_PREFIX
 *                           (kafka_topics_ensure, as `oauthqctl topics create`)
 *   bench-topics delete     delete them again (missing topics are fine)
 *
 * Benchmarks give each run its own prefix, so deleting only ever touches
 * topics that run created. Exit 0 on success, 1 on Kafka errors, 2 on usage.
 */
#include <stdio.h>
#include <string.h>

#include "bench/bench_util.h"
#include "common/config.h"
#include "common/kafka.h"
#include "common/log.h"

static int delete_topics(const config_t *c, err_t *e)
{
    enum { N = KAFKA_TOPICS };
    char names[N][300], errstr[256];
    rd_kafka_DeleteTopic_t *del[N];
    rd_kafka_t *rk = kafka_admin_new(c, e);
    if (!rk)
        return -1;
    for (int i = 0; i < N; i++) {
        if (config_topic(c, kafka_topic_specs[i].suffix, names[i], sizeof names[i], e) < 0) {
            for (int j = 0; j < i; j++)
                rd_kafka_DeleteTopic_destroy(del[j]);
            rd_kafka_destroy(rk);
            return -1;
        }
        del[i] = rd_kafka_DeleteTopic_new(names[i]);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(ao, c->kafka_timeout_ms, errstr, sizeof errstr);
    rd_kafka_DeleteTopics(rk, del, N, ao, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, c->kafka_timeout_ms + 5000);
    int rc = 0;
    if (!ev) {
        rc = err_set(e, ERRC_RETRIABLE, "deleting topics: no answer");
    } else if (rd_kafka_event_error(ev)) {
        rc = err_set(e, ERRC_RETRIABLE, "deleting topics: %s", rd_kafka_event_error_string(ev));
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
        for (size_t i = 0; i < n && rc == 0; i++) {
            rd_kafka_resp_err_t te = rd_kafka_topic_result_error(res[i]);
            if (te && te != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                rc = err_set(e, ERRC_RETRIABLE, "deleting %s: %s",
                             rd_kafka_topic_result_name(res[i]), rd_kafka_err2str(te));
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_queue_destroy(q);
    for (int i = 0; i < N; i++)
        rd_kafka_DeleteTopic_destroy(del[i]);
    rd_kafka_destroy(rk);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "create") != 0 && strcmp(argv[1], "delete") != 0)) {
        fprintf(stderr, "usage: bench-topics create|delete (topics under OAUTHQ_TOPIC_PREFIX)\n");
        return 2;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 || log_init("bench-topics", "warn", "text", &e) < 0) {
        fprintf(stderr, "bench-topics: %s\n", e.msg);
        return 1;
    }
    int rc =
        strcmp(argv[1], "create") == 0 ? kafka_topics_ensure(&cfg, &e) : delete_topics(&cfg, &e);
    if (rc < 0) {
        fprintf(stderr, "bench-topics: %s\n", e.msg);
        return 1;
    }
    return 0;
}
