// nghttp2 1.52 (Debian's libnghttp2-dev) for TernHTTP's HTTP/2 sessions: its header imports into Swift as it is
// (callbacks are C function pointers Swift closures without captures convert to), so this shim is the header alone.
#include <nghttp2/nghttp2.h>
