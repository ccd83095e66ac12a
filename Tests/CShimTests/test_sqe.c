// SQE flag and field helpers and the constants the header re-exports, on SQEs prepared by liburing (no ring
// needed: test_ring.c submits them to a kernel).
#include "check.h"

static void test_constants(void) {
    CHECK_EQ(CTernLinux_IOSQE_FIXED_FILE(), 1u << IOSQE_FIXED_FILE_BIT);
    CHECK_EQ(CTernLinux_IOSQE_IO_LINK(), 1u << IOSQE_IO_LINK_BIT);
    CHECK_EQ(CTernLinux_IOSQE_BUFFER_SELECT(), 1u << IOSQE_BUFFER_SELECT_BIT);
    CHECK_EQ(CTernLinux_IOSQE_CQE_SKIP_SUCCESS(), 1u << IOSQE_CQE_SKIP_SUCCESS_BIT);
    CHECK_EQ(CTernLinux_SPLICE_F_FD_IN_FIXED(), 1u << 31);
    CHECK_EQ(CTernLinux_buf_ring_entry_size(), 16);
    CHECK_EQ(CTernLinux_SPLICE_F_NONBLOCK, SPLICE_F_NONBLOCK);
    CHECK_EQ(CTernLinux_SPLICE_F_MOVE, SPLICE_F_MOVE);
    CHECK_EQ(CTernLinux_POLLRDHUP, POLLRDHUP);
}

static void test_add_flags(void) {
    struct io_uring_sqe sqe;
    memset(&sqe, 0xA5, sizeof(sqe));
    io_uring_prep_splice(&sqe, 3, -1, 4, -1, 65536, CTernLinux_SPLICE_F_NONBLOCK | CTernLinux_SPLICE_F_MOVE);
    CHECK_EQ(sqe.flags, 0);
    CTernLinux_sqe_add_flags(&sqe, CTernLinux_IOSQE_FIXED_FILE());
    CHECK_EQ(sqe.flags, IOSQE_FIXED_FILE);
    CTernLinux_sqe_add_flags(&sqe, CTernLinux_IOSQE_IO_LINK() | CTernLinux_IOSQE_CQE_SKIP_SUCCESS());
    CHECK_EQ(sqe.flags, IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);  // or-ed, not replaced
    CTernLinux_sqe_add_flags(&sqe, 0);
    CHECK_EQ(sqe.flags, IOSQE_FIXED_FILE | IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
    // The rest of the SQE is untouched.
    CHECK_EQ(sqe.opcode, IORING_OP_SPLICE);
    CHECK_EQ(sqe.fd, 4);
    CHECK_EQ(sqe.splice_fd_in, 3);
    CHECK_EQ(sqe.len, 65536);
    CHECK_EQ(sqe.splice_flags, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
}

static void test_set_buf_group(void) {
    struct io_uring_sqe sqe;
    memset(&sqe, 0xA5, sizeof(sqe));
    io_uring_prep_recv(&sqe, 7, NULL, 4096, 0);
    CTernLinux_sqe_add_flags(&sqe, IOSQE_FIXED_FILE);
    CTernLinux_sqe_set_buf_group(&sqe, 42);
    CHECK_EQ(sqe.flags, IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT);
    CHECK_EQ(sqe.buf_group, 42);
    CHECK_EQ(sqe.buf_index, 42);  // the same union member the kernel reads as the group
    CHECK_EQ(sqe.opcode, IORING_OP_RECV);
    CHECK_EQ(sqe.fd, 7);
    CHECK_EQ(sqe.len, 4096);
    CHECK_EQ(sqe.addr, 0);
    CTernLinux_sqe_set_buf_group(&sqe, 0xFFFF);
    CHECK_EQ(sqe.buf_group, 0xFFFF);
    CHECK_EQ(sqe.flags, IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT);
}

int main(void) {
    test_constants();
    test_add_flags();
    test_set_buf_group();
    return check_finish("cshim.sqe");
}
