// uring_probe works|blocked: tries io_uring_queue_init, io_uring_enter and io_uring_register and checks the
// outcome. `works`: the ring is created and the other two reach the kernel (EBADF on a closed fd); exit 77 when this
// environment refuses io_uring (exit 1 instead under TERN_REQUIRE_IO_URING=1). `blocked` (run under no-io-uring): all three fail with EPERM, a seccomp filter is
// installed, and other system calls still work.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <liburing.h>

/// "Seccomp:" from /proc/self/status: 0 none, 2 filter; -1 when unreadable.
static int seccomp_mode(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    int mode = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Seccomp: %d", &mode) == 1) break;
    }
    fclose(f);
    return mode;
}

int main(int argc, char **argv) {
    int blocked = argc == 2 && strcmp(argv[1], "blocked") == 0;
    if (argc != 2 || (!blocked && strcmp(argv[1], "works") != 0)) {
        fprintf(stderr, "usage: uring_probe works|blocked\n");
        return 2;
    }
    struct io_uring ring;
    int setup = io_uring_queue_init(4, &ring, 0);
    if (setup == 0) io_uring_queue_exit(&ring);
    // A descriptor number that is not open (fd -1 means something to io_uring_register since Linux 6.13).
    int closed = eventfd(0, EFD_CLOEXEC);
    close(closed);
    int enter = syscall(__NR_io_uring_enter, closed, 0, 0, 0, NULL, 0) == 0 ? 0 : errno;
    int reg = syscall(__NR_io_uring_register, closed, IORING_REGISTER_PROBE, NULL, 0) == 0 ? 0 : errno;
    int mode = seccomp_mode();
    printf("io_uring_queue_init: %s; io_uring_enter(closed fd): %s; io_uring_register(closed fd): %s; "
           "seccomp mode %d\n",
           setup == 0 ? "ok" : strerror(-setup), strerror(enter), strerror(reg), mode);

    int failed = 0;
    if (blocked) {
        failed |= setup != -EPERM || enter != EPERM || reg != EPERM || mode != 2;
        int efd = eventfd(0, EFD_CLOEXEC);  // everything else is allowed
        failed |= efd < 0;
        if (efd >= 0) close(efd);
    } else {
        if (setup == -EPERM || setup == -ENOSYS) {
            const char *required = getenv("TERN_REQUIRE_IO_URING");
            if (required != NULL && strcmp(required, "1") == 0) {
                printf("FAILED: io_uring is not available here, and TERN_REQUIRE_IO_URING=1 requires it\n");
                return 1;
            }
            printf("skipped: io_uring is not available here\n");
            return 77;
        }
        failed |= setup != 0 || enter != EBADF || reg != EBADF;
    }
    printf("%s\n", failed ? "FAILED" : "passed");
    return failed;
}
