// CTernPCRE2: whole-string matching (Envoy's safe_regex), caseless, compile errors with offsets, the per-thread
// match block reused across matches, and subjects that are empty or not NUL-terminated; searches from an offset
// with their groups (rewrites).
#include "check.h"
#include "tern_pcre2.h"

static int match(const tern_regex *re, const char *s) {
    return tern_regex_match(re, (const uint8_t *)s, strlen(s));
}

static tern_regex *compile(const char *pattern, int flags) {
    char message[256];
    size_t offset = 0;
    return tern_regex_compile((const uint8_t *)pattern, strlen(pattern), flags, message, sizeof message, &offset);
}

static void test_search(void) {
    size_t o[2 * TERN_REGEX_GROUPS];
    const uint8_t *s = (const uint8_t *)"/a/b/a/c";
    tern_regex *re = compile("/a/(.)", TERN_REGEX_SEARCH);
    CHECK(re != NULL);
    CHECK_EQ(tern_regex_capture_count(re), 1);
    CHECK_EQ(tern_regex_search(re, s, 8, 0, o, TERN_REGEX_GROUPS), 2);  // leftmost, not the whole subject
    CHECK_EQ(o[0], 0);
    CHECK_EQ(o[1], 4);
    CHECK_EQ(o[2], 3);
    CHECK_EQ(o[3], 4);
    CHECK_EQ(tern_regex_search(re, s, 8, 1, o, TERN_REGEX_GROUPS), 2);  // from an offset
    CHECK_EQ(o[0], 4);
    CHECK_EQ(tern_regex_search(re, s, 8, 5, o, TERN_REGEX_GROUPS), 0);
    CHECK_EQ(tern_regex_search(re, s, 8, 9, o, TERN_REGEX_GROUPS), 0);  // past the end
    tern_regex_free(re);
    // `^` is the start of the subject, not of the search; `$` only its very end (RE2), not before a final \n.
    re = compile("^/a", TERN_REGEX_SEARCH);
    CHECK_EQ(tern_regex_search(re, s, 8, 0, o, TERN_REGEX_GROUPS), 1);
    CHECK_EQ(tern_regex_search(re, s, 8, 1, o, TERN_REGEX_GROUPS), 0);
    tern_regex_free(re);
    re = compile("c$", TERN_REGEX_SEARCH);
    CHECK_EQ(tern_regex_search(re, (const uint8_t *)"abc\n", 4, 0, o, TERN_REGEX_GROUPS), 0);
    CHECK_EQ(tern_regex_search(re, (const uint8_t *)"abc", 3, 0, o, TERN_REGEX_GROUPS), 1);
    tern_regex_free(re);
    // A group that took no part is unset.
    re = compile("(x)|(y)", TERN_REGEX_SEARCH);
    CHECK_EQ(tern_regex_search(re, (const uint8_t *)"ay", 2, 0, o, TERN_REGEX_GROUPS), 3);
    CHECK_EQ(o[2], SIZE_MAX);
    CHECK_EQ(o[4], 1);
    tern_regex_free(re);
    // More groups than the block holds: the first TERN_REGEX_GROUPS pairs are reported.
    re = compile("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", TERN_REGEX_SEARCH);
    CHECK_EQ(tern_regex_capture_count(re), 11);
    CHECK_EQ(tern_regex_search(re, (const uint8_t *)"abcdefghijk", 11, 0, o, TERN_REGEX_GROUPS), TERN_REGEX_GROUPS);
    CHECK_EQ(o[18], 8);
    CHECK_EQ(tern_regex_search(re, (const uint8_t *)"abcdefghijk", 11, 0, o, 2), 2);
    tern_regex_free(re);
}

static void test_whole_string(void) {
    tern_regex *re = compile("/v[0-9]+/.*", 0);
    CHECK(re != NULL);
    CHECK_EQ(match(re, "/v1/items"), 1);
    CHECK_EQ(match(re, "x/v1/items"), 0);  // anchored at the start
    tern_regex *digits = compile("\\d+", 0);
    CHECK_EQ(match(digits, "123"), 1);
    CHECK_EQ(match(digits, "123a"), 0);  // and at the end
    CHECK_EQ(match(digits, "a123"), 0);
    // A subject that is a slice of a larger buffer: only `length` bytes count.
    CHECK_EQ(tern_regex_match(digits, (const uint8_t *)"12xyz", 2), 1);
    CHECK_EQ(tern_regex_match(digits, NULL, 0), 0);
    tern_regex *empty = compile("", 0);
    CHECK_EQ(tern_regex_match(empty, NULL, 0), 1);
    for (int i = 0; i < 1000; i++) CHECK_EQ(match(re, "/v42/x"), 1);  // the thread's match block is reused
    tern_regex_free(re);
    tern_regex_free(digits);
    tern_regex_free(empty);
}

static void test_caseless(void) {
    tern_regex *re = compile("abc", TERN_REGEX_CASELESS);
    CHECK_EQ(match(re, "ABC"), 1);
    tern_regex_free(re);
    re = compile("(?i)abc", 0);
    CHECK_EQ(match(re, "aBc"), 1);
    tern_regex_free(re);
}

static void test_compile_error(void) {
    char message[256] = {0};
    size_t offset = 99;
    tern_regex *re = tern_regex_compile((const uint8_t *)"a(b", 3, 0, message, sizeof message, &offset);
    CHECK(re == NULL);
    CHECK_EQ(offset, 3);
    CHECK(strstr(message, "missing closing parenthesis") != NULL);
    tern_regex_free(NULL);
}

int main(void) {
    test_whole_string();
    test_caseless();
    test_compile_error();
    test_search();
    return check_finish("cshim.regex");
}
