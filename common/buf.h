/*
 * buf — one bounded, growable byte buffer (modelled on curl's dynbuf).
 *
 * What: appends bytes to a heap buffer that grows by doubling up to a hard
 * size limit set at init; the content is always NUL-terminated (the NUL is
 * not counted in len and does not count against the limit). A buffer marked
 * secret never leaves a copy behind: it grows by malloc + copy + wipe of the
 * old block (never realloc), and reset/free overwrite the bytes first.
 *
 * Ownership: a buf_t is a value owned by its holder (stack or struct); its
 * block is owned by the buf_t until buf_free. No locking: one thread at a
 * time.
 *
 * Errors: appends return 0, BUF_TOO_LARGE (the limit would be passed) or
 * BUF_NOMEM. The first error sticks: the content stays as it was before the
 * failed append and every later append returns the same error, so a caller
 * may append many pieces and check once (buf_error, buf_take). buf_reset and
 * buf_free clear it.
 */
#ifndef OAUTHQ_COMMON_BUF_H
#define OAUTHQ_COMMON_BUF_H

#include <stddef.h>

#define BUF_TOO_LARGE (-1)
#define BUF_NOMEM     (-2)

typedef struct {
    char *p;    /* NULL until the first append */
    size_t len; /* bytes held, without the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* largest len allowed */
    int secret; /* wipe on growth, reset and free */
    int err;    /* first error, sticky; 0 when none */
} buf_t;

/* Empty buffer holding at most max bytes; secret: wipe every copy. Allocates nothing. */
void buf_init(buf_t *b, size_t max, int secret);

/* Append n bytes of mem: 0, BUF_TOO_LARGE or BUF_NOMEM (content unchanged on error). */
int buf_add(buf_t *b, const void *mem, size_t n);

/* Append a NUL-terminated string (as buf_add). */
int buf_adds(buf_t *b, const char *s);

/* Append s form-urlencoded (application/x-www-form-urlencoded: unreserved bytes as they are,
 * space as '+', every other byte as %XX) (as buf_add). */
int buf_add_formenc(buf_t *b, const char *s);

/* Append printf-formatted text (as buf_add). */
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The sticky error: 0, BUF_TOO_LARGE or BUF_NOMEM. */
int buf_error(const buf_t *b);

/* Hand the content to the caller as a malloc'd NUL-terminated string (len in *len when len is
 * not NULL) and leave the buffer empty; NULL (content freed) after an error or when out of
 * memory. */
char *buf_take(buf_t *b, size_t *len);

/* The content, NUL-terminated; "" when empty (never NULL). Valid until the next append. */
const char *buf_str(const buf_t *b);

/* Bytes held (without the NUL). */
size_t buf_len(const buf_t *b);

/* Drop the content (wiped when secret) and the error, keep the block and the limit. */
void buf_reset(buf_t *b);

/* Wipe (when secret) and free the block; the buffer is empty and reusable afterwards. NULL ok. */
void buf_free(buf_t *b);

#endif
