// no-io-uring CMD ARGS...: runs CMD with io_uring_setup, io_uring_enter and io_uring_register failing with EPERM,
// as under the default seccomp profiles of Docker, containerd and Podman, so the epoll fallback and the "io_uring
// unavailable" paths can be tested on a host where io_uring works. Every other system call is allowed; the filter
// is raw BPF (no libseccomp) and, like any seccomp filter, is inherited by CMD's children.
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define COMPAT_ARCH AUDIT_ARCH_I386
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define COMPAT_ARCH AUDIT_ARCH_ARM
#else
#error "no-io-uring: add this architecture's AUDIT_ARCH and io_uring syscall numbers"
#endif

// io_uring came after the syscall tables were unified (Linux 5.1): 425-427 on x86_64, i386, x32, arm64 and arm
// alike, so one comparison covers the native and the compat ABI.
_Static_assert(__NR_io_uring_setup == 425 && __NR_io_uring_enter == 426 && __NR_io_uring_register == 427,
               "io_uring syscall numbers");
// x32 system calls arrive with the x86_64 arch and bit 30 set in the number.
#define X32_SYSCALL_BIT 0x40000000u

static struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, COMPAT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),  // an ABI we do not know the numbers of
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~X32_SYSCALL_BIT),
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __NR_io_uring_setup, 0, 2),
    BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, __NR_io_uring_register, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: no-io-uring COMMAND [ARGS...]\n"
                        "Runs COMMAND with io_uring_setup/enter/register failing with EPERM (seccomp).\n");
        return 2;
    }
    // Without NO_NEW_PRIVS an unprivileged process may not install a filter (and a setuid CMD could drop it).
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "no-io-uring: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return 125;
    }
    struct sock_fprog program = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) {
        fprintf(stderr, "no-io-uring: seccomp(SECCOMP_SET_MODE_FILTER): %s\n", strerror(errno));
        return 125;
    }
    execvp(argv[1], argv + 1);
    int error = errno;
    fprintf(stderr, "no-io-uring: %s: %s\n", argv[1], strerror(error));
    return error == ENOENT ? 127 : 126;  // as env(1) and timeout(1)
}
