/*
 * fuzz_apikeys — libFuzzer target for the API key parsers: the first byte
 * picks the keys-file parser (apikeys_parse) or the Authorization header
 * parser and check (apikeys_parse_bearer, apikeys_check); any input must
 * either be accepted within its documented bounds or refused, never crash or
 * read out of bounds. Single-threaded, as libFuzzer calls it.
 * Build: make fuzz (see the Makefile), or by hand with
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE -I/usr/include/cjson \
 *     tests/fuzz/fuzz_apikeys.c common/apikeys.c common/config.c common/crypto.c \
 *     common/err.c common/log.c -lcjson -lcrypto -lpthread -o /tmp/fuzz_apikeys
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/apikeys.h"
#include "common/err.h"

/* libFuzzer entry point. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] & 1;
    data++, size--;
    /* Exact-size heap copy so ASan catches any read past `size`. */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    if (mode == 0) {
        err_t e = {0};
        apikeys_t *k = apikeys_parse(buf, size, "fuzz.json", &e);
        if (k) {
            if (apikeys_count(k) > APIKEYS_MAX)
                abort();
            apikeys_free(k);
        } else if (e.cls != ERRC_FATAL || !e.msg[0]) {
            abort();
        }
    } else {
        char kid[APIKEYS_KID_MAX];
        const char *key = NULL;
        size_t n = 0;
        if (apikeys_parse_bearer(buf, size, kid, &key, &n) == 0) {
            size_t kl = strlen(kid);
            if (kl < 1 || kl > 16 || key < buf || key + n != buf + size || n >= APIKEYS_KEY_MAX ||
                memcmp(key, "oq_", 3) != 0 || memcmp(key + 3, kid, kl) != 0)
                abort();
        }
        /* The check must refuse with no keys, whatever the header. */
        if (strlen(buf) == size &&
            apikeys_check(NULL, buf, APIKEYS_CONNECTIONS_READ, kid) == APIKEYS_OK)
            abort();
    }
    free(buf);
    return 0;
}
