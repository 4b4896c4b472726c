/* ctl_provider — see ctl_provider.h. */
#include "ctl/ctl_provider.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/providers.h"
#include "common/kafka.h"
#include "common/records.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_send.h"
#include "common/exchange.h"

void ctl_provider_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl provider check|pause|resume NAME [--json]\n"
                 "\n"
                 "pause NAME    stop exchanges for the provider on every worker (codes are\n"
                 "              held until their deadline, then code_expired)\n"
                 "resume NAME   workers re-read the provider's client secret and exchange\n"
                 "              the held codes still inside their deadline\n"
                 "(both publish a provider.v1 record to every partition of callbacks;\n"
                 "a worker restart also clears a pause)\n"
                 "\n"
                 "Checks a provider from OAUTHQ_PROVIDERS_FILE without spending a code: one\n"
                 "token request with a made-up code and the configured client credentials.\n"
                 "  ok              endpoint reachable, client credentials accepted\n"
                 "  misconfigured   credentials rejected (invalid_client) or unusable URL\n"
                 "  unreachable     connection failed or timed out\n"
                 "  unexpected      any other answer (shown as HTTP status and class)\n"
                 "Exit codes: 0 ok, 1 unreachable, 2 misconfigured/unexpected/usage,\n"
                 "3 configuration file problems.\n");
}

/* provider pause|resume NAME: one provider.v1 record on every partition. */
static int pause_resume(const ctl_ctx *cx, int pause, const char *name, err_t *e)
{
    if (!cx->cfg->providers_file[0])
        return err_set(e, ERRC_FATAL, "OAUTHQ_PROVIDERS_FILE is not set");
    providers_t *ps = providers_load(cx->cfg->providers_file, e);
    if (!ps)
        return -1;
    int known = providers_find(ps, name) != NULL;
    providers_free(ps);
    if (!known)
        return err_set(e, ERRC_PERMANENT, "provider %.32s is not in %s", name,
                       cx->cfg->providers_file);
    records_provider pr;
    memset(&pr, 0, sizeof pr);
    snprintf(pr.provider, sizeof pr.provider, "%s", name);
    pr.pause = pause;
    pr.requested_at_ms = clock_wall_ms();
    const char *u = getenv("USER");
    snprintf(pr.requested_by, sizeof pr.requested_by, "%.40s", u && *u ? u : "oauthqctl");
    char *json = records_provider_encode(&pr, e);
    if (!json)
        return -1;
    char topic[256], key[64];
    snprintf(key, sizeof key, "provider:%s", name);
    long n = config_topic(cx->cfg, KAFKA_TOPIC_CALLBACKS, topic, sizeof topic, e) < 0
                 ? -1
                 : ctl_send(cx->cfg, topic, key, json, 1, e);
    free(json);
    if (n < 0)
        return -1;
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "provider", name);
        cJSON_AddStringToObject(doc, "action", pause ? "pause" : "resume");
        cJSON_AddNumberToObject(doc, "partitions", (double)n);
        ctl_out_json(cx->out, doc, NULL);
        cJSON_Delete(doc);
    } else {
        fprintf(cx->out, "provider %s: %s sent to %ld partitions of %s\n", name,
                pause ? "pause" : "resume", n, topic);
    }
    return 0;
}

int ctl_provider_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (ctl_args_parse(argc, argv, CTL_OPT_JSON, 0, &o, e) < 0)
        return -1;
    ctl_ctx cxv = *cx0;
    cxv.json = (o.seen & CTL_OPT_JSON) != 0;
    const ctl_ctx *cx = &cxv;
    if (o.npos == 2 && (strcmp(o.pos[0], "pause") == 0 || strcmp(o.pos[0], "resume") == 0))
        return pause_resume(cx, strcmp(o.pos[0], "pause") == 0, o.pos[1], e);
    if (o.npos != 2 || strcmp(o.pos[0], "check") != 0)
        return err_set(e, ERRC_PERMANENT,
                       "usage: oauthqctl provider check|pause|resume NAME [--json]");
    if (!cx->cfg->providers_file[0])
        return err_set(e, ERRC_FATAL, "OAUTHQ_PROVIDERS_FILE is not set");
    providers_t *ps = providers_load(cx->cfg->providers_file, e);
    if (!ps)
        return -1;
    int rc = -1;
    exchange_t *x = NULL;
    char secret[512] = "";
    const provider_t *pv = providers_find(ps, o.pos[1]);
    if (!pv) {
        err_set(e, ERRC_PERMANENT, "provider %.32s is not in %s", o.pos[1],
                cx->cfg->providers_file);
        goto out;
    }
    if (providers_client_secret(pv, secret, sizeof secret, NULL, e) < 0)
        goto out;
    /* A code no provider issued: random, recognisable in provider logs. */
    uint8_t raw[18];
    char code[40] = "oauthq_check_";
    if (crypto_random(raw, sizeof raw, e) < 0)
        goto out;
    crypto_b64url_encode(raw, sizeof raw, code + 13, sizeof code - 13);
    char redirect[CONFIG_PATH_MAX + 32];
    snprintf(redirect, sizeof redirect, "%s/oauth/callback", cx->cfg->public_url);
    x = exchange_new(1, cx->cfg->exchange_connect_timeout_ms, cx->cfg->exchange_timeout_ms, e);
    if (!x)
        goto out;
    exchange_req req;
    memset(&req, 0, sizeof req);
    req.provider = pv;
    req.client_secret = secret;
    req.code = code;
    req.redirect_uri = redirect;
    if (exchange_add(x, &req, e) < 0)
        goto out;
    exchange_run(x);
    const exchange_result *r = &req.result;
    const char *verdict = "unexpected";
    errc cls = ERRC_PERMANENT;
    if (r->cls == EXCH_REJECTED) {
        verdict = "ok";
        cls = ERRC_OK;
    } else if (r->cls == EXCH_MISCONFIGURED) {
        verdict = "misconfigured";
    } else if (r->cls == EXCH_RETRY_SAFE || (r->cls == EXCH_UNKNOWN && r->http_status == 0)) {
        verdict = "unreachable";
        cls = ERRC_RETRIABLE;
    }
    if (cx->json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "provider", pv->name);
        cJSON_AddStringToObject(doc, "token_url", pv->token_url);
        cJSON_AddStringToObject(doc, "result", verdict);
        cJSON_AddStringToObject(doc, "class", exchange_class_name(r->cls));
        cJSON_AddNumberToObject(doc, "http_status", (double)r->http_status);
        cJSON_AddStringToObject(doc, "detail", r->detail);
        ctl_out_json(cx->out, doc, NULL);
        cJSON_Delete(doc);
    } else {
        fprintf(cx->out, "provider %s (%s): %s — %s, http %ld, %s\n", pv->name, pv->token_url,
                verdict, exchange_class_name(r->cls), r->http_status, r->detail);
    }
    if (cls == ERRC_OK)
        rc = 0;
    else
        err_set(e, cls, "provider %s: %s (%s)", pv->name, verdict, r->detail);
out:
    crypto_wipe(secret, sizeof secret);
    exchange_free(x);
    providers_free(ps);
    return rc;
}
