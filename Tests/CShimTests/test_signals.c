// Signal shims: blocking a set and reading it from a signalfd, with signals the test sends itself.
#include "check.h"

static int blocked(int signal) {
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    return sigismember(&mask, signal) == 1;
}

static void test_block_signals(void) {
    const int bad[] = {SIGUSR2, 0};
    CHECK_EQ(CTernLinux_block_signals(bad, 2), -EINVAL);
    CHECK(!blocked(SIGUSR2));  // nothing blocked when the list is invalid
    CHECK_EQ(CTernLinux_block_signals(NULL, 0), 0);

    const int signals[] = {SIGUSR2};
    CHECK_EQ(CTernLinux_block_signals(signals, 1), 0);
    CHECK(blocked(SIGUSR2));
    CHECK(!blocked(SIGUSR1));
    CHECK_EQ(raise(SIGUSR2), 0);  // would terminate the process if it were not blocked
    sigset_t pending;
    CHECK_EQ(sigpending(&pending), 0);
    CHECK_EQ(sigismember(&pending, SIGUSR2), 1);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, SIGUSR2);
    struct timespec zero = {0, 0};
    CHECK_EQ(sigtimedwait(&only, NULL, &zero), SIGUSR2);
}

static void test_signalfd(void) {
    const int bad[] = {SIGUSR1, 1000};
    CHECK_EQ(CTernLinux_signalfd_for(bad, 2), -EINVAL);
    CHECK(!blocked(SIGUSR1));

    const int signals[] = {SIGUSR1, SIGHUP};
    int fd = CTernLinux_signalfd_for(signals, 2);
    CHECK(fd >= 0);
    CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(blocked(SIGUSR1));
    CHECK(blocked(SIGHUP));

    struct signalfd_siginfo info;
    CHECK_EQ(read(fd, &info, sizeof(info)), -1);
    CHECK_EQ(errno, EAGAIN);

    CHECK_EQ(raise(SIGUSR1), 0);
    memset(&info, 0, sizeof(info));
    CHECK_EQ(read(fd, &info, sizeof(info)), (long)sizeof(info));
    CHECK_EQ(info.ssi_signo, SIGUSR1);
    CHECK_EQ(info.ssi_pid, getpid());

    CHECK_EQ(kill(getpid(), SIGHUP), 0);  // process-directed, as a supervisor would send it
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 2000), 1);
    memset(&info, 0, sizeof(info));
    CHECK_EQ(read(fd, &info, sizeof(info)), (long)sizeof(info));
    CHECK_EQ(info.ssi_signo, SIGHUP);

    CHECK_EQ(read(fd, &info, sizeof(info)), -1);  // each signal read once
    CHECK_EQ(errno, EAGAIN);
    close(fd);
}

int main(void) {
    test_block_signals();
    test_signalfd();
    return check_finish("cshim.signals");
}
