#include "tern_nghttp2.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

// MARK: - nghttp2, loaded when the first HTTP/2 session is made

#define TERN_NGHTTP2_POINTER(ret, name, params, args) static ret(*p_##name) params;
TERN_NGHTTP2_FUNCTIONS(TERN_NGHTTP2_POINTER)

#define TERN_NGHTTP2_WRAPPER(ret, name, params, args) ret tern_##name params { return p_##name args; }
TERN_NGHTTP2_FUNCTIONS(TERN_NGHTTP2_WRAPPER)

// Written by `load` alone, under pthread_once: every caller of tern_nghttp2_load sees them complete.
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void load(void) {
    // Never closed: the wrappers use it for the rest of the process's life.
    void *library = dlopen("libnghttp2.so.14", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        snprintf(load_error, sizeof load_error, "cannot load libnghttp2.so.14 (nghttp2 1.x): %s", dlerror());
        return;
    }
#define TERN_NGHTTP2_RESOLVE(ret, name, params, args)                                                              \
    if (!load_error[0]) {                                                                                          \
        *(void **)&p_##name = dlsym(library, #name);                                                               \
        if (!p_##name)                                                                                             \
            snprintf(load_error, sizeof load_error, "libnghttp2.so.14 lacks %s: not an nghttp2 Tern can use", #name); \
    }
    TERN_NGHTTP2_FUNCTIONS(TERN_NGHTTP2_RESOLVE)
#undef TERN_NGHTTP2_RESOLVE
}

int tern_nghttp2_load(char *error, size_t capacity) {
    pthread_once(&load_once, load);
    if (load_error[0]) {
        if (capacity) snprintf(error, capacity, "%s", load_error);
        return 0;
    }
    return 1;
}
