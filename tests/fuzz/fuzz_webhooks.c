/* libFuzzer target: the webhook dispatcher's parsers of Kafka records
 * (anything can be written to the status and webhooks topics): the status
 * record → webhook event, the webhook.v1 state decoder (round-trip
 * invariant: what decodes re-encodes to a record that decodes to the same
 * encoding) and the replay request decoder. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/delivery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    err_t e = {0};
    char id[DELIVERY_ID_MAX], type[DELIVERY_TYPE_MAX];
    int64_t v = 0;
    char *body = NULL;
    if (delivery_event_from_status(s, size, id, &v, type, &body, &e) == 1) {
        if (!body || strlen(body) > DELIVERY_BODY_MAX || v < 1)
            __builtin_trap();
        free(body);
    }
    delivery_replay_decode(s, size, id, &e);
    delivery_conn a, b;
    if (delivery_decode(s, size, &a, &e) != 0)
        return 0;
    char *j1 = delivery_encode(&a, &e);
    if (j1) {
        if (delivery_decode(j1, strlen(j1), &b, &e) != 0)
            __builtin_trap();
        char *j2 = delivery_encode(&b, &e);
        if (j2 && strcmp(j1, j2) != 0)
            __builtin_trap();
        free(j2);
        delivery_conn_clear(&b);
    }
    free(j1);
    delivery_conn_clear(&a);
    return 0;
}
