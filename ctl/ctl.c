/* ctl — see ctl.h. Single-threaded. */
#include "ctl/ctl.h"

#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "ctl/ctl_apikey.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_disconnect.h"
#include "ctl/ctl_token.h"
#include "ctl/ctl_dlq.h"
#include "ctl/ctl_out.h"
#include "ctl/ctl_provider.h"
#include "ctl/ctl_replay.h"
#include "ctl/ctl_status.h"
#include "ctl/ctl_topics.h"
#include "ctl/ctl_webhooks.h"

typedef struct {
    const char *name;
    int (*run)(const ctl_ctx *cx, int argc, char **argv, err_t *e);
    void (*help)(FILE *out);
    const char *summary;
} command;

static const command commands[] = {
    {"topics", ctl_topics_run, ctl_topics_help,
     "topics create|describe   create the topics / show their settings and drift"},
    {"status", ctl_status_run, ctl_status_help,
     "status ID                a connection's latest state (no secrets)"},
    {"dlq", ctl_dlq_run, ctl_dlq_help,
     "dlq list|show            dead letters: list, or one in full (redacted)"},
    {"replay", ctl_replay_run, ctl_replay_help,
     "replay ID...|--dlq       publish replay commands / re-publish dead letters"},
    {"provider", ctl_provider_run, ctl_provider_help,
     "provider check|pause|resume NAME   verify credentials (no code spent) / pause / resume"},
    {"token", ctl_token_run, ctl_token_help,
     "token ID                 decrypt and print a connection's tokens (operators)"},
    {"disconnect", ctl_disconnect_run, ctl_disconnect_help,
     "disconnect ID...         revoke at the provider (same as DELETE /v1/connections/{id})"},
    {"apikey", ctl_apikey_run, ctl_apikey_help,
     "apikey create --scopes S  a new platform API key (printed once) and its keys-file entry"},
    {"webhooks", ctl_webhooks_run, ctl_webhooks_help,
     "webhooks list|replay     webhook delivery states / send failed or held events again"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: oauthqctl COMMAND [ARGS] [--json]\n\nCommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %s\n", commands[i].summary);
    fprintf(out, "  --help                   this text; COMMAND --help for each command\n"
                 "\n"
                 "Output: a table by default; --json prints one JSON document on stdout.\n"
                 "Exit codes: 0 ok, 1 retriable (Kafka unreachable, not delivered: try\n"
                 "again), 2 usage error, not found, drift or other permanent error,\n"
                 "3 fatal (configuration).\n\n");
    config_usage(out);
}

int ctl_exit_code(errc cls)
{
    switch (cls) {
    case ERRC_OK:
        return CTL_EXIT_OK;
    case ERRC_RETRIABLE:
        return CTL_EXIT_RETRIABLE;
    case ERRC_PERMANENT:
        return CTL_EXIT_PERMANENT;
    case ERRC_FATAL:
        return CTL_EXIT_FATAL;
    }
    return CTL_EXIT_FATAL;
}

int ctl_main(int argc, char **argv, FILE *out, FILE *errout)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? errout : out);
        return argc < 2 ? CTL_EXIT_PERMANENT : CTL_EXIT_OK;
    }
    const command *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(errout, "oauthqctl: unknown command '%.40s'; see oauthqctl --help\n", argv[1]);
        return CTL_EXIT_PERMANENT;
    }
    if (ctl_args_wants_help(argc - 2, argv + 2)) {
        cmd->help(out);
        return CTL_EXIT_OK;
    }
    err_t e = {0};
    config_t cfg;
    if (config_load(&cfg, NULL, &e) < 0 ||
        log_init("oauthqctl", cfg.log_level, cfg.log_format, &e) < 0) {
        fprintf(errout, "oauthqctl: %s\n", e.msg);
        return ctl_exit_code(e.cls == ERRC_OK ? ERRC_FATAL : e.cls);
    }
    ctl_ctx cx = {&cfg, out, errout, 0};
    if (cmd->run(&cx, argc - 2, argv + 2, &e) < 0) {
        errc cls = e.cls == ERRC_OK ? ERRC_FATAL : e.cls;
        fprintf(errout, "oauthqctl %s: %s (%s)\n", cmd->name, e.msg, errc_name(cls));
        return ctl_exit_code(cls);
    }
    fflush(out);
    return CTL_EXIT_OK;
}
