/* ctl — see ctl.h. Single-threaded. */
#include "ctl/ctl.h"

#include <string.h>

#include "common/config.h"
#include "common/err.h"
#include "common/kafka.h"
#include "common/log.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: oauthqctl COMMAND [ARGS]\n"
                 "\n"
                 "Commands:\n"
                 "  topics create   create callbacks, connections (compact), status\n"
                 "                  (compact) and dlq topics; existing ones are kept\n"
                 "  --help          this text\n"
                 "\n"
                 "Exit codes: 0 ok, 1 retriable (Kafka unreachable...), 2 usage or\n"
                 "permanent error, 3 fatal (configuration).\n\n");
    config_usage(out);
}

static int exit_code(const err_t *e)
{
    switch (e->cls) {
    case ERRC_OK:
        return 0;
    case ERRC_RETRIABLE:
        return 1;
    case ERRC_PERMANENT:
        return 2;
    case ERRC_FATAL:
        return 3;
    }
    return 3;
}

int ctl_main(int argc, char **argv, FILE *out, FILE *errout)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? errout : out);
        return argc < 2 ? 2 : 0;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 ||
        log_init("oauthqctl", cfg.log_level, cfg.log_format, &e) < 0) {
        fprintf(errout, "oauthqctl: %s\n", e.msg);
        return exit_code(&e);
    }
    if (strcmp(argv[1], "topics") == 0 && argc == 3 && strcmp(argv[2], "create") == 0) {
        if (kafka_topics_ensure(&cfg, &e) < 0) {
            fprintf(errout, "oauthqctl: %s (%s)\n", e.msg, errc_name(e.cls));
            return exit_code(&e);
        }
        fprintf(out, "topics ready: %s{callbacks,connections,status,dlq}\n", cfg.topic_prefix);
        return 0;
    }
    fprintf(errout, "oauthqctl: unknown command '%s'; see oauthqctl --help\n", argv[1]);
    return 2;
}
