// RE2 (Debian's libre2-dev), the regex engine of Envoy's safe_regex, for route matches and uriRegexRewrite. The
// shim exists because RE2 is C++: Swift calls it through this plain C header, and no C++ exception crosses it.
#ifndef TERN_RE2_H
#define TERN_RE2_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tern_re2 tern_re2;

// Compiles `pattern` (UTF-8, `length` bytes) with the options Envoy's CompiledGoogleReMatcher uses (RE2::Quiet:
// UTF-8, Perl classes and \b, leftmost-first, nothing logged). Anchoring is chosen per match, not here. Returns
// NULL on a bad pattern, with RE2's message ("missing ): (") NUL-terminated in `message` (truncated to
// `message_capacity`), or "out of memory".
tern_re2 *tern_re2_compile(const char *pattern, size_t length, char *message, size_t message_capacity);

// RE2's ProgramSize: the instruction count Envoy compares with re2.max_program_size.error_level.
int tern_re2_program_size(const tern_re2 *re);

// Compiles the reverse program now (RE2 makes it lazily, in the first unanchored search that matches) and
// returns its size, -1 if it cannot be compiled.
int tern_re2_reverse_program_size(const tern_re2 *re);

// The number of capturing groups in the pattern.
int tern_re2_capture_count(const tern_re2 *re);

// 1 when all of `subject` (`length` bytes; NULL when 0) matches the pattern, 0 when not, -ENOMEM when RE2 ran
// out of memory.
int tern_re2_full_match(const tern_re2 *re, const uint8_t *subject, size_t length);

// Groups tern_re2_search reports at most: the whole match and \1-\9, all an RE2 rewrite can name.
enum { TERN_RE2_GROUPS = 10 };

// The leftmost match in `subject` that starts at or after byte `start` (the bytes before it stay the context of
// `^` and `\b`), RE2::Match UNANCHORED. Fills `groups` (at most TERN_RE2_GROUPS) (start, end) byte offsets
// in `offsets`: group 0 (the whole match), then groups 1, 2, ...; a group that took no part, or that the
// pattern lacks, is (SIZE_MAX, SIZE_MAX). Asking for fewer groups is cheaper: with 1, RE2 runs only its DFAs.
// Returns 1 on a match, 0 on none (also when `start` > `length`), -EINVAL for a bad `groups`, -ENOMEM when RE2
// ran out of memory.
int tern_re2_search(const tern_re2 *re, const uint8_t *subject, size_t length, size_t start, size_t *offsets,
                    int groups);

void tern_re2_free(tern_re2 *re);

#ifdef __cplusplus
}
#endif
#endif
