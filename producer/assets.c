/* assets — see assets.h. */
#include "producer/assets.h"

#include <stdio.h>
#include <string.h>

#include "common/crypto.h"

#define ASSETS_MAX 16
#define CSP_MAX    1024

static asset table[ASSETS_MAX];
static char csps[ASSETS_MAX][CSP_MAX];
static size_t ntable;

void assets_csp_hash(const char *text, size_t len, char *out, size_t cap)
{
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256(text, len, d);
    /* CSP hashes are standard base64 with padding (32 bytes: one '='). */
    char b64[64];
    crypto_b64url_encode(d, sizeof d, b64, sizeof b64);
    for (char *c = b64; *c; c++)
        *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
    snprintf(out, cap, "'sha256-%s='", b64);
}

/* Append " 'sha256-…'" for every <tag>…</tag> block of html to out. */
static void hash_blocks(const char *html, const char *tag, char *out, size_t cap)
{
    char open[16], close[16];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *p = html;
    while ((p = strstr(p, open)) != NULL) {
        p += strlen(open);
        const char *end = strstr(p, close);
        if (!end)
            break;
        char h[80];
        assets_csp_hash(p, (size_t)(end - p), h, sizeof h);
        size_t n = strlen(out);
        snprintf(out + n, cap - n, " %s", h);
        p = end + strlen(close);
    }
}

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot && strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (dot && (strcmp(dot, ".js") == 0 || strcmp(dot, ".mjs") == 0))
        return "text/javascript; charset=utf-8";
    if (dot && strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    return "application/octet-stream";
}

int assets_init(void)
{
    ntable = 0;
    for (size_t i = 0; i < assets_table_len && i < ASSETS_MAX; i++) {
        asset *a = &table[ntable];
        a->name = assets_table[i].name;
        a->data = (const char *)assets_table[i].data;
        a->len = assets_table[i].len;
        a->content_type = type_of(a->name);
        char scripts[CSP_MAX / 2] = "", styles[CSP_MAX / 2] = "";
        if (strstr(a->content_type, "text/html")) {
            hash_blocks(a->data, "script", scripts, sizeof scripts);
            hash_blocks(a->data, "style", styles, sizeof styles);
        }
        snprintf(csps[ntable], CSP_MAX,
                 "default-src 'none'; script-src 'self'%s; style-src%s; connect-src 'self'; "
                 "img-src 'self' data:; base-uri 'none'; form-action 'self'; "
                 "frame-ancestors 'none'",
                 scripts, styles[0] ? styles : " 'none'");
        a->csp = csps[ntable];
        ntable++;
    }
    return 0;
}

const asset *assets_find(const char *name)
{
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}
