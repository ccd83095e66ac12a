// nghttp2's allocator (the `nghttp2_mem` its sessions are made with): per-thread free lists of size classes, so
// that a steady stream of HTTP/2 streams reuses the blocks its predecessors freed instead of calling malloc for
// every stream's state, queued frame, header name/value array and HPACK buffer or entry (most of the 6 to 20
// malloc calls a proxied stream made on the reactor thread before; docs/architecture.md, "HTTP/2 from clients").
//
// Unlike the rest of the shims it has policy and per-thread state. It is C because nghttp2 calls it back from inside
// its own functions for every block, and each session lives on one reactor thread, so a thread-local cache needs no
// lock. A block freed goes to the freeing thread's list whichever thread allocated it. Blocks are whole size classes (64 B to 16 KiB, the
// block's 16-byte header included), so any request of the class can reuse any block of it; larger requests go to
// malloc and free as they are. Bounds on what is kept:
//   - each class keeps at most TERN_MEM_CLASS_BUDGET bytes of free blocks per thread (128 KiB; 9 classes, so at
//     most 1.1 MiB per thread, and only as much as the thread's streams churned); beyond it free() frees;
//   - a thread whose last session ended (`tern_nghttp2_mem_release`) empties its cache, so an idle reactor keeps
//     nothing;
//   - a thread that exits empties its cache (a pthread key's destructor).
#include "tern_nghttp2.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TERN_MEM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TERN_MEM_ASAN 1
#endif

#ifdef TERN_MEM_ASAN
#include <sanitizer/asan_interface.h>
// A cached block's bytes are off limits to instrumented code until handed out again.
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define TERN_MEM_CLASSES 9
#define TERN_MEM_SMALLEST 64
#define TERN_MEM_CLASS_BUDGET (128 * 1024)
#define TERN_MEM_LARGE 0xffffffffu
#define TERN_MEM_MAGIC 0x7465726eu  // "tern"

// Before every block handed out: its class (or TERN_MEM_LARGE), and, while the block is cached, the next one.
// 16 bytes, so the caller's bytes keep malloc's alignment.
typedef struct header {
    struct header *next;
    uint32_t cls;
    uint32_t magic;
} header;
_Static_assert(sizeof(header) == 16, "the header keeps malloc's 16-byte alignment");

typedef struct {
    header *free[TERN_MEM_CLASSES];
    uint32_t count[TERN_MEM_CLASSES];
    /// Sessions made on this thread and not yet deleted (`tern_nghttp2_mem_hold`, `tern_nghttp2_mem_release`).
    long sessions;
    /// Blocks taken from malloc, and handed out from the lists.
    uint64_t fresh, reused;
    /// The thread's key destructor is registered; the thread is exiting (nothing is cached any more).
    int registered, exiting;
} cache;

// initial-exec: the shim is linked into the executable (SwiftPM, CMake), whose TLS is static: no __tls_get_addr.
static __thread cache local __attribute__((tls_model("initial-exec")));

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

static size_t class_size(uint32_t k) { return (size_t)TERN_MEM_SMALLEST << k; }

static void empty(cache *c) {
    for (uint32_t k = 0; k < TERN_MEM_CLASSES; k++) {
        header *h = c->free[k];
        while (h) {
            UNPOISON(h + 1, class_size(k) - sizeof(header));
            header *next = h->next;
            free(h);
            h = next;
        }
        c->free[k] = NULL;
        c->count[k] = 0;
    }
}

static void thread_exit(void *unused) {
    (void)unused;
    local.exiting = 1;
    empty(&local);
}

static void make_key(void) { (void)pthread_key_create(&exit_key, thread_exit); }

static void *mem_malloc(size_t size, void *user) {
    (void)user;
    if (size > SIZE_MAX - sizeof(header)) return NULL;
    size_t total = size + sizeof(header);
    uint32_t k = 0;
    while (k < TERN_MEM_CLASSES && class_size(k) < total) k++;
    if (k == TERN_MEM_CLASSES) {
        header *h = malloc(total);
        if (!h) return NULL;
        local.fresh++;
        h->cls = TERN_MEM_LARGE;
        h->magic = TERN_MEM_MAGIC;
        return h + 1;
    }
    header *h = local.free[k];
    if (h) {
        local.free[k] = h->next;
        local.count[k]--;
        local.reused++;
        UNPOISON(h + 1, class_size(k) - sizeof(header));
        return h + 1;
    }
    h = malloc(class_size(k));
    if (!h) return NULL;
    local.fresh++;
    h->cls = k;
    h->magic = TERN_MEM_MAGIC;
    return h + 1;
}

static void mem_free(void *ptr, void *user) {
    (void)user;
    if (!ptr) return;
    header *h = (header *)ptr - 1;
    if (h->magic != TERN_MEM_MAGIC) abort();  // not a block of this allocator: memory is corrupt
    uint32_t k = h->cls;
    if (k == TERN_MEM_LARGE || local.exiting || (size_t)(local.count[k] + 1) * class_size(k) > TERN_MEM_CLASS_BUDGET) {
        free(h);
        return;
    }
    if (!local.registered) {
        // Once per thread, when it first keeps a block: its cache is emptied when it exits.
        (void)pthread_once(&key_once, make_key);
        if (pthread_setspecific(exit_key, &local) != 0) {
            free(h);
            return;
        }
        local.registered = 1;
    }
    h->next = local.free[k];
    local.free[k] = h;
    local.count[k]++;
    POISON(h + 1, class_size(k) - sizeof(header));
}

static void *mem_calloc(size_t count, size_t size, void *user) {
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *p = mem_malloc(count * size, user);
    if (p) memset(p, 0, count * size);
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *user) {
    if (!ptr) return mem_malloc(size, user);
    header *h = (header *)ptr - 1;
    if (h->magic != TERN_MEM_MAGIC) abort();
    if (h->cls == TERN_MEM_LARGE) {
        if (size > SIZE_MAX - sizeof(header)) return NULL;
        header *grown = realloc(h, size + sizeof(header));
        return grown ? grown + 1 : NULL;
    }
    size_t capacity = class_size(h->cls) - sizeof(header);
    if (size <= capacity) return ptr;  // (a shrink keeps its block: nghttp2 only grows its buffers)
    void *moved = mem_malloc(size, user);
    if (!moved) return NULL;
    memcpy(moved, ptr, capacity);
    mem_free(ptr, user);
    return moved;
}

static nghttp2_mem allocator = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

nghttp2_mem *tern_nghttp2_mem(void) { return &allocator; }

void tern_nghttp2_mem_hold(void) { local.sessions++; }

void tern_nghttp2_mem_release(void) {
    if (local.sessions > 0) local.sessions--;
    if (local.sessions == 0) empty(&local);
}

tern_nghttp2_mem_stats tern_nghttp2_mem_thread_stats(void) {
    tern_nghttp2_mem_stats s = {0, 0, local.fresh, local.reused};
    for (uint32_t k = 0; k < TERN_MEM_CLASSES; k++) {
        s.cached_blocks += local.count[k];
        s.cached_bytes += local.count[k] * class_size(k);
    }
    return s;
}
