/* err — see err.h. Pure functions, no global state, any thread. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(err_t *e, errc cls, const char *fmt, ...)
{
    if (!e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    e->cls = cls;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_wrap(err_t *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    char prefix[ERR_MSG_MAX];
    char old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    int n = snprintf(e->msg, sizeof e->msg, "%.*s: ", (int)(sizeof e->msg / 2), prefix);
    snprintf(e->msg + n, sizeof e->msg - (size_t)n, "%.*s", (int)(sizeof e->msg / 2 - 3), old);
    return -1;
}

void err_clear(err_t *e)
{
    if (!e)
        return;
    e->cls = ERRC_OK;
    e->msg[0] = '\0';
}

const char *errc_name(errc cls)
{
    switch (cls) {
    case ERRC_OK:
        return "ok";
    case ERRC_RETRIABLE:
        return "retriable";
    case ERRC_PERMANENT:
        return "permanent";
    case ERRC_FATAL:
        return "fatal";
    }
    return "unknown";
}
