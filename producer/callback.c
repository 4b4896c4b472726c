/* callback — see callback.h. Pure; any thread. */
#include "producer/callback.h"

#include <string.h>

#include "producer/query.h"

static const char *const rfc6749_errors[] = {
    "invalid_request",         "unauthorized_client",
    "access_denied",           "unsupported_response_type",
    "invalid_scope",           "server_error",
    "temporarily_unavailable", NULL,
};

int callback_error_code_ok(const char *error)
{
    for (int i = 0; rfc6749_errors[i]; i++)
        if (strcmp(error, rfc6749_errors[i]) == 0)
            return 1;
    return 0;
}

/* RFC 6749 Appendix A: code is VSCHAR (%x20-7E); we also refuse the space,
 * which no provider uses and which only makes logs and records ambiguous. */
static int vschar_nospace(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static int state_chars(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static int take(const query_t *q, const char *name, size_t max, char *out, int required, err_t *e)
{
    size_t n = 0;
    const char *v = query_get(q, name, &n);
    out[0] = '\0';
    if (!v) {
        if (required)
            return err_set(e, ERRC_PERMANENT, "missing parameter '%s'", name);
        return 0;
    }
    if (n == 0)
        return err_set(e, ERRC_PERMANENT, "parameter '%s' is empty", name);
    if (n > max)
        return err_set(e, ERRC_PERMANENT, "parameter '%s' longer than %zu bytes", name, max);
    memcpy(out, v, n + 1);
    return 1;
}

int callback_parse(const char *qs, size_t len, callback_params *out, err_t *e)
{
    query_t qq; /* ~4.6 KB on the caller's stack; MHD threads have 256 KB+ */
    memset(out, 0, sizeof *out);
    if (query_parse(qs, len, &qq, e) < 0)
        return -1;
    int has_code = query_get(&qq, "code", NULL) != NULL;
    int has_error = query_get(&qq, "error", NULL) != NULL;
    if (has_code == has_error)
        return err_set(e, ERRC_PERMANENT,
                       has_code ? "both 'code' and 'error' given"
                                : "neither 'code' nor 'error' given");
    if (take(&qq, "state", CALLBACK_STATE_MAX, out->state, 1, e) < 0)
        return -1;
    if (!state_chars(out->state, strlen(out->state)))
        return err_set(e, ERRC_PERMANENT, "parameter 'state' has invalid characters");
    int r = take(&qq, "iss", CALLBACK_ISS_MAX, out->iss, 0, e);
    if (r < 0)
        return -1;
    out->has_iss = r;
    if (out->has_iss && !vschar_nospace(out->iss, strlen(out->iss)))
        return err_set(e, ERRC_PERMANENT, "parameter 'iss' has invalid characters");
    if (take(&qq, "scope", CALLBACK_SCOPE_MAX, out->scope, 0, e) < 0)
        return -1;
    for (char *p = out->scope; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return err_set(e, ERRC_PERMANENT, "parameter 'scope' has invalid characters");
    if (has_code) {
        out->kind = CALLBACK_CODE;
        if (take(&qq, "code", CALLBACK_CODE_MAX, out->code, 1, e) < 0)
            return -1;
        if (!vschar_nospace(out->code, strlen(out->code)))
            return err_set(e, ERRC_PERMANENT, "parameter 'code' has invalid characters");
        if (query_get(&qq, "error_description", NULL))
            return err_set(e, ERRC_PERMANENT, "'error_description' without 'error'");
        return 0;
    }
    out->kind = CALLBACK_ERROR;
    if (take(&qq, "error", CALLBACK_ERROR_MAX, out->error, 1, e) < 0)
        return -1;
    if (!callback_error_code_ok(out->error))
        return err_set(e, ERRC_PERMANENT, "parameter 'error' is not an RFC 6749 error code");
    if (take(&qq, "error_description", CALLBACK_DESC_MAX, out->error_description, 0, e) < 0)
        return -1;
    for (char *p = out->error_description; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?'; /* kept for operators only; never shown to users (G3) */
    return 0;
}
