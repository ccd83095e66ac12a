// A few macros for the C shim tests: failed checks are counted and reported, not fatal, so one run lists them all.
// Exit codes follow liburing's tests: 0 passed, 1 failed, 77 skipped (a kernel feature is missing).
#ifndef TERN_CSHIM_CHECK_H
#define TERN_CSHIM_CHECK_H

#include "CTernLinux.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) {                                                                     \
            check_passed++;                                                             \
        } else {                                                                        \
            check_failed++;                                                             \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, __func__, #cond); \
        }                                                                               \
    } while (0)

/// Compares two integers and prints both when they differ.
#define CHECK_EQ(actual, expected)                                                                       \
    do {                                                                                                 \
        long long check_a = (long long)(actual), check_e = (long long)(expected);                        \
        if (check_a == check_e) {                                                                        \
            check_passed++;                                                                              \
        } else {                                                                                         \
            check_failed++;                                                                              \
            fprintf(stderr, "%s:%d: %s: %s is %lld, expected %s = %lld\n", __FILE__, __LINE__, __func__, \
                    #actual, check_a, #expected, check_e);                                               \
        }                                                                                                \
    } while (0)

/// Reports the counts; the exit code for main.
static inline int check_finish(const char *suite) {
    printf("%s: %d checks passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed == 0 ? 0 : 1;
}

/// Exit code 77: ctest reports the test as skipped.
static inline int check_skip(const char *suite, const char *why) {
    printf("%s: skipped: %s (%d checks passed before)\n", suite, why, check_passed);
    return check_failed == 0 ? 77 : 1;
}

/// Whether CI requires what environment variable `name` stands for (it is set to 1, as .ci/run does for
/// TERN_REQUIRE_IO_URING): then a missing kernel feature fails the test instead of skipping it.
static inline int check_required(const char *name) {
    const char *value = getenv(name);
    return value != NULL && strcmp(value, "1") == 0;
}

/// `check_skip`, unless CI requires the feature (`check_required(required_by)`): then a failure (exit 1).
static inline int check_skip_unless_required(const char *suite, const char *why, const char *required_by) {
    if (check_required(required_by)) {
        printf("%s: FAILED: %s, and %s=1 requires it\n", suite, why, required_by);
        return 1;
    }
    return check_skip(suite, why);
}

#endif
