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
 * Errors: appends return 0, BUF_TOO_LARGE (the limit would be passed; the
 * content is unchanged) or BUF_NOMEM (the content is unchanged).
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

/* The content, NUL-terminated; "" when empty (never NULL). Valid until the next append. */
const char *buf_str(const buf_t *b);

/* Bytes held (without the NUL). */
size_t buf_len(const buf_t *b);

/* Drop the content (wiped when secret), keep the block and the limit. */
void buf_reset(buf_t *b);

/* Wipe (when secret) and free the block; the buffer is empty and reusable afterwards. NULL ok. */
void buf_free(buf_t *b);

#endif
