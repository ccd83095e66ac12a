// nghttp2 1.52 (Debian's libnghttp2-dev headers; libnghttp2.so.14 loaded at run time) for TernHTTP's HTTP/2
// sessions. The shim exists only to load nghttp2 when the first HTTP/2 session is made rather than at start: every
// nghttp2 function Swift calls is a tern_ wrapper (tern_nghttp2_functions.h). The header's types, callbacks (C
// function pointers Swift closures without captures convert to) and constants import as they are. Its only state
// is the resolved functions, set once.
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

#define TERN_NGHTTP2_DECLARE(ret, name, params, args) ret tern_##name params;
TERN_NGHTTP2_FUNCTIONS(TERN_NGHTTP2_DECLARE)
#undef TERN_NGHTTP2_DECLARE

#endif
