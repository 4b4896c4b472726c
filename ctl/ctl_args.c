/* ctl_args — see ctl_args.h. Pure; thread-safe. */
#include "ctl/ctl_args.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    unsigned flag;
    int takes_value;
} flag_spec;

static const flag_spec flags[] = {
    {"--json", CTL_OPT_JSON, 0},       {"--since", CTL_OPT_SINCE, 1},
    {"--reason", CTL_OPT_REASON, 1},   {"--limit", CTL_OPT_LIMIT, 1},
    {"--dry-run", CTL_OPT_DRY_RUN, 0}, {"--dlq", CTL_OPT_DLQ, 0},
    {"--help", CTL_OPT_HELP, 0},       {"-h", CTL_OPT_HELP, 0},
};
#define NFLAGS (sizeof flags / sizeof flags[0])

/* Parse a decimal long in [min, max] (whole string); -1 otherwise. */
static int parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s || (*s < '0' || *s > '9'))
        return -1;
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int ctl_args_wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

static int set_value(ctl_opts *o, unsigned flag, const char *name, const char *v, int64_t now_ms,
                     err_t *e)
{
    switch (flag) {
    case CTL_OPT_SINCE:
        return ctl_args_time(v, now_ms, &o->since_ms, e);
    case CTL_OPT_REASON:
        if (strlen(v) > RECORDS_TEXT_MAX)
            return err_set(e, ERRC_PERMANENT, "%s: longer than %d bytes", name, RECORDS_TEXT_MAX);
        snprintf(o->reason, sizeof o->reason, "%s", v);
        return 0;
    case CTL_OPT_LIMIT:
        if (parse_long(v, 1, CTL_LIMIT_MAX, &o->limit) < 0)
            return err_set(e, ERRC_PERMANENT, "%s: expected an integer 1..%ld", name,
                           CTL_LIMIT_MAX);
        return 0;
    default:
        return 0;
    }
}

int ctl_args_parse(int argc, char **argv, unsigned allowed, int64_t now_ms, ctl_opts *o, err_t *e)
{
    memset(o, 0, sizeof *o);
    allowed |= CTL_OPT_HELP;
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (o->npos == CTL_POS_MAX)
                return err_set(e, ERRC_PERMANENT, "too many arguments (at most %d)", CTL_POS_MAX);
            o->pos[o->npos++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const flag_spec *f = NULL;
        for (size_t k = 0; k < NFLAGS; k++)
            if (strlen(flags[k].name) == nlen && strncmp(flags[k].name, a, nlen) == 0)
                f = &flags[k];
        if (!f || !(allowed & f->flag))
            return err_set(e, ERRC_PERMANENT, "unknown option %.*s", (int)(nlen > 40 ? 40 : nlen),
                           a);
        if ((o->seen & f->flag) && f->flag != CTL_OPT_HELP)
            return err_set(e, ERRC_PERMANENT, "option %s given twice", f->name);
        o->seen |= f->flag;
        if (!f->takes_value) {
            if (eq)
                return err_set(e, ERRC_PERMANENT, "option %s takes no value", f->name);
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc)
                return err_set(e, ERRC_PERMANENT, "option %s needs a value", f->name);
            v = argv[++i];
        }
        if (set_value(o, f->flag, f->name, v, now_ms, e) < 0)
            return -1;
    }
    return 0;
}

/* n decimal digits at *p (advanced); -1 when not digits. */
static int digits(const char **p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    return v;
}

int ctl_args_rfc3339(const char *s, int64_t *ms)
{
    if (!s)
        return -1;
    const char *p = s;
    int y = digits(&p, 4);
    if (y < 0 || *p++ != '-')
        return -1;
    int mo = digits(&p, 2);
    if (mo < 0 || *p++ != '-')
        return -1;
    int d = digits(&p, 2);
    if (d < 0 || (*p != 'T' && *p != 't' && *p != ' '))
        return -1;
    p++;
    int h = digits(&p, 2);
    if (h < 0 || *p++ != ':')
        return -1;
    int mi = digits(&p, 2);
    if (mi < 0 || *p++ != ':')
        return -1;
    int sec = digits(&p, 2);
    if (sec < 0)
        return -1;
    int milli = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 3)
                milli = milli * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            milli *= 10;
    }
    long offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        p++;
        int oh = digits(&p, 2);
        if (oh < 0 || *p++ != ':')
            return -1;
        int om = digits(&p, 2);
        if (om < 0 || oh > 23 || om > 59)
            return -1;
        offset_s = sign * (oh * 3600L + om * 60L);
    } else {
        return -1;
    }
    if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *ms = ((int64_t)t - offset_s) * 1000 + milli;
    return 0;
}

int ctl_args_time(const char *s, int64_t now_ms, int64_t *ms, err_t *e)
{
    if (ctl_args_rfc3339(s, ms) == 0)
        return 0;
    size_t n = s ? strlen(s) : 0;
    if (n >= 2 && n < 16) {
        char num[16];
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        long v;
        int64_t unit = 0;
        switch (s[n - 1]) {
        case 's':
            unit = 1000;
            break;
        case 'm':
            unit = 60 * 1000;
            break;
        case 'h':
            unit = 3600 * 1000;
            break;
        case 'd':
            unit = 86400 * 1000;
            break;
        default:
            break;
        }
        if (unit && parse_long(num, 0, 100L * 365 * 86400, &v) == 0 &&
            (int64_t)v * unit <= now_ms) {
            *ms = now_ms - (int64_t)v * unit;
            return 0;
        }
    }
    return err_set(e, ERRC_PERMANENT,
                   "bad time '%.40s': expected RFC 3339 (2025-01-02T03:04:05Z) or an age "
                   "(90s, 15m, 2h, 7d)",
                   s ? s : "");
}

int ctl_args_partoff(const char *s, int32_t *partition, int64_t *offset, err_t *e)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    char part[16];
    long p, o;
    if (!colon || (size_t)(colon - s) >= sizeof part)
        return err_set(e, ERRC_PERMANENT, "expected PARTITION:OFFSET, got '%.40s'", s ? s : "");
    memcpy(part, s, (size_t)(colon - s));
    part[colon - s] = '\0';
    if (parse_long(part, 0, 1000000, &p) < 0 || parse_long(colon + 1, 0, LONG_MAX, &o) < 0)
        return err_set(e, ERRC_PERMANENT, "expected PARTITION:OFFSET, got '%.40s'", s);
    *partition = (int32_t)p;
    *offset = (int64_t)o;
    return 0;
}
