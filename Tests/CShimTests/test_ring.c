// CTernLinux_ring_supports and the SQE helpers on a real ring. Exit 77 when the kernel or a seccomp profile
// refuses io_uring (run it under `no-io-uring` to see that path).
#include "check.h"

static struct io_uring ring;

static void test_ring_supports(void) {
    CHECK_EQ(CTernLinux_ring_supports(&ring, IORING_OP_NOP), 1);
    CHECK_EQ(CTernLinux_ring_supports(&ring, IORING_OP_SPLICE), 1);
    CHECK_EQ(CTernLinux_ring_supports(&ring, IORING_OP_RECV), 1);
    CHECK_EQ(CTernLinux_ring_supports(&ring, 255), 0);   // past every kernel's last opcode
    CHECK_EQ(CTernLinux_ring_supports(&ring, 4096), 0);  // past the probe's table
    CHECK_EQ(CTernLinux_ring_supports(&ring, -1), -EINVAL);

    // Probing a ring that is not one reports the kernel's errno. (Not fd -1: since Linux 6.13 that means
    // a "blind" io_uring_register, which answers EINVAL.)
    struct io_uring fake;
    memset(&fake, 0, sizeof(fake));
    fake.ring_fd = eventfd(0, EFD_CLOEXEC);
    CHECK_EQ(CTernLinux_ring_supports(&fake, IORING_OP_NOP), -EOPNOTSUPP);
    close(fake.ring_fd);
    CHECK_EQ(CTernLinux_ring_supports(&fake, IORING_OP_NOP), -EBADF);  // now closed
}

/// Submits what is queued and returns the next completion's user_data and res, or -1 when none arrives.
static long long next_completion(int *res, unsigned *flags) {
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec timeout = {.tv_sec = 2};
    io_uring_submit(&ring);
    if (io_uring_wait_cqe_timeout(&ring, &cqe, &timeout) != 0) return -1;
    long long data = (long long)cqe->user_data;
    *res = cqe->res;
    if (flags) *flags = cqe->flags;
    io_uring_cqe_seen(&ring, cqe);
    return data;
}

static void test_cqe_skip_success(void) {
    if (!(ring.features & IORING_FEAT_CQE_SKIP)) {
        printf("no IORING_FEAT_CQE_SKIP: CQE_SKIP_SUCCESS not tested\n");
        return;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_nop(sqe);
    sqe->user_data = 1;
    CTernLinux_sqe_add_flags(sqe, CTernLinux_IOSQE_CQE_SKIP_SUCCESS());
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_nop(sqe);
    sqe->user_data = 2;
    int res = -1;
    CHECK_EQ(next_completion(&res, NULL), 2);  // the first NOP succeeded silently
    CHECK_EQ(res, 0);
    struct io_uring_cqe *cqe;
    CHECK_EQ(io_uring_peek_cqe(&ring, &cqe), -EAGAIN);
}

/// A receive with CTernLinux_sqe_set_buf_group takes its buffer from the group the kernel was given.
static void test_buf_group_receive(void) {
    if (CTernLinux_ring_supports(&ring, IORING_OP_PROVIDE_BUFFERS) != 1) {
        printf("no IORING_OP_PROVIDE_BUFFERS: buffer selection not tested\n");
        return;
    }
    enum { group = 7, count = 2, size = 64 };
    static char buffers[count][size];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_provide_buffers(sqe, buffers, size, count, group, 0);
    sqe->user_data = 10;
    int res = -1;
    CHECK_EQ(next_completion(&res, NULL), 10);
    CHECK_EQ(res, 0);

    int pair[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    CHECK_EQ(write(pair[1], "ping", 4), 4);
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, pair[0], NULL, size, 0);
    CTernLinux_sqe_set_buf_group(sqe, group);
    sqe->user_data = 11;
    unsigned flags = 0;
    CHECK_EQ(next_completion(&res, &flags), 11);
    CHECK_EQ(res, 4);
    CHECK(flags & IORING_CQE_F_BUFFER);
    unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
    CHECK(id < count);
    if (id < count) CHECK(memcmp(buffers[id], "ping", 4) == 0);

    // A group that was never provided: the kernel reports no buffers.
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, pair[0], NULL, size, 0);
    CTernLinux_sqe_set_buf_group(sqe, group + 1);
    sqe->user_data = 12;
    CHECK_EQ(write(pair[1], "pong", 4), 4);
    CHECK_EQ(next_completion(&res, NULL), 12);
    CHECK_EQ(res, -ENOBUFS);
    close(pair[0]);
    close(pair[1]);
}

int main(void) {
    int rc = io_uring_queue_init(8, &ring, 0);
    if (rc == -EPERM || rc == -ENOSYS) return check_skip_unless_required("cshim.ring", strerror(-rc), "TERN_REQUIRE_IO_URING");
    CHECK_EQ(rc, 0);
    if (rc != 0) return check_finish("cshim.ring");
    test_ring_supports();
    test_cqe_skip_success();
    test_buf_group_receive();
    io_uring_queue_exit(&ring);
    return check_finish("cshim.ring");
}
