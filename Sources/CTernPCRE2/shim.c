#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tern_pcre2.h"

struct tern_regex {
    pcre2_code *code;
    int jit;
};

tern_regex *tern_regex_compile(const uint8_t *pattern, size_t length, int caseless, char *message,
                               size_t message_capacity, size_t *offset) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    uint32_t options = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NEVER_BACKSLASH_C | (caseless ? PCRE2_CASELESS : 0);
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
// request would allocate. Only the overall match is needed, so one pair of offsets is enough.
static _Thread_local pcre2_match_data *thread_match_data;

int tern_regex_match(const tern_regex *regex, const uint8_t *subject, size_t length) {
    if (thread_match_data == NULL) {
        thread_match_data = pcre2_match_data_create(1, NULL);
        if (thread_match_data == NULL) return PCRE2_ERROR_NOMEMORY;
    }
    static const uint8_t empty = 0;
    PCRE2_SPTR s = subject != NULL ? (PCRE2_SPTR)subject : &empty;
    int rc = regex->jit ? pcre2_jit_match(regex->code, s, length, 0, 0, thread_match_data, NULL)
                        : pcre2_match(regex->code, s, length, 0, 0, thread_match_data, NULL);
    if (rc >= 0) return 1;
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    return rc;
}

void tern_regex_free(tern_regex *regex) {
    if (regex == NULL) return;
    pcre2_code_free(regex->code);
    free(regex);
}
