/*
 * assets — static files embedded in the intake (files under producer/static/, turned
 * into byte arrays by scripts/embed-assets at build time): the status page,
 * the demo start page and the embeddable status snippet.
 *
 * For each HTML asset, assets_init computes a Content-Security-Policy that
 * allows exactly its inline <script> and <style> blocks by SHA-256 hash and
 * nothing from elsewhere, so pages carry inline code without
 * 'unsafe-inline'. Immutable after assets_init (main thread); any thread
 * may read.
 */
#ifndef OAUTHQ_PRODUCER_ASSETS_H
#define OAUTHQ_PRODUCER_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;
    const unsigned char *data;
    size_t len;
} assets_blob;

/* Generated table (build/gen/assets_data.c). */
extern const assets_blob assets_table[];
extern const size_t assets_table_len;

typedef struct {
    const char *name;
    const char *data; /* NUL-terminated */
    size_t len;
    const char *content_type;
    const char *csp; /* Content-Security-Policy to send with it */
} asset;

/* The CSP source expression allowing exactly text[len] inline:
 * "'sha256-<standard base64>='" into out[cap]. */
void assets_csp_hash(const char *text, size_t len, char *out, size_t cap);

/* Compute content types and CSP headers; call once at start-up. */
int assets_init(void);

/* The asset named `name` (e.g. "connect.html"), or NULL. */
const asset *assets_find(const char *name);

#endif
