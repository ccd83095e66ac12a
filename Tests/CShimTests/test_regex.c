// CTernRE2: whole-string matching (Envoy's safe_regex), RE2's refusals with its messages, program sizes, subjects
// that are empty, NULL or not NUL-terminated, a pathological pattern in linear time, and searches from an offset
// with their groups (rewrites), including groups not asked for and groups the pattern lacks.
#include "check.h"
#include "tern_re2.h"

#include <errno.h>
#include <stdint.h>

static tern_re2 *compile(const char *pattern) {
    char message[256];
    return tern_re2_compile(pattern, strlen(pattern), message, sizeof message);
}

static int match(const tern_re2 *re, const char *s) {
    return tern_re2_full_match(re, (const uint8_t *)s, strlen(s));
}

static void test_whole_string(void) {
    tern_re2 *re = compile("/v[0-9]+/.*");
    CHECK(re != NULL);
    CHECK_EQ(match(re, "/v1/items"), 1);
    CHECK_EQ(match(re, "x/v1/items"), 0);  // anchored at the start
    tern_re2 *digits = compile("\\d+");
    CHECK_EQ(match(digits, "123"), 1);
    CHECK_EQ(match(digits, "123a"), 0);  // and at the end
    CHECK_EQ(match(digits, "a123"), 0);
    // A subject that is a slice of a larger buffer: only `length` bytes count.
    CHECK_EQ(tern_re2_full_match(digits, (const uint8_t *)"12xyz", 2), 1);
    CHECK_EQ(tern_re2_full_match(digits, NULL, 0), 0);
    tern_re2 *empty = compile("");
    CHECK_EQ(tern_re2_full_match(empty, NULL, 0), 1);
    tern_re2 *caseless = compile("(?i)abc");
    CHECK_EQ(match(caseless, "aBc"), 1);
    for (int i = 0; i < 1000; i++) CHECK_EQ(match(re, "/v42/x"), 1);
    tern_re2_free(re);
    tern_re2_free(digits);
    tern_re2_free(empty);
    tern_re2_free(caseless);
}

// (a*)*b against 'a' × 100,000: a backtracking engine tries exponentially many splits; RE2 answers at once.
static void test_linear_time(void) {
    tern_re2 *re = compile("(a*)*b");
    CHECK(re != NULL);
    size_t n = 100000;
    uint8_t *subject = malloc(n);
    memset(subject, 'a', n);
    CHECK_EQ(tern_re2_full_match(re, subject, n), 0);
    size_t o[2 * TERN_RE2_GROUPS];
    CHECK_EQ(tern_re2_search(re, subject, n, 0, o, 2), 0);
    subject[n - 1] = 'b';
    CHECK_EQ(tern_re2_full_match(re, subject, n), 1);
    free(subject);
    tern_re2_free(re);
}

