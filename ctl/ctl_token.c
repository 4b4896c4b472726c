/* ctl_token — see ctl_token.h. */
#include "ctl/ctl_token.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/crypto.h"
#include "common/kafka.h"
#include "common/keyring.h"
#include "common/records.h"
#include "common/sealed.h"
#include "ctl/ctl_args.h"
#include "ctl/ctl_status.h"

void ctl_token_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl token ID [--json]\n"
                 "\n"
                 "Decrypts and prints the connection's access and refresh tokens (needs\n"
                 "OAUTHQ_DATA_KEYS_FILE). The output is a secret: it is printed to stdout\n"
                 "only, with a warning on stderr, and never logged.\n"
                 "Exit codes: 0 printed, 1 Kafka unreachable, 2 not found / no tokens,\n"
                 "3 configuration (keyring missing or a key id not in it).\n");
}

/* Open one sealed field into out (empty when absent). */
static int open_field(const keyring_t *kr, const char *id, const cJSON *rec, const char *name,
                      const char *aad_field, char *out, size_t cap, err_t *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, name);
    out[0] = '\0';
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return 0;
    return sealed_open(kr, id, aad_field, v->valuestring, out, cap, e) < 0 ? -1 : 0;
}

int ctl_token_run(const ctl_ctx *cx0, int argc, char **argv, err_t *e)
{
    ctl_opts o;
    if (ctl_args_parse(argc, argv, CTL_OPT_JSON, 0, &o, e) < 0)
        return -1;
    ctl_ctx cx = *cx0;
    cx.json = (o.seen & CTL_OPT_JSON) != 0;
    if (o.npos != 1 || !o.pos[0][0] || strlen(o.pos[0]) >= RECORDS_ID_MAX)
        return err_set(e, ERRC_PERMANENT, "usage: oauthqctl token ID [--json]");
    keyring_t *kr = keyring_load(cx.cfg->data_keys_file, e);
    if (!kr)
        return err_wrap(e, "OAUTHQ_DATA_KEYS_FILE");
    int rc = -1;
    static char acc[SEALED_PLAIN_MAX + 1], ref[SEALED_PLAIN_MAX + 1];
    int32_t partition;
    int64_t offset;
    cJSON *rec = ctl_status_latest(cx.cfg, o.pos[0], &partition, &offset, e);
    if (!rec)
        goto out;
    if (open_field(kr, o.pos[0], rec, "access_token_sealed", "access_token", acc, sizeof acc, e) <
            0 ||
        open_field(kr, o.pos[0], rec, "refresh_token_sealed", "refresh_token", ref, sizeof ref, e) <
            0)
        goto out;
    if (!acc[0]) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(rec, "status");
        err_set(e, ERRC_PERMANENT, "connection %.63s holds no tokens (status %.16s)", o.pos[0],
                cJSON_IsString(st) ? st->valuestring : "?");
        goto out;
    }
    fprintf(cx.errout, "warning: printing live credentials of %s; handle as a secret\n", o.pos[0]);
    if (cx.json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "id", o.pos[0]);
        cJSON_AddStringToObject(doc, "access_token", acc);
        if (ref[0])
            cJSON_AddStringToObject(doc, "refresh_token", ref);
        else
            cJSON_AddNullToObject(doc, "refresh_token");
        char *s = cJSON_PrintUnformatted(doc);
        if (s) {
            fprintf(cx.out, "%s\n", s);
            crypto_wipe(s, strlen(s));
            free(s);
        }
        cJSON_Delete(doc); /* holds copies of the tokens too; freed */
    } else {
        fprintf(cx.out, "access_token  %s\nrefresh_token %s\n", acc, ref[0] ? ref : "-");
    }
    rc = 0;
out:
    crypto_wipe(acc, sizeof acc);
    crypto_wipe(ref, sizeof ref);
    cJSON_Delete(rec);
    keyring_free(kr);
    return rc;
}
