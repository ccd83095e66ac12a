// An LD_PRELOAD allocation counter for tests: every malloc-family call is counted per thread and passed to
// glibc's allocator; `tern_thread_malloc_count()` reads the calling thread's count (tests find it with dlsym).
// Per thread, so tests running in parallel on other threads do not disturb a measurement.
//   gcc -O2 -shared -fPIC -o count_malloc.so Tools/malloc-count/count_malloc.c
#include <errno.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

// initial-exec: a preloaded library's TLS is static, so reading it never allocates (no __tls_get_addr).
static __thread unsigned long count __attribute__((tls_model("initial-exec")));

unsigned long tern_thread_malloc_count(void) { return count; }

void *malloc(size_t n) {
    count++;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b) {
    count++;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n) {
    count++;
    return __libc_realloc(p, n);
}

void *memalign(size_t alignment, size_t n) {
    count++;
    return __libc_memalign(alignment, n);
}

void *aligned_alloc(size_t alignment, size_t n) {
    count++;
    return __libc_memalign(alignment, n);
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    count++;
    void *p = __libc_memalign(alignment, n);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
