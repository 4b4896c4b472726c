/* libFuzzer target: the callback.v1 record decoder (the worker's untrusted
 * input: anything can be written to the callbacks topic). Round-trip
 * invariant: a record that decodes re-encodes and decodes to the same.
 * The same bytes also go through the status.v1 and dlq.v1 decoders
 * (common/connrec: their readers take whatever is in those topics); they
 * must not crash and must leave NUL-terminated fields. The session.v1
 * decoder (the worker's other per-connection input from the intake) holds
 * the same round-trip invariant. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/connrec.h"
#include "common/records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    records_callback a, b;
    err_t e = {0};
    connrec_status st;
    if (connrec_status_decode((const char *)data, size, &st, NULL, &e) == 0 &&
        (strlen(st.id) == 0 || strlen(st.id) >= sizeof st.id || st.version < 1))
        __builtin_trap();
    cJSON *o = cJSON_ParseWithLength((const char *)data, size);
    connrec_dlq d;
    if (connrec_dlq_from(o, &d, &e) == 0 && (!d.reason || !d.source_topic || !d.at))
        __builtin_trap();
    cJSON_Delete(o);
    static records_session sa, sb;
    if (records_session_decode((const char *)data, size, &sa, &e) == 0) {
        char *sj = records_session_encode(&sa, &e);
        if (sj &&
            (records_session_decode(sj, strlen(sj), &sb, &e) != 0 ||
             strcmp(sa.connection_id, sb.connection_id) != 0 ||
             strcmp(sa.meta.json, sb.meta.json) != 0 || sa.expires_at_ms != sb.expires_at_ms ||
             sa.created_at_ms != sb.created_at_ms || sa.expires_at_ms < sa.created_at_ms))
            __builtin_trap();
        free(sj);
    }
    if (records_callback_decode((const char *)data, size, &a, &e) != 0)
        return 0;
    char *json = records_callback_encode(&a, &e);
    if (!json)
        return 0;
    if (records_callback_decode(json, strlen(json), &b, &e) != 0 ||
        strcmp(a.connection_id, b.connection_id) != 0 || strcmp(a.code, b.code) != 0 ||
        a.kind != b.kind || a.received_at_ms != b.received_at_ms)
        __builtin_trap();
    free(json);
    return 0;
}
