/* libFuzzer target: the callback query parser (untrusted: any browser or
 * attacker can send any query to /oauth/callback). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "producer/callback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    callback_params p;
    err_t e = {0};
    if (callback_parse((const char *)data, size, &p, &e) == 0) {
        /* Invariants of an accepted callback. */
        if (p.kind == CALLBACK_CODE && (p.code[0] == '\0' || strlen(p.code) > CALLBACK_CODE_MAX))
            __builtin_trap();
        if (p.state[0] == '\0')
            __builtin_trap();
        if (p.kind == CALLBACK_ERROR && !callback_error_code_ok(p.error))
            __builtin_trap();
    }
    return 0;
}
