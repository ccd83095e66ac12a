// See include/CTernLinux.h: thin wrappers only, each for a macro or something Swift cannot import.
#include "CTernLinux.h"
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

int CTernLinux_affinity_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -errno;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[n++] = cpu;
    }
    return n;
}

int CTernLinux_pin_to_cpu(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

int CTernLinux_set_thread_idle(int idle) {
    struct sched_param param = { .sched_priority = 0 };
    return sched_setscheduler(0, idle ? SCHED_IDLE : SCHED_OTHER, &param) == 0 ? 0 : -errno;
}

_Static_assert(SPLICE_F_NONBLOCK == 0x02 && SPLICE_F_MOVE == 0x01, "splice flags");
_Static_assert(POLLRDHUP == 0x2000, "POLLRDHUP");

int CTernLinux_pipe_nonblocking(int fds[2]) {
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0 ? 0 : -errno;
}

int CTernLinux_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

int CTernLinux_pipe_set_capacity(int fd, int bytes) {
    int r = fcntl(fd, F_SETPIPE_SZ, bytes);
    return r >= 0 ? r : -errno;
}

int CTernLinux_pipe_capacity(int fd) {
    int r = fcntl(fd, F_GETPIPE_SZ);
    return r >= 0 ? r : -errno;
}

int CTernLinux_accept_nonblocking(int listener) {
    int fd;
    do {
        fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    return fd >= 0 ? fd : -errno;
}

long CTernLinux_splice_nonblocking(int in, int out, size_t len) {
    ssize_t n;
    do {
        n = splice(in, NULL, out, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    } while (n < 0 && errno == EINTR);
    return n >= 0 ? (long)n : -errno;
}

int CTernLinux_eventfd(int nonblocking) {
    int fd = eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
    return fd >= 0 ? fd : -errno;
}

int CTernLinux_set_thread_name(const char *name) {
    char shortName[16];
    strncpy(shortName, name, sizeof(shortName) - 1);
    shortName[sizeof(shortName) - 1] = '\0';
    int rc = pthread_setname_np(pthread_self(), shortName);
    return -rc;
}

int CTernLinux_ring_supports(struct io_uring *ring, int op) {
    // io_uring_opcode_supported indexes ops[op] after checking only the upper bound.
    if (op < 0) return -EINVAL;
    // The probe lives on the stack (2 KiB) rather than io_uring_get_probe_ring's malloc, which also turns every
    // failure into NULL: this way the kernel's errno reaches the caller. The kernel wants it zeroed.
    enum { probe_ops = 256 };  // the table size liburing's own probe uses
    _Alignas(struct io_uring_probe) unsigned char storage[sizeof(struct io_uring_probe) +
                                                          probe_ops * sizeof(struct io_uring_probe_op)];
    memset(storage, 0, sizeof(storage));
    struct io_uring_probe *probe = (struct io_uring_probe *)storage;
    int rc = io_uring_register_probe(ring, probe, probe_ops);
    if (rc < 0) return rc;
    return io_uring_opcode_supported(probe, op) ? 1 : 0;
}

int CTernLinux_set_linger_reset(int fd) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0 ? 0 : -errno;
}

int CTernLinux_original_destination(int fd, int ipv6, struct sockaddr_storage *out) {
    socklen_t len = ipv6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int r = ipv6 ? getsockopt(fd, IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, out, &len)
                 : getsockopt(fd, IPPROTO_IP, SO_ORIGINAL_DST, out, &len);
    return r == 0 ? 0 : -errno;
}

static int fill_sigset(sigset_t *set, const int *signals, int count) {
    if (sigemptyset(set) != 0) return -errno;
    for (int i = 0; i < count; i++) {
        if (sigaddset(set, signals[i]) != 0) return -errno;
    }
    return 0;
}

int CTernLinux_block_signals(const int *signals, int count) {
    sigset_t set;
    int rc = fill_sigset(&set, signals, count);
    if (rc != 0) return rc;
    rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    return rc == 0 ? 0 : -rc;
}

int CTernLinux_signalfd_for(const int *signals, int count) {
    sigset_t set;
    int rc = fill_sigset(&set, signals, count);
    if (rc != 0) return rc;
    rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0) return -rc;
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd >= 0 ? fd : -errno;
}

// One positive decimal field of cpu.max. Digits only: strtoll alone would also take a sign or leading whitespace.
static const char *parse_cpu_max_field(const char *p, long long *value) {
    if (!isdigit((unsigned char)*p)) return NULL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno != 0 || v <= 0) return NULL;
    *value = v;
    return end;
}

int CTernLinux_parse_cpu_max(const char *text) {
    if (text == NULL) return -EINVAL;
    while (*text == ' ') text++;
    long long quota = 0;  // stays 0 for "max": no quota
    const char *p = text;
    if (strncmp(p, "max", 3) == 0) {
        p += 3;
    } else if ((p = parse_cpu_max_field(p, &quota)) == NULL) {
        return -EINVAL;
    }
    long long period = 0;
    if (*p != ' ' || (p = parse_cpu_max_field(p + 1, &period)) == NULL) return -EINVAL;
    while (*p == ' ' || *p == '\n') p++;
    if (*p != '\0') return -EINVAL;
    if (quota == 0) return 0;
    // Rounded up without forming quota + period - 1, which overflows for a quota near LLONG_MAX.
    long long cpus = quota / period + (quota % period != 0);
    return cpus > 65536 ? 65536 : (int)cpus;
}
