/* Unit tests of producer/assets (embedded pages and their CSP). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "producer/assets.h"

static void test_demo_page_csp_allows_exactly_its_inline_blocks(void **state)
{
    (void)state;
    assert_int_equal(assets_init(), 0);
    const asset *a = assets_find("demo.html");
    assert_non_null(a);
    assert_non_null(strstr(a->content_type, "text/html"));
    assert_non_null(strstr(a->csp, "default-src 'none'"));
    assert_null(strstr(a->csp, "unsafe-inline"));
    /* The style block's hash is in the policy (standard base64). */
    const char *s = strstr(a->data, "<style>") + 7;
    const char *e = strstr(s, "</style>");
    uint8_t d[32];
    crypto_sha256(s, (size_t)(e - s), d);
    char b64[64];
    crypto_b64url_encode(d, sizeof d, b64, sizeof b64);
    for (char *c = b64; *c; c++)
        *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
    char want[96];
    snprintf(want, sizeof want, "'sha256-%s='", b64);
    assert_non_null(strstr(a->csp, want));
    /* No external resource in any page. */
    for (const char *name = "demo.html"; name; name = NULL) {
        assert_null(strstr(a->data, "http://"));
        assert_null(strstr(a->data, "https://"));
    }
    assert_null(assets_find("nope.html"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_page_csp_allows_exactly_its_inline_blocks),
    };
    return cmocka_run_group_tests_name("unit_assets", tests, NULL, NULL);
}
