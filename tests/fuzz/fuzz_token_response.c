/* libFuzzer target: the token-endpoint response classifier (untrusted: the
 * provider, or anything between us and it, chooses the status and the body).
 * Input: byte 0 picks the HTTP status, byte 1 the Retry-After value (or none),
 * the rest is the body. Checks invariants that hold for every input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/providers.h"
#include "common/exchange.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long STATUSES[] = {200, 201, 204, 301, 302, 400, 401,
                                403, 404, 408, 429, 500, 502, 503};
static const char *const RETRY_AFTER[] = {NULL, "1", "0", "120", "99999", "x", " 7 ", ""};

static int bounded(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static provider_t pv;
    if (!pv.name[0]) {
        strcpy(pv.name, "stripe");
        pv.profile = PROVIDER_PROFILE_STRIPE;
        strcpy(pv.token_url, "https://connect.stripe.com/oauth/token");
        strcpy(pv.client_id, "ca_fuzz");
        pv.code_ttl_s = 300;
    }
    long status = 200;
    const char *ra = NULL;
    if (size > 0) {
        status = STATUSES[data[0] % (sizeof STATUSES / sizeof STATUSES[0])];
        if (data[0] >= 0xf0)
            status = (long)data[0] * 3 - 300; /* odd statuses too: 420..465 */
        data++, size--;
    }
    if (size > 0) {
        ra = RETRY_AFTER[data[0] % (sizeof RETRY_AFTER / sizeof RETRY_AFTER[0])];
        data++, size--;
    }
    pv.profile = (size & 1) ? PROVIDER_PROFILE_OAUTH2 : PROVIDER_PROFILE_STRIPE;

    exchange_result r;
    exchange_classify_http(&pv, status, (const char *)data, size, ra, &r);

    if ((unsigned)r.cls > (unsigned)EXCH_UNKNOWN)
        __builtin_trap();
    if (r.http_status != status)
        __builtin_trap();
    if (!bounded(r.detail, sizeof r.detail) || r.detail[0] == '\0' ||
        !bounded(r.error, sizeof r.error) || !bounded(r.access_token, sizeof r.access_token) ||
        !bounded(r.refresh_token, sizeof r.refresh_token) ||
        !bounded(r.token_type, sizeof r.token_type) || !bounded(r.scope, sizeof r.scope) ||
        !bounded(r.account_id, sizeof r.account_id))
        __builtin_trap();
    /* SUCCESS exactly when a 2xx carried an access token; tokens only on SUCCESS. */
    if (r.cls == EXCH_SUCCESS && (status < 200 || status > 299 || r.access_token[0] == '\0'))
        __builtin_trap();
    if (r.cls != EXCH_SUCCESS && (r.access_token[0] || r.refresh_token[0] || r.account_id[0]))
        __builtin_trap();
    /* Status-driven classes. */
    if (status == 429 && (r.cls != EXCH_RETRY_SAFE || r.retry_after_s < 1))
        __builtin_trap();
    if (status >= 500 && r.cls != EXCH_UNKNOWN)
        __builtin_trap();
    if (r.retry_after_s < 0 || r.retry_after_s > EXCHANGE_RETRY_AFTER_MAX)
        __builtin_trap();
    /* detail never carries the token (long enough not to be a substring of fixed text). */
    if (strlen(r.access_token) >= 12 && strstr(r.detail, r.access_token))
        __builtin_trap();
    /* Printable detail and an identifier-shaped error. */
    for (const char *p = r.detail; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            __builtin_trap();
    for (const char *p = r.error; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            __builtin_trap();
    if (r.livemode < -1 || r.livemode > 1 || r.expires_in < -1)
        __builtin_trap();
    return 0;
}