static void test_refusals(void) {
    static const struct {
        const char *pattern;
        const char *message;
    } cases[] = {
        {"a(b", "missing ): a(b"},
        {"a(?=b)", "invalid perl operator: (?="},
        {"(?<=a)b", "invalid perl operator: (?<"},
        {"(a)\\1", "invalid escape sequence: \\1"},
        {"a*+", "bad repetition operator: *+"},
        {"(?>a)", "invalid perl operator: (?>"},
        {"x{1001}", "invalid repetition size: {1001}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char message[256] = {0};
        tern_re2 *re = tern_re2_compile(cases[i].pattern, strlen(cases[i].pattern), message, sizeof message);
        CHECK(re == NULL);
        if (strcmp(message, cases[i].message) != 0) {
            fprintf(stderr, "%s: message \"%s\", expected \"%s\"\n", cases[i].pattern, message, cases[i].message);
            CHECK(0);
        }
    }
    // A message cut to the room given, still terminated.
    char small[8];
    CHECK(tern_re2_compile("a(?=b)", 6, small, sizeof small) == NULL);
    CHECK_EQ(strlen(small), 7);
    // A pattern that is a slice: only `length` bytes are the pattern.
    tern_re2 *re = tern_re2_compile("ab(", 2, NULL, 0);
    CHECK(re != NULL);
    CHECK_EQ(match(re, "ab"), 1);
    tern_re2_free(re);
    tern_re2_free(NULL);
}

static void test_sizes(void) {
    tern_re2 *dot = compile(".*");
    CHECK_EQ(tern_re2_program_size(dot), 12);
    CHECK(tern_re2_reverse_program_size(dot) > 0);
    tern_re2_free(dot);
    tern_re2 *letters = compile("\\pL");  // every Unicode letter: far over Envoy's 100
    CHECK(tern_re2_program_size(letters) > 1000);
    tern_re2_free(letters);
}

static void test_search(void) {
    size_t o[2 * TERN_RE2_GROUPS];
    const uint8_t *s = (const uint8_t *)"/a/b/a/c";
    tern_re2 *re = compile("/a/(.)");
    CHECK(re != NULL);
    CHECK_EQ(tern_re2_capture_count(re), 1);
    CHECK_EQ(tern_re2_search(re, s, 8, 0, o, TERN_RE2_GROUPS), 1);  // leftmost, not the whole subject
    CHECK_EQ(o[0], 0);
    CHECK_EQ(o[1], 4);
    CHECK_EQ(o[2], 3);
    CHECK_EQ(o[3], 4);
    CHECK_EQ(o[4], SIZE_MAX);  // the pattern has no group 2
    CHECK_EQ(tern_re2_search(re, s, 8, 1, o, 1), 1);  // from an offset, the whole match only
    CHECK_EQ(o[0], 4);
    CHECK_EQ(o[1], 8);
    CHECK_EQ(tern_re2_search(re, s, 8, 5, o, 2), 0);
    CHECK_EQ(tern_re2_search(re, s, 8, 9, o, 2), 0);  // past the end
    CHECK_EQ(tern_re2_search(re, s, 8, 0, o, 0), -EINVAL);
    CHECK_EQ(tern_re2_search(re, s, 8, 0, o, TERN_RE2_GROUPS + 1), -EINVAL);
    tern_re2_free(re);
    // `^` is the start of the subject, not of the search; `$` only its very end, not before a final \n.
    re = compile("^/a");
    CHECK_EQ(tern_re2_search(re, s, 8, 0, o, 1), 1);
    CHECK_EQ(tern_re2_search(re, s, 8, 1, o, 1), 0);
    tern_re2_free(re);
    re = compile("c$");
    CHECK_EQ(tern_re2_search(re, (const uint8_t *)"abc\n", 4, 0, o, 1), 0);
    CHECK_EQ(tern_re2_search(re, (const uint8_t *)"abc", 3, 0, o, 1), 1);
    tern_re2_free(re);
    // A group that took no part is unset.
    re = compile("(x)|(y)");
    CHECK_EQ(tern_re2_search(re, (const uint8_t *)"ay", 2, 0, o, 3), 1);
    CHECK_EQ(o[2], SIZE_MAX);
    CHECK_EQ(o[4], 1);
    tern_re2_free(re);
    // An empty match in an empty (NULL) subject is at offset 0, not unset.
    re = compile("x*");
    CHECK_EQ(tern_re2_search(re, NULL, 0, 0, o, 1), 1);
    CHECK_EQ(o[0], 0);
    CHECK_EQ(o[1], 0);
    tern_re2_free(re);
    // More groups than reported: the first TERN_RE2_GROUPS are.
    re = compile("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)");
    CHECK_EQ(tern_re2_capture_count(re), 11);
    CHECK_EQ(tern_re2_search(re, (const uint8_t *)"abcdefghijk", 11, 0, o, TERN_RE2_GROUPS), 1);
    CHECK_EQ(o[18], 8);
    CHECK_EQ(o[19], 9);
    tern_re2_free(re);
}

int main(void) {
    test_whole_string();
    test_linear_time();
    test_refusals();
    test_sizes();
    test_search();
    return check_finish("cshim.regex");
}
