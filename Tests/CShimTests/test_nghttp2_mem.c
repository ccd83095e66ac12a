// CTernNghttp2's allocator (mem.c) under ASan and UBSan: blocks reused within their size class, calloc zeroing a
// reused block, realloc keeping contents across classes and into malloc's own blocks, every block aligned as
// malloc's, each class's cache bounded, a thread's cache emptied when its last session ends and when it exits
// (LeakSanitizer would report the blocks otherwise), blocks freed on another thread cached there, and real nghttp2
// client and server sessions made with it exchanging thousands of requests (a new header value each, as
// x-request-id is) without taking another block from malloc once warm.
#include "check.h"
#include "tern_nghttp2.h"

#include <pthread.h>
#include <stdint.h>

static nghttp2_mem *mem;

static void *m(size_t n) { return mem->malloc(n, mem->mem_user_data); }
static void f(void *p) { mem->free(p, mem->mem_user_data); }
static void *c(size_t count, size_t n) { return mem->calloc(count, n, mem->mem_user_data); }
static void *r(void *p, size_t n) { return mem->realloc(p, n, mem->mem_user_data); }

static void test_blocks_are_reused_within_their_class(void) {
    tern_nghttp2_mem_hold();
    tern_nghttp2_mem_stats before = tern_nghttp2_mem_thread_stats();
    void *p = m(100);
    CHECK(p != NULL);
    memset(p, 1, 100);
    f(p);
    // 100 bytes and its header fit the 128-byte class, as 112 do: the same block comes back.
    void *q = m(112);
    CHECK(q == p);
    memset(q, 2, 112);
    f(q);
    tern_nghttp2_mem_stats after = tern_nghttp2_mem_thread_stats();
    CHECK_EQ(after.fresh - before.fresh, 1);
    CHECK_EQ(after.reused - before.reused, 1);
    // Every size up to and past the largest class: aligned as malloc's, all of it writable (ASan checks).
    size_t sizes[] = {0, 1, 47, 48, 49, 111, 113, 1000, 4080, 4081, 16368, 16369, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *b = m(sizes[i]);
        CHECK(b != NULL);
        CHECK_EQ((uintptr_t)b % 16, 0);
        memset(b, 0xA5, sizes[i]);
        f(b);
    }
    f(NULL);
    tern_nghttp2_mem_release();
}

static void test_calloc_zeroes_a_reused_block(void) {
    tern_nghttp2_mem_hold();
    unsigned char *p = m(200);
    memset(p, 0xAB, 200);
    f(p);
    unsigned char *q = c(10, 20);
    CHECK(q == p);
    int zero = 1;
    for (int i = 0; i < 200; i++) zero &= q[i] == 0;
    CHECK(zero);
    f(q);
    CHECK(c(SIZE_MAX / 2, 4) == NULL);
    CHECK(m(SIZE_MAX - 8) == NULL);
    tern_nghttp2_mem_release();
}

static int pattern_intact(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != (unsigned char)(i * 7)) return 0;
    }
    return 1;
}

static void test_realloc_keeps_contents(void) {
    tern_nghttp2_mem_hold();
    unsigned char *p = r(NULL, 10);
    for (size_t i = 0; i < 10; i++) p[i] = (unsigned char)(i * 7);
    // Within its block's capacity (64 - 16 bytes): the same block.
    unsigned char *same = r(p, 48);
    CHECK(same == p);
    for (size_t i = 10; i < 48; i++) same[i] = (unsigned char)(i * 7);
    // Into a larger class, then past the largest (malloc's own block), then grown and shrunk there.
    size_t steps[] = {1000, 70000, 200000, 50};
    size_t have = 48;
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        unsigned char *grown = r(p, steps[s]);
        CHECK(grown != NULL);
        size_t kept = have < steps[s] ? have : steps[s];
        CHECK(pattern_intact(grown, kept));
        for (size_t i = kept; i < steps[s]; i++) grown[i] = (unsigned char)(i * 7);
        p = grown;
        have = steps[s];
    }
    f(p);
    tern_nghttp2_mem_release();
}

static void test_each_class_keeps_at_most_its_budget(void) {
    tern_nghttp2_mem_hold();
    enum { N = 5000 };
    static void *blocks[N];
    for (int i = 0; i < N; i++) blocks[i] = m(100);
    for (int i = 0; i < N; i++) f(blocks[i]);
    tern_nghttp2_mem_stats s = tern_nghttp2_mem_thread_stats();
    // 128 KiB of 128-byte blocks are kept; the rest went back to malloc.
    CHECK_EQ(s.cached_bytes, 128 * 1024);
    CHECK_EQ(s.cached_blocks, 1024);
    // Its last session gone, the thread keeps nothing.
    tern_nghttp2_mem_release();
    s = tern_nghttp2_mem_thread_stats();
    CHECK_EQ(s.cached_bytes, 0);
    CHECK_EQ(s.cached_blocks, 0);
}

struct handover {
    void *blocks[64];
    tern_nghttp2_mem_stats seen;
};

static void *free_on_this_thread(void *arg) {
    struct handover *h = arg;
    tern_nghttp2_mem_hold();
    for (int i = 0; i < 64; i++) f(h->blocks[i]);
    h->seen = tern_nghttp2_mem_thread_stats();
    // Exits holding them (its session count not released): the thread's exit empties its cache.
    return NULL;
}

