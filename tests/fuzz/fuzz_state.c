/* libFuzzer target: state token verification (untrusted `state` parameter),
 * connect session verification (untrusted `session` parameter) and
 * connection id verification (untrusted path segment). A forged input must
 * never verify. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/ident.h"
#include "common/keyring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static keyring_t *kr;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!kr) {
        const char *j = "{\"active\":\"k1\",\"keys\":{\"k1\":"
                        "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}}";
        err_t e = {0};
        kr = keyring_parse(j, strlen(j), "fuzz", &e);
    }
    ident_state st;
    if (ident_state_verify(kr, (const char *)data, size, 0, &st) == IDENT_OK)
        __builtin_trap(); /* the fuzzer cannot know the key */
    static ident_session sess;
    if (ident_session_verify(kr, (const char *)data, size, 0, &sess) == IDENT_OK)
        __builtin_trap();
    char id[IDENT_CONN_ID_MAX + 1];
    size_t n = size < IDENT_CONN_ID_MAX ? size : IDENT_CONN_ID_MAX;
    memcpy(id, data, n);
    id[n] = '\0';
    int64_t created;
    if (ident_conn_verify(kr, id, &created) == IDENT_OK)
        __builtin_trap();
    return 0;
}
