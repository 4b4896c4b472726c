/*
 * callback — validation of the provider's redirect to /oauth/callback
 * (RFC 6749 §4.1.2 and §4.1.2.1, RFC 9207), before anything is produced.
 *
 * Input is the raw query string. Accepted: exactly one of `code` or
 * `error`, exactly one `state`, optional `iss`, `error_description`,
 * `error_uri`, and other parameters providers add (Stripe's `scope`), each at
 * most once and within the limits below. `error` must be one of the codes
 * RFC 6749 §4.1.2.1 defines. The result is a plain value; checking the
 * state's MAC, expiry and binding is the caller's next step (common/ident).
 */
#ifndef OAUTHQ_PRODUCER_CALLBACK_H
#define OAUTHQ_PRODUCER_CALLBACK_H

#include <stddef.h>

#include "common/err.h"

#define CALLBACK_CODE_MAX  512  /* bytes of `code` */
#define CALLBACK_STATE_MAX 1024 /* bytes of `state` */
#define CALLBACK_ISS_MAX   512
#define CALLBACK_ERROR_MAX 64
#define CALLBACK_DESC_MAX  512
#define CALLBACK_SCOPE_MAX 512

typedef enum { CALLBACK_CODE, CALLBACK_ERROR } callback_kind;

typedef struct {
    callback_kind kind;
    char code[CALLBACK_CODE_MAX + 1];
    char state[CALLBACK_STATE_MAX + 1];
    char iss[CALLBACK_ISS_MAX + 1]; /* "" when absent */
    int has_iss;
    char error[CALLBACK_ERROR_MAX + 1];
    char error_description[CALLBACK_DESC_MAX + 1]; /* non-ASCII bytes → '?' */
    char scope[CALLBACK_SCOPE_MAX + 1];
} callback_params;

/* Parse and validate; every failure is ERRC_PERMANENT and e->msg is safe
 * to show (names the parameter and the rule, never the value). */
int callback_parse(const char *qs, size_t len, callback_params *out, err_t *e);

/* 1 when `error` is one of RFC 6749 §4.1.2.1's error codes. */
int callback_error_code_ok(const char *error);

#endif
