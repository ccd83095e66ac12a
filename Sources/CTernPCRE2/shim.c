#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tern_pcre2.h"

struct tern_regex {
    pcre2_code *code;
    int jit;
};

tern_regex *tern_regex_compile(const uint8_t *pattern, size_t length, int flags, char *message,
                               size_t message_capacity, size_t *offset) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    uint32_t options = PCRE2_NEVER_BACKSLASH_C;
    options |= (flags & TERN_REGEX_SEARCH) ? PCRE2_DOLLAR_ENDONLY : PCRE2_ANCHORED | PCRE2_ENDANCHORED;
    if (flags & TERN_REGEX_CASELESS) options |= PCRE2_CASELESS;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, length, options, &error, &error_offset, NULL);
    if (code == NULL) {
        if (message != NULL && message_capacity > 0) {
            pcre2_get_error_message(error, (PCRE2_UCHAR *)message, message_capacity);
        }
        if (offset != NULL) *offset = error_offset;
        return NULL;
    }
    tern_regex *regex = malloc(sizeof *regex);
    if (regex == NULL) {
        pcre2_code_free(code);
        if (message != NULL && message_capacity > 0) strncpy(message, "out of memory", message_capacity - 1);
        return NULL;
    }
    regex->code = code;
    regex->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return regex;
}

// One match block per thread (reactor), made on its first match and kept: a match needs one, and making it per
// request would allocate. Room for the groups a rewrite can name; a plain match reads only the first pair.
static _Thread_local pcre2_match_data *thread_match_data;

// Runs the match from `start`: >= 0 the pairs set (0: more groups than the block holds, all of it set),
// PCRE2_ERROR_NOMATCH, or another negative error.
static int run(const tern_regex *regex, const uint8_t *subject, size_t length, size_t start) {
    if (thread_match_data == NULL) {
        thread_match_data = pcre2_match_data_create(TERN_REGEX_GROUPS, NULL);
        if (thread_match_data == NULL) return PCRE2_ERROR_NOMEMORY;
    }
    static const uint8_t empty = 0;
    PCRE2_SPTR s = subject != NULL ? (PCRE2_SPTR)subject : &empty;
    return regex->jit ? pcre2_jit_match(regex->code, s, length, start, 0, thread_match_data, NULL)
                      : pcre2_match(regex->code, s, length, start, 0, thread_match_data, NULL);
}

int tern_regex_match(const tern_regex *regex, const uint8_t *subject, size_t length) {
    int rc = run(regex, subject, length, 0);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    return rc;
}

int tern_regex_capture_count(const tern_regex *regex) {
    uint32_t count = 0;
    if (pcre2_pattern_info(regex->code, PCRE2_INFO_CAPTURECOUNT, &count) != 0) return 0;
    return (int)count;
}

int tern_regex_search(const tern_regex *regex, const uint8_t *subject, size_t length, size_t start, size_t *offsets,
                      size_t pairs) {
    if (start > length) return 0;
    int rc = run(regex, subject, length, start);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return rc;
    size_t set = rc == 0 ? TERN_REGEX_GROUPS : (size_t)rc;
    if (set > pairs) set = pairs;
    const PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(thread_match_data);
    for (size_t i = 0; i < 2 * set; i++) offsets[i] = ovector[i];
    return (int)set;
}

void tern_regex_free(tern_regex *regex) {
    if (regex == NULL) return;
    pcre2_code_free(regex->code);
    free(regex);
}
