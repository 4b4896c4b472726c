/*
 * oauthq-topic-read — print a topic's committed records as JSON lines, for
 * shell-level integration tests and debugging.
 *
 *   oauthq-topic-read TOPIC [--min N] [--timeout-ms MS] [--key KEY]
 *
 * Reads every partition from the beginning (read_committed) until the end
 * and at least N records matched, or the timeout. Prints one line per
 * record: {"partition":P,"offset":O,"key":K,"value":V} where V is the
 * record's JSON when it parses, else a string. Exit 0 when ≥ N records
 * matched, 1 otherwise, 2 on usage or Kafka errors.
 * Uses the OAUTHQ_* environment (bootstrap) like the product binaries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/config.h"
#include "common/log.h"
#include "tests/support/testkafka.h"

typedef struct {
    const char *key;
    long matched;
} filter;

static int print_record(const testkafka_record *r, void *ud)
{
    filter *f = ud;
    if (f->key && (!r->key || strcmp(r->key, f->key) != 0))
        return 0;
    f->matched++;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "partition", r->partition);
    cJSON_AddNumberToObject(o, "offset", (double)r->offset);
    if (r->key)
        cJSON_AddStringToObject(o, "key", r->key);
    else
        cJSON_AddNullToObject(o, "key");
    cJSON *v = r->value ? cJSON_Parse(r->value) : NULL;
    if (v)
        cJSON_AddItemToObject(o, "value", v);
    else if (r->value)
        cJSON_AddStringToObject(o, "value", r->value);
    else
        cJSON_AddNullToObject(o, "value");
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(o);
    return 0;
}

int main(int argc, char **argv)
{
    const char *topic = NULL;
    long min = 0;
    int timeout_ms = 10000;
    filter f = {NULL, 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--min") == 0 && i + 1 < argc)
            min = atol(argv[++i]);
        else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc)
            timeout_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            f.key = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            puts("usage: oauthq-topic-read TOPIC [--min N] [--timeout-ms MS] [--key KEY]");
            return 0;
        } else if (argv[i][0] != '-' && !topic)
            topic = argv[i];
        else {
            fprintf(stderr, "oauthq-topic-read: bad argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!topic || timeout_ms <= 0 || min < 0) {
        fprintf(stderr, "usage: oauthq-topic-read TOPIC [--min N] [--timeout-ms MS] [--key K]\n");
        return 2;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 || log_init("topic-read", "warn", "text", &e) < 0) {
        fprintf(stderr, "oauthq-topic-read: %s\n", e.msg);
        return 2;
    }
    /* With a key filter the minimum applies to matching records, so read
     * until the deadline or the end, whichever proves the count. */
    long n = testkafka_read(&cfg, topic, f.key ? 0 : min, timeout_ms, print_record, &f, &e);
    if (n < 0) {
        fprintf(stderr, "oauthq-topic-read: %s\n", e.msg);
        return 2;
    }
    return f.matched >= min ? 0 : 1;
}
