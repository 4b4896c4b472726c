/*
 * log — structured, leveled logging to stderr with redaction.
 *
 * One line per event, either JSON ({"ts","level","component","event",...})
 * or text (ts level component event k=v ...), chosen by log_init. Any thread
 * may log: each line is rendered into a bounded buffer (LOG_LINE_MAX) and
 * written with a single write(2) under a mutex, so lines never interleave.
 *
 * Redaction rule (G5): nothing marked secret can be printed.
 *   1. Fields whose key names a secret (code, *secret*, *token*, *verifier*,
 *      password, authorization, cookie, state) print as "[REDACTED]".
 *   2. Values registered with log_secret() (client secrets, keys loaded at
 *      start-up) are replaced by "[REDACTED]" wherever they appear in the
 *      rendered line, including free-text messages.
 * Log a hash prefix when an identity is needed: a code is logged as
 * "code_sha256" = log_code_id (the first LOG_CODE_ID_LEN hex digits of its
 * SHA-256), the same id in every process, so one grep follows a code from
 * the intake through the worker to the token endpoint.
 */
#ifndef OAUTHQ_COMMON_LOG_H
#define OAUTHQ_COMMON_LOG_H

#include <stddef.h>

#include "common/err.h"

#define LOG_LINE_MAX       4096
#define LOG_SECRETS_MAX    64
#define LOG_SECRET_MIN_LEN 6  /* shorter values would redact ordinary text */
#define LOG_CODE_ID_LEN    12 /* hex digits of a code's SHA-256 in logs */

typedef enum { LOGL_DEBUG = 0, LOGL_INFO = 1, LOGL_WARN = 2, LOGL_ERROR = 3 } log_level;

/* Configure component name, level ("debug|info|warn|error") and format
 * ("json|text"). Defaults before/without init: "oauthq", info, json. */
int log_init(const char *component, const char *level, const char *format, err_t *e);

/* Register a secret value to scrub from every later line (copied; at most
 * LOG_SECRETS_MAX; values shorter than LOG_SECRET_MIN_LEN are refused).
 * Returns 0, or -1 when refused (caller decides whether that matters). */
int log_secret(const char *value, size_t len);

/* Forget all registered secrets (tests). */
void log_secrets_clear(void);

/* Structured event: key/value string pairs, e.g.
 * log_kv(LOGL_INFO, "callback_produced", "connection_id", id). The macro
 * appends the typed NULL sentinel that log_kv_ reads up to. */
#define log_kv(level, ...) log_kv_((level), __VA_ARGS__, (const char *)NULL)
void log_kv_(log_level level, const char *event, ...) __attribute__((sentinel));

/* The id logged under "code_sha256": the first LOG_CODE_ID_LEN digits of sha256_hex (a code's
 * lowercase hex SHA-256), or "-" when it is NULL or empty; written to out, returned. */
const char *log_code_id(const char *sha256_hex, char out[LOG_CODE_ID_LEN + 1]);

/* Is `level` enabled? Lets callers skip costly field preparation. */
int log_enabled(log_level level);

/* Redirect rendered lines (tests): fn receives each complete line without
 * the trailing newline. NULL restores stderr. */
void log_set_sink(void (*fn)(const char *line, void *ud), void *ud);

/* True when `key` names a secret under rule 1 (exposed for tests). */
int log_key_is_secret(const char *key);

#endif
