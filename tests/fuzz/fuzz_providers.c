/*
 * fuzz_providers — libFuzzer target for providers_parse: any byte string
 * must either parse into a handle or fail with an ERRC_FATAL message, never
 * crash, leak or read out of bounds. Single-threaded, as libFuzzer calls it.
 * Build (not part of the Makefile):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE -I/usr/include/cjson \
 *     tests/fuzz/fuzz_providers.c common/providers.c common/config.c common/err.c \
 *     common/log.c -lcjson -lpthread -o /tmp/fuzz_providers
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/providers.h"

/* libFuzzer entry point: parse data[0..size) and release the result. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-size heap copy so ASan catches any read past `size`. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    err_t e = {0};
    providers_t *p = providers_parse(buf, size, "fuzz.json", &e);
    if (p) {
        size_t n = providers_count(p);
        if (n < 1 || n > PROVIDERS_MAX)
            abort();
        for (size_t i = 0; i < n; i++) {
            const provider_t *pv = providers_at(p, i);
            if (!pv || providers_find(p, pv->name) != pv || pv->code_ttl_s < 1 ||
                pv->code_ttl_s > 3600 || !pv->client_secret_file[0] == !pv->client_secret_env[0])
                abort();
            (void)provider_profile_name(pv->profile);
        }
        providers_free(p);
    } else if (e.cls != ERRC_FATAL || strlen(e.msg) >= ERR_MSG_MAX || !e.msg[0]) {
        abort();
    }
    free(buf);
    return 0;
}
