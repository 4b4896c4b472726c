/*
 * fail_random — an LD_PRELOAD library for integration tests: OpenSSL's
 * RAND_bytes fails (returns 0, as when the random source is broken) while
 * the file named by $OAUTHQ_TEST_FAIL_RANDOM_FILE exists; otherwise it is
 * the real one. Used by tests/integration/intake_fatal.sh to reach the
 * intake's fatal path (issue 14, defect 9: a broken random source is not a
 * bad request). Runs on whichever thread asks for random bytes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*rand_bytes_fn)(unsigned char *buf, int num);

int RAND_bytes(unsigned char *buf, int num)
{
    const char *f = getenv("OAUTHQ_TEST_FAIL_RANDOM_FILE");
    if (f && access(f, F_OK) == 0)
        return 0;
    rand_bytes_fn real = (rand_bytes_fn)dlsym(RTLD_NEXT, "RAND_bytes");
    return real ? real(buf, num) : 0;
}
