// nghttp2 1.52 (Debian's libnghttp2-dev headers; libnghttp2.so.14 loaded at run time) for TernHTTP's HTTP/2
// sessions. The shim exists only to load nghttp2 when the first HTTP/2 session is made rather than at start: every
// nghttp2 function Swift calls is a tern_ wrapper (tern_nghttp2_functions.h). The header's types, callbacks (C
// function pointers Swift closures without captures convert to) and constants import as they are. Its state: the
// resolved functions, set once, and the allocator's per-thread caches (mem.c).
#ifndef TERN_NGHTTP2_H
#define TERN_NGHTTP2_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <nghttp2/nghttp2.h>
#include "tern_nghttp2_functions.h"

// Loads libnghttp2.so.14 and resolves every function of TERN_NGHTTP2_FUNCTIONS, once per process (later calls
// return the first result). Returns 1, or 0 with the reason in `error` (at most `capacity` bytes, terminated).
// Call it before any tern_nghttp2_ wrapper.
int tern_nghttp2_load(char *error, size_t capacity);

// MARK: - The allocator sessions are made with (mem.c)

// Per-thread free lists of size classes (64 B to 16 KiB), so a steady stream of streams reuses blocks instead of
// calling malloc. Pass it to nghttp2_session_server_new3/client_new3; the struct is static (nghttp2 copies it).
nghttp2_mem *tern_nghttp2_mem(void);
// The calling thread made a session with the allocator; the calling thread deleted one. When a thread has no
// session left, its cached blocks go back to malloc.
void tern_nghttp2_mem_hold(void);
void tern_nghttp2_mem_release(void);

// The calling thread's cache: what it holds, and the blocks handed out so far from malloc (`fresh`) and from its
// lists (`reused`).
typedef struct {
    size_t cached_bytes;
    size_t cached_blocks;
    uint64_t fresh;
    uint64_t reused;
} tern_nghttp2_mem_stats;
tern_nghttp2_mem_stats tern_nghttp2_mem_thread_stats(void);

#define TERN_NGHTTP2_DECLARE(ret, name, params, args) ret tern_##name params;
TERN_NGHTTP2_FUNCTIONS(TERN_NGHTTP2_DECLARE)
#undef TERN_NGHTTP2_DECLARE

#endif
