// CTernNghttp2: libnghttp2.so.14 loaded on the first call and only then, once however many threads ask at once,
// the tern_ wrappers reaching nghttp2 (a client session's first bytes are the connection preface), and a library
// that is not nghttp2 refused with the function it lacks, the same answer on every call, truncated to the caller's
// buffer. `test_nghttp2 loads` runs against the system's library; `test_nghttp2 refuses` with LD_LIBRARY_PATH
// pointing at a stand-in libnghttp2.so.14 that has none of its functions (fake_nghttp2.c).
#include "check.h"
#include "tern_nghttp2.h"

#include <pthread.h>

/// Whether libnghttp2 is mapped into this process (/proc/self/maps).
static int nghttp2_mapped(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return -1;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, maps)) found |= strstr(line, "libnghttp2.so") != NULL;
    fclose(maps);
    return found;
}

static void *load_in_thread(void *result) {
    char error[128] = {0};
    *(int *)result = tern_nghttp2_load(error, sizeof error);
    return NULL;
}

static void test_loads_once_for_all_threads(void) {
    CHECK_EQ(nghttp2_mapped(), 0);  // not linked: nothing maps it before the first load
    pthread_t threads[4];
    int results[4] = {0};
    for (int i = 0; i < 4; i++) CHECK_EQ(pthread_create(&threads[i], NULL, load_in_thread, &results[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ(results[i], 1);
    }
    CHECK_EQ(nghttp2_mapped(), 1);
    char error[128] = {0};
    CHECK_EQ(tern_nghttp2_load(error, sizeof error), 1);
    CHECK_EQ(error[0], 0);
}

static void test_wrappers_reach_nghttp2(void) {
    nghttp2_session_callbacks *callbacks = NULL;
    CHECK_EQ(tern_nghttp2_session_callbacks_new(&callbacks), 0);
    nghttp2_session *session = NULL;
    CHECK_EQ(tern_nghttp2_session_client_new3(&session, callbacks, NULL, NULL, NULL), 0);
    tern_nghttp2_session_callbacks_del(callbacks);
    CHECK_EQ(tern_nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    const uint8_t *data = NULL;
    // The preface, then an empty SETTINGS frame (its 9-byte header alone).
    CHECK_EQ(tern_nghttp2_session_mem_send(session, &data), NGHTTP2_CLIENT_MAGIC_LEN);
    CHECK(data != NULL && memcmp(data, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN) == 0);
    CHECK_EQ(tern_nghttp2_session_mem_send(session, &data), 9);
    CHECK(data != NULL && data[3] == NGHTTP2_SETTINGS);
    CHECK_EQ(tern_nghttp2_session_mem_send(session, &data), 0);
    CHECK_EQ(tern_nghttp2_session_want_read(session), 1);
    CHECK(strcmp(tern_nghttp2_strerror(NGHTTP2_ERR_INVALID_ARGUMENT), "Invalid argument") == 0);
    tern_nghttp2_session_del(session);
}

static void test_refuses_a_library_without_its_functions(void) {
    char error[256] = {0};
    CHECK_EQ(tern_nghttp2_load(error, sizeof error), 0);
    // The first function of TERN_NGHTTP2_FUNCTIONS is the one found missing.
    CHECK(strcmp(error, "libnghttp2.so.14 lacks nghttp2_session_callbacks_new: not an nghttp2 Tern can use") == 0);
    if (error[0]) printf("refused: %s\n", error);
    char again[256] = {0};
    CHECK_EQ(tern_nghttp2_load(again, sizeof again), 0);
    CHECK(strcmp(again, error) == 0);
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK_EQ(tern_nghttp2_load(small, sizeof small), 0);
    CHECK(memcmp(small, "libnghtt", 7) == 0 && small[7] == 0);
    CHECK_EQ(tern_nghttp2_load(NULL, 0), 0);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "loads") == 0) {
        test_loads_once_for_all_threads();
        test_wrappers_reach_nghttp2();
    } else if (argc == 2 && strcmp(argv[1], "refuses") == 0) {
        test_refuses_a_library_without_its_functions();
    } else {
        fprintf(stderr, "usage: test_nghttp2 loads|refuses\n");
        return 2;
    }
    return check_finish("cshim.nghttp2");
}
