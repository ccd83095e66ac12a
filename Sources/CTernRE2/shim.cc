// The C face of RE2 (tern_re2.h). A tern_re2 is an re2::RE2; every entry point catches what RE2 may throw
// (std::bad_alloc) so that no exception unwinds into Swift.
#include "tern_re2.h"

#include <re2/re2.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace {

re2::RE2 *cast(tern_re2 *re) { return reinterpret_cast<re2::RE2 *>(re); }
const re2::RE2 *cast(const tern_re2 *re) { return reinterpret_cast<const re2::RE2 *>(re); }

void copy_message(const char *text, size_t length, char *message, size_t capacity) {
    if (message == nullptr || capacity == 0) return;
    size_t n = length < capacity - 1 ? length : capacity - 1;
    std::memcpy(message, text, n);
    message[n] = '\0';
}

// Subjects are never NULL inside: Swift passes NULL for an empty buffer, and a match in it must still have a
// non-NULL start (RE2 marks a group that took no part with a NULL one).
const uint8_t empty_subject = 0;

const uint8_t *nonnull(const uint8_t *subject) { return subject != nullptr ? subject : &empty_subject; }

re2::StringPiece piece(const uint8_t *bytes, size_t length) {
    return re2::StringPiece(reinterpret_cast<const char *>(bytes), length);
}

}  // namespace

extern "C" tern_re2 *tern_re2_compile(const char *pattern, size_t length, char *message, size_t message_capacity) {
    try {
        auto *re = new re2::RE2(re2::StringPiece(pattern, length), re2::RE2::Options(re2::RE2::Quiet));
        if (re->ok()) return reinterpret_cast<tern_re2 *>(re);
        copy_message(re->error().data(), re->error().size(), message, message_capacity);
        delete re;
    } catch (...) {
        static const char oom[] = "out of memory";
        copy_message(oom, sizeof oom - 1, message, message_capacity);
    }
    return nullptr;
}

extern "C" int tern_re2_program_size(const tern_re2 *re) { return cast(re)->ProgramSize(); }

extern "C" int tern_re2_reverse_program_size(const tern_re2 *re) {
    try {
        return cast(re)->ReverseProgramSize();
    } catch (...) {
        return -1;
    }
}

extern "C" int tern_re2_capture_count(const tern_re2 *re) { return cast(re)->NumberOfCapturingGroups(); }

extern "C" int tern_re2_full_match(const tern_re2 *re, const uint8_t *subject, size_t length) {
    subject = nonnull(subject);
    try {
        return cast(re)->Match(piece(subject, length), 0, length, re2::RE2::ANCHOR_BOTH, nullptr, 0) ? 1 : 0;
    } catch (...) {
        return -ENOMEM;
    }
}

extern "C" int tern_re2_search(const tern_re2 *re, const uint8_t *subject, size_t length, size_t start,
                               size_t *offsets, int groups) {
    if (groups < 1 || groups > TERN_RE2_GROUPS) return -EINVAL;
    if (start > length) return 0;
    subject = nonnull(subject);
    re2::StringPiece found[TERN_RE2_GROUPS];
    bool matched;
    try {
        matched = cast(re)->Match(piece(subject, length), start, length, re2::RE2::UNANCHORED, found, groups);
    } catch (...) {
        return -ENOMEM;
    }
    if (!matched) return 0;
    // RE2 leaves a group the pattern lacks untouched and sets one that took no part to a NULL piece.
    const char *base = reinterpret_cast<const char *>(subject);
    int known = 1 + cast(re)->NumberOfCapturingGroups();
    for (int i = 0; i < groups; i++) {
        if (i < known && found[i].data() != nullptr) {
            offsets[2 * i] = static_cast<size_t>(found[i].data() - base);
            offsets[2 * i + 1] = offsets[2 * i] + found[i].size();
        } else {
            offsets[2 * i] = offsets[2 * i + 1] = SIZE_MAX;
        }
    }
    return 1;
}

extern "C" void tern_re2_free(tern_re2 *re) { delete cast(re); }
