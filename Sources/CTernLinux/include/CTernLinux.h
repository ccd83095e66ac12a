// CTernLinux: the thin C layer under TernIO. Only what Swift cannot import cleanly from liburing, epoll,
// splice, socket options, CPU affinity and signals: macros, flag constants built from shifted enums,
// and struct fields behind unions. No state, no policy, no allocation (ARCHITECTURE.md §2, STYLE.md).
//
// System headers come first and liburing.h last: liburing.h defines _XOPEN_SOURCE/_GNU_SOURCE itself, and
// including it first makes Clang's view of glibc differ from SwiftGlibc (ARCHITECTURE.md §9).
#ifndef CTERN_LINUX_H
#define CTERN_LINUX_H

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/select.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>
#include <malloc.h>  // mallopt: not in SwiftGlibc
// The kernel's io_uring.h before liburing.h, so liburing's own copy (same include guard) is skipped: a Swift
// program that also imports swift-system (whose CSystem module includes the kernel's header) would otherwise
// see two different definitions of struct io_uring_sqe and fail to build.
#include <linux/io_uring.h>
#include <liburing.h>

// MARK: - CPU affinity (CPU_* are macros)

/// Fills `cpus` with the CPU numbers in the calling thread's affinity mask; returns how many, or -errno.
int CTernLinux_affinity_cpus(int *cpus, int capacity);
/// Pins the calling thread to one CPU; returns 0 or -errno.
int CTernLinux_pin_to_cpu(int cpu);
/// Moves the calling thread to SCHED_IDLE (`idle` != 0: it runs only when its CPU has nothing else to run)
/// or to SCHED_OTHER (which a thread without CAP_SYS_NICE may not do once idle); returns 0 or -errno.
int CTernLinux_set_thread_idle(int idle);
/// Names the calling thread (at most 15 bytes are kept), as `ps -L` and /proc/PID/task/TID/comm show it.
int CTernLinux_set_thread_name(const char *name);

// MARK: - io_uring SQE flags and fields (IOSQE_* are shifted enums Swift does not import)

static inline uint8_t CTernLinux_IOSQE_FIXED_FILE(void) { return IOSQE_FIXED_FILE; }
static inline uint8_t CTernLinux_IOSQE_IO_LINK(void) { return IOSQE_IO_LINK; }
static inline uint8_t CTernLinux_IOSQE_BUFFER_SELECT(void) { return IOSQE_BUFFER_SELECT; }
static inline uint8_t CTernLinux_IOSQE_CQE_SKIP_SUCCESS(void) { return IOSQE_CQE_SKIP_SUCCESS; }
static inline unsigned CTernLinux_SPLICE_F_FD_IN_FIXED(void) { return SPLICE_F_FD_IN_FIXED; }

/// Ors `flags` into the SQE's flags byte.
static inline void CTernLinux_sqe_add_flags(struct io_uring_sqe *sqe, uint8_t flags) { sqe->flags |= flags; }
/// Selects a receive buffer from provided-buffer group `group` (the field sits in a union).
static inline void CTernLinux_sqe_set_buf_group(struct io_uring_sqe *sqe, uint16_t group) {
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
}
/// The io_uring_buf_ring header overlays the first buffer entry's tail field; allocation is the caller's.
static inline size_t CTernLinux_buf_ring_entry_size(void) { return sizeof(struct io_uring_buf); }

// MARK: - GNU extensions (declared only under _GNU_SOURCE, which Swift's Glibc module is built without)

static const unsigned CTernLinux_SPLICE_F_NONBLOCK = 0x02;  // SPLICE_F_NONBLOCK
static const unsigned CTernLinux_SPLICE_F_MOVE = 0x01;      // SPLICE_F_MOVE
static const short CTernLinux_POLLRDHUP = 0x2000;           // POLLRDHUP
/// pipe2(fds, O_NONBLOCK | O_CLOEXEC); 0 or -errno.
int CTernLinux_pipe_nonblocking(int fds[2]);
/// pipe2(fds, O_CLOEXEC), blocking, for a child process's stdin, stdout and stderr; 0 or -errno.
int CTernLinux_pipe_cloexec(int fds[2]);
/// fcntl(F_SETPIPE_SZ, bytes); the new capacity or -errno (EPERM beyond the per-user quota).
int CTernLinux_pipe_set_capacity(int fd, int bytes);
/// fcntl(F_GETPIPE_SZ); the capacity or -errno.
int CTernLinux_pipe_capacity(int fd);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; the new fd or -errno.
int CTernLinux_accept_nonblocking(int listener);
/// splice(in, NULL, out, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE); bytes moved or -errno.
long CTernLinux_splice_nonblocking(int in, int out, size_t len);
/// eventfd(0, EFD_CLOEXEC [| EFD_NONBLOCK]); the fd or -errno.
int CTernLinux_eventfd(int nonblocking);

// MARK: - Feature probes

/// 1 when the kernel supports opcode `op` on this ring, 0 when not, -errno when probing failed (-EINVAL for op < 0).
int CTernLinux_ring_supports(struct io_uring *ring, int op);

// MARK: - Sockets

/// SO_LINGER {1, 0}: the next close sends RST instead of FIN (used to propagate a reset).
int CTernLinux_set_linger_reset(int fd);
/// The destination an accepted connection had before netfilter translated it (iptables REDIRECT or DNAT):
/// getsockopt SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST when `ipv6` (the constants live in kernel headers that
/// clash with glibc's if Swift imports them). Writes a sockaddr_in or sockaddr_in6 to `out`; 0 or -errno
/// (-ENOENT: conntrack knows no translation for it).
int CTernLinux_original_destination(int fd, int ipv6, struct sockaddr_storage *out);

// MARK: - Signals

/// Blocks `signals` (count entries) in the calling thread and returns a signalfd for them, or -errno.
int CTernLinux_signalfd_for(const int *signals, int count);
/// Blocks the given signals in the calling thread (threads created afterwards inherit the mask).
int CTernLinux_block_signals(const int *signals, int count);

// MARK: - cgroup CPU quota

/// Parses the content of cgroup v2 `cpu.max` ("max PERIOD" or "QUOTA PERIOD", positive decimals, one space):
/// returns the CPU count the quota allows (rounded up, at least 1, at most 65536), 0 when unlimited, -EINVAL
/// when malformed.
int CTernLinux_parse_cpu_max(const char *text);

#endif
