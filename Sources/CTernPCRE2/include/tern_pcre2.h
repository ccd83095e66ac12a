// PCRE2 (8-bit, Debian's libpcre2-dev) for the route matchers' regexes. The shim exists because PCRE2's API is
// macros over width-suffixed names (pcre2_compile → pcre2_compile_8) that Swift cannot import, and because Swift
// has no thread-local storage for the per-thread match block a match needs.
#ifndef TERN_PCRE2_H
#define TERN_PCRE2_H
#include <stddef.h>
#include <stdint.h>

typedef struct tern_regex tern_regex;

// `flags` of tern_regex_compile.
enum {
    // PCRE2_CASELESS.
    TERN_REGEX_CASELESS = 1,
    // For searching (tern_regex_search, rewrites) instead of whole-string matching: not anchored, and `$` only at
    // the very end of the subject, as RE2's `$`.
    TERN_REGEX_SEARCH = 2,
};

// Compiles `pattern`, anchored at both ends unless `flags` has TERN_REGEX_SEARCH (Envoy's safe_regex is a
// whole-string match), and JIT-compiles it when the JIT is available. Returns NULL on a bad pattern with PCRE2's
// error message in `message` and the byte offset in `*offset`.
tern_regex *tern_regex_compile(const uint8_t *pattern, size_t length, int flags, char *message,
                               size_t message_capacity, size_t *offset);

// The number of capturing groups in the pattern.
int tern_regex_capture_count(const tern_regex *regex);

// The leftmost match in `subject` that starts at or after byte `start` (the bytes before `start` stay the context
// of `^`, `\b` and lookbehinds). Fills up to `pairs` (start, end) byte offsets in `offsets`: group 0 (the whole
// match), then groups 1, 2, ...; a group that took no part is (SIZE_MAX, SIZE_MAX). Returns how many pairs it
// filled, 0 when nothing matches, a negative PCRE2 error otherwise (match limits). Allocation-free after the
// calling thread's first match, as tern_regex_match (the same per-thread match block, TERN_REGEX_GROUPS pairs).
int tern_regex_search(const tern_regex *regex, const uint8_t *subject, size_t length, size_t start, size_t *offsets,
                      size_t pairs);

// Groups a search reports at most: the whole match and \1-\9, all an RE2 rewrite can name.
enum { TERN_REGEX_GROUPS = 10 };

// 1 when `subject` matches the whole pattern, 0 when not, negative PCRE2 error otherwise (match limits).
// Allocation-free after the calling thread's first match: the match block is kept per thread.
int tern_regex_match(const tern_regex *regex, const uint8_t *subject, size_t length);

void tern_regex_free(tern_regex *regex);

#endif
