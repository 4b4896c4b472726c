/* ctl_apikey — see ctl_apikey.h. Single-threaded. */
#include "ctl/ctl_apikey.h"

#include <stdlib.h>
#include <string.h>

#include "common/apikeys.h"
#include "common/crypto.h"

void ctl_apikey_help(FILE *out)
{
    fprintf(out, "usage: oauthqctl apikey create --scopes SCOPE[,SCOPE...] [--kid KID] [--json]\n"
                 "\n"
                 "Make a new platform API key. The key is printed once and stored nowhere:\n"
                 "put it in your backend's secret store. Add the printed entry under \"keys\"\n"
                 "in OAUTHQ_API_KEYS_FILE and restart the intake. Several keys may be listed\n"
                 "at once: rotate by adding the new key, moving the platform to it, then\n"
                 "removing the old entry.\n"
                 "  --scopes   connections:write, connections:read, tokens:read (comma-separated)\n"
                 "  --kid      key id, [a-z0-9]{1,16} (default: random, 8 characters)\n");
}

/* Value of --name V or --name=V at argv[*i]; NULL when argv[*i] is not it. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

/* "a,b" → scope bits; 0 on an unknown or empty scope list. */
static unsigned parse_scopes(const char *s, err_t *e)
{
    unsigned bits = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        err_set(e, ERRC_PERMANENT, "--scopes too long");
        return 0;
    }
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned b = apikeys_scope_bit(tok);
        if (!b) {
            err_set(e, ERRC_PERMANENT,
                    "unknown scope '%.40s' (connections:write, connections:read, tokens:read)",
                    tok);
            return 0;
        }
        bits |= b;
    }
    if (!bits)
        err_set(e, ERRC_PERMANENT, "--scopes needs at least one scope");
    return bits;
}

int ctl_apikey_run(const ctl_ctx *cx, int argc, char **argv, err_t *e)
{
    if (argc < 1 || strcmp(argv[0], "create") != 0)
        return err_set(e, ERRC_PERMANENT, "usage: apikey create --scopes S[,S...] [--kid KID]");
    const char *scopes_arg = NULL, *kid_arg = NULL;
    int json = cx->json;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--scopes")) != NULL)
            scopes_arg = v;
        else if ((v = opt_value(argc, argv, &i, "--kid")) != NULL)
            kid_arg = v;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            return err_set(e, ERRC_PERMANENT, "apikey create: unexpected argument '%.40s'",
                           argv[i]);
    }
    if (!scopes_arg)
        return err_set(e, ERRC_PERMANENT, "apikey create: --scopes is required");
    unsigned bits = parse_scopes(scopes_arg, e);
    if (!bits)
        return -1;
    char kid[APIKEYS_KID_MAX];
    if (kid_arg) {
        snprintf(kid, sizeof kid, "%.16s", kid_arg);
        if (strlen(kid_arg) > 16)
            return err_set(e, ERRC_PERMANENT, "--kid must be [a-z0-9]{1,16}");
    } else {
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        uint8_t r[8];
        if (crypto_random(r, sizeof r, e) < 0)
            return -1;
        for (size_t i = 0; i < sizeof r; i++)
            kid[i] = alphabet[r[i] % 36];
        kid[sizeof r] = '\0';
    }
    char key[APIKEYS_KEY_MAX], hex[65];
    if (apikeys_generate(kid, key, hex, e) < 0)
        return -1;
    cJSON *entry = cJSON_CreateObject();
    cJSON_AddStringToObject(entry, "sha256", hex);
    cJSON *arr = cJSON_AddArrayToObject(entry, "scopes");
    for (unsigned b = 1; b <= APIKEYS_TOKENS_READ; b <<= 1)
        if (bits & b)
            cJSON_AddItemToArray(arr, cJSON_CreateString(apikeys_scope_name(b)));
    char *entry_text = cJSON_PrintUnformatted(entry);
    int rc = 0;
    if (!entry_text) {
        rc = err_set(e, ERRC_FATAL, "out of memory");
    } else if (json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "kid", kid);
        cJSON_AddStringToObject(doc, "key", key);
        cJSON_AddItemToObject(doc, "entry", entry);
        entry = NULL;
        rc = ctl_out_json(cx->out, doc, e);
        cJSON *k = cJSON_GetObjectItemCaseSensitive(doc, "key");
        if (k && k->valuestring)
            crypto_wipe(k->valuestring, strlen(k->valuestring));
        cJSON_Delete(doc);
    } else {
        fprintf(cx->out,
                "API key (shown once; keep it in your backend's secret store):\n%s\n\n"
                "Add to \"keys\" in OAUTHQ_API_KEYS_FILE:\n\"%s\": %s\n",
                key, kid, entry_text);
    }
    free(entry_text);
    cJSON_Delete(entry);
    crypto_wipe(key, sizeof key);
    return rc;
}
