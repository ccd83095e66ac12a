// PCRE2 (8-bit, Debian's libpcre2-dev) for the route matchers' regexes. The shim exists because PCRE2's API is
// macros over width-suffixed names (pcre2_compile → pcre2_compile_8) that Swift cannot import, and because Swift
// has no thread-local storage for the per-thread match block a match needs.
#ifndef TERN_PCRE2_H
#define TERN_PCRE2_H
#include <stddef.h>
#include <stdint.h>

typedef struct tern_regex tern_regex;

// Compiles `pattern` anchored at both ends (Envoy's safe_regex is a whole-string match) and JIT-compiles it when
// the JIT is available. Returns NULL on a bad pattern with PCRE2's error message in `message` and the byte offset
// in `*offset`. `caseless` adds PCRE2_CASELESS.
tern_regex *tern_regex_compile(const uint8_t *pattern, size_t length, int caseless, char *message,
                               size_t message_capacity, size_t *offset);

// 1 when `subject` matches the whole pattern, 0 when not, negative PCRE2 error otherwise (match limits).
// Allocation-free after the calling thread's first match: the match block is kept per thread.
int tern_regex_match(const tern_regex *regex, const uint8_t *subject, size_t length);

void tern_regex_free(tern_regex *regex);

#endif