static void test_blocks_freed_on_another_thread_are_cached_there(void) {
    tern_nghttp2_mem_hold();
    struct handover h;
    for (int i = 0; i < 64; i++) h.blocks[i] = m(300);
    tern_nghttp2_mem_stats mine = tern_nghttp2_mem_thread_stats();
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, free_on_this_thread, &h), 0);
    pthread_join(t, NULL);
    CHECK_EQ(h.seen.cached_blocks, 64);
    CHECK_EQ(h.seen.cached_bytes, 64 * 512);
    tern_nghttp2_mem_stats after = tern_nghttp2_mem_thread_stats();
    CHECK_EQ(after.cached_blocks, mine.cached_blocks);
    tern_nghttp2_mem_release();
}

// MARK: - Real sessions

struct peer {
    nghttp2_session *session;
    int responses, closed;
    size_t body;
};

static ssize_t read_body(nghttp2_session *session, int32_t stream, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *user) {
    (void)session, (void)stream, (void)source, (void)user;
    size_t n = length < 100 ? length : 100;
    memset(buf, 'x', n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int server_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)"100", 14, 3, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider body = {.read_callback = read_body};
    return tern_nghttp2_submit_response(session, frame->hd.stream_id, nva, 2, &body);
}

static int client_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
    (void)session;
    struct peer *p = user;
    if (frame->hd.type == NGHTTP2_HEADERS) p->responses++;
    return 0;
}

static int client_data(nghttp2_session *session, uint8_t flags, int32_t stream, const uint8_t *data, size_t length,
                       void *user) {
    (void)session, (void)flags, (void)stream, (void)data;
    ((struct peer *)user)->body += length;
    return 0;
}

static int stream_closed(nghttp2_session *session, int32_t stream, uint32_t code, void *user) {
    (void)session, (void)stream, (void)code;
    ((struct peer *)user)->closed++;
    return 0;
}

/// Moves everything `from` has to send into `to`.
static int pump(nghttp2_session *from, nghttp2_session *to) {
    int moved = 0;
    const uint8_t *data;
    ssize_t n;
    while ((n = tern_nghttp2_session_mem_send(from, &data)) > 0) {
        CHECK_EQ(tern_nghttp2_session_mem_recv(to, data, (size_t)n), n);
        moved = 1;
    }
    return moved;
}

/// One GET with a header value never sent before, and its whole response.
static void exchange(struct peer *client, struct peer *server, unsigned i) {
    char id[32];
    int idlen = snprintf(id, sizeof id, "req-%08u", i);
    nghttp2_nv nva[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)"upstream", 10, 8, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)"/small", 5, 6, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"x-request-id", (uint8_t *)id, 12, (size_t)idlen, NGHTTP2_NV_FLAG_NONE},
    };
    CHECK(tern_nghttp2_submit_request(client->session, NULL, nva, 5, NULL, NULL) > 0);
    while (pump(client->session, server->session) | pump(server->session, client->session)) {
    }
}

static nghttp2_session *session(int server, struct peer *user) {
    nghttp2_session_callbacks *cbs;
    CHECK_EQ(tern_nghttp2_session_callbacks_new(&cbs), 0);
    tern_nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, server ? server_frame : client_frame);
    tern_nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, client_data);
    tern_nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_closed);
    nghttp2_session *s = NULL;
    int rc = server ? tern_nghttp2_session_server_new3(&s, cbs, user, NULL, tern_nghttp2_mem())
                    : tern_nghttp2_session_client_new3(&s, cbs, user, NULL, tern_nghttp2_mem());
    CHECK_EQ(rc, 0);
    tern_nghttp2_mem_hold();
    tern_nghttp2_session_callbacks_del(cbs);
    // (As Tern's sessions announce: a stream limit bounds the closed streams nghttp2 keeps for priorities.)
    nghttp2_settings_entry limit = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    CHECK_EQ(tern_nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, &limit, 1), 0);
    return s;
}

static void test_sessions_take_nothing_from_malloc_once_warm(void) {
    char error[256];
    CHECK_EQ(tern_nghttp2_load(error, sizeof error), 1);
    struct peer client = {0}, server = {0};
    client.session = session(0, &client);
    server.session = session(1, &server);
    unsigned i = 0;
    for (; i < 500; i++) exchange(&client, &server, i);
    tern_nghttp2_mem_stats warm = tern_nghttp2_mem_thread_stats();
    for (; i < 5500; i++) exchange(&client, &server, i);
    tern_nghttp2_mem_stats after = tern_nghttp2_mem_thread_stats();
    CHECK_EQ(client.responses, 5500);
    CHECK_EQ(client.body, 5500 * 100);
    CHECK_EQ(client.closed, 5500);
    CHECK_EQ(server.closed, 5500);
    // Each stream's blocks (its state, queued frames, header arrays, HPACK entries) came from the lists.
    CHECK_EQ(after.fresh - warm.fresh, 0);
    CHECK(after.reused - warm.reused >= 5000 * 5);
    printf("5,000 streams: %llu blocks reused, %llu from malloc (%zu bytes cached)\n",
           (unsigned long long)(after.reused - warm.reused), (unsigned long long)(after.fresh - warm.fresh),
           after.cached_bytes);
    tern_nghttp2_session_del(client.session);
    tern_nghttp2_mem_release();
    tern_nghttp2_session_del(server.session);
    tern_nghttp2_mem_release();
    CHECK_EQ(tern_nghttp2_mem_thread_stats().cached_bytes, 0);
}

int main(void) {
    mem = tern_nghttp2_mem();
    test_blocks_are_reused_within_their_class();
    test_calloc_zeroes_a_reused_block();
    test_realloc_keeps_contents();
    test_each_class_keeps_at_most_its_budget();
    test_blocks_freed_on_another_thread_are_cached_there();
    test_sessions_take_nothing_from_malloc_once_warm();
    return check_finish("cshim.nghttp2_mem");
}
