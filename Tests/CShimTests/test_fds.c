// Descriptor shims on real kernel objects: pipes, splice between TCP loopback sockets and a pipe, accept4,
// eventfd and the SO_LINGER reset.
#include "check.h"
#include <time.h>

static int nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }
static int cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

static int wait_for(int fd, short events) {
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, 2000) == 1 ? p.revents : 0;
}

/// A non-blocking listener on 127.0.0.1 with a kernel-chosen port.
static int listener(struct sockaddr_in *address) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    *address = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof(*address);
    CHECK_EQ(bind(fd, (struct sockaddr *)address, length), 0);
    CHECK_EQ(listen(fd, 8), 0);
    CHECK_EQ(getsockname(fd, (struct sockaddr *)address, &length), 0);
    return fd;
}

/// A connected loopback pair: *client from connect, the return value from CTernLinux_accept_nonblocking.
static int tcp_pair(int *client) {
    struct sockaddr_in address;
    int server = listener(&address);
    *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_EQ(connect(*client, (struct sockaddr *)&address, sizeof(address)), 0);
    CHECK(wait_for(server, POLLIN) & POLLIN);
    int accepted = CTernLinux_accept_nonblocking(server);
    CHECK(accepted >= 0);
    close(server);
    return accepted;
}

static void test_pipe(void) {
    int fds[2] = {-1, -1};
    CHECK_EQ(CTernLinux_pipe_nonblocking(fds), 0);
    for (int i = 0; i < 2; i++) {
        CHECK(nonblocking(fds[i]));
        CHECK(cloexec(fds[i]));
    }
    int capacity = CTernLinux_pipe_capacity(fds[1]);
    CHECK(capacity > 0);
    CHECK_EQ(CTernLinux_pipe_capacity(fds[0]), capacity);
    CHECK_EQ(capacity, fcntl(fds[1], F_GETPIPE_SZ));

    // Page-sized writes fill exactly the capacity, then the pipe refuses without blocking.
    static char page[4096];
    long total = 0;
    for (;;) {
        ssize_t n = write(fds[1], page, sizeof(page));
        if (n < 0) {
            CHECK_EQ(errno, EAGAIN);
            break;
        }
        total += n;
        if (total > 64L * capacity) break;
    }
    CHECK_EQ(total, capacity);
    close(fds[0]);
    close(fds[1]);

    int efd = eventfd(0, EFD_CLOEXEC);
    CHECK_EQ(CTernLinux_pipe_capacity(efd), -EBADF);  // not a pipe
    close(efd);
    CHECK_EQ(CTernLinux_pipe_capacity(-1), -EBADF);
}

static void test_accept(void) {
    struct sockaddr_in address;
    int server = listener(&address);
    CHECK_EQ(CTernLinux_accept_nonblocking(server), -EAGAIN);

    int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_EQ(connect(client, (struct sockaddr *)&address, sizeof(address)), 0);
    CHECK(wait_for(server, POLLIN) & POLLIN);
    int accepted = CTernLinux_accept_nonblocking(server);
    CHECK(accepted >= 0);
    CHECK(nonblocking(accepted));
    CHECK(cloexec(accepted));
    struct sockaddr_in peer, local;
    socklen_t peer_length = sizeof(peer), local_length = sizeof(local);
    CHECK_EQ(getpeername(accepted, (struct sockaddr *)&peer, &peer_length), 0);
    CHECK_EQ(getsockname(client, (struct sockaddr *)&local, &local_length), 0);
    CHECK_EQ(peer.sin_port, local.sin_port);
    CHECK_EQ(CTernLinux_accept_nonblocking(server), -EAGAIN);  // one connection, one accept
    close(accepted);
    close(client);
    close(server);

    int unlistened = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK_EQ(CTernLinux_accept_nonblocking(unlistened), -EINVAL);
    close(unlistened);
    int efd = eventfd(0, EFD_CLOEXEC);
    CHECK_EQ(CTernLinux_accept_nonblocking(efd), -ENOTSOCK);
    close(efd);
    CHECK_EQ(CTernLinux_accept_nonblocking(-1), -EBADF);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/// Relays a stream from `client` through `server` (socket → pipe → socket, as the TCP relay does) to `peer`.
static void test_splice(void) {
    int client, peer;
    int server = tcp_pair(&client);
    int upstream = tcp_pair(&peer);
    int pipe_fds[2];
    CHECK_EQ(CTernLinux_pipe_nonblocking(pipe_fds), 0);

    CHECK_EQ(CTernLinux_splice_nonblocking(server, pipe_fds[1], 65536), -EAGAIN);    // no bytes on the socket
    CHECK_EQ(CTernLinux_splice_nonblocking(pipe_fds[0], upstream, 65536), -EAGAIN);  // no bytes in the pipe
    CHECK_EQ(CTernLinux_splice_nonblocking(server, upstream, 65536), -EINVAL);       // neither end a pipe
    CHECK_EQ(CTernLinux_splice_nonblocking(-1, pipe_fds[1], 1), -EBADF);

    CHECK_EQ(write(client, "hello tern", 10), 10);
    CHECK(wait_for(server, POLLIN) & POLLIN);
    CHECK_EQ(CTernLinux_splice_nonblocking(server, pipe_fds[1], 65536), 10);
    CHECK_EQ(CTernLinux_splice_nonblocking(pipe_fds[0], upstream, 65536), 10);
    char small[16] = {0};
    CHECK(wait_for(peer, POLLIN) & POLLIN);
    CHECK_EQ(read(peer, small, sizeof(small)), 10);
    CHECK(memcmp(small, "hello tern", 10) == 0);

    // 1 MiB, more than the socket buffers and the pipe hold at once, so moves are partial; checked byte for byte.
    enum { total = 1 << 20 };
    static unsigned char sent[total], received[total];
    for (int i = 0; i < total; i++) sent[i] = (unsigned char)(i * 31 + (i >> 12));
    fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK);
    fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK);
    long written = 0, read_back = 0, in_pipe = 0;
    double deadline = now() + 5;
    while (read_back < total && now() < deadline) {
        long progress = 0;
        if (written < total) {
            ssize_t n = write(client, sent + written, (size_t)(total - written));
            if (n > 0) {
                written += n;
                progress += n;
            }
        }
        long n = CTernLinux_splice_nonblocking(server, pipe_fds[1], 65536);
        CHECK(n > 0 || n == -EAGAIN);
        if (n > 0) {
            in_pipe += n;
            progress += n;
        }
        n = CTernLinux_splice_nonblocking(pipe_fds[0], upstream, 65536);
        CHECK(n > 0 || n == -EAGAIN);
        if (n > 0) {
            in_pipe -= n;
            progress += n;
        }
        ssize_t r = read(peer, received + read_back, (size_t)(total - read_back));
        if (r > 0) {
            read_back += r;
            progress += r;
        }
        if (progress == 0) {  // everything would block: wait until loopback delivers
            struct pollfd p[] = {{.fd = server, .events = POLLIN}, {.fd = peer, .events = POLLIN},
                                 {.fd = written < total ? client : -1, .events = POLLOUT}};
            poll(p, 3, 100);
        }
    }
    CHECK_EQ(read_back, total);
    CHECK_EQ(in_pipe, 0);
    CHECK(memcmp(sent, received, total) == 0);

    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(server);
    close(client);
    close(upstream);
    close(peer);
}

static void test_eventfd(void) {
    int fd = CTernLinux_eventfd(1);
    CHECK(fd >= 0);
    CHECK(nonblocking(fd));
    CHECK(cloexec(fd));
    uint64_t value = 0;
    CHECK_EQ(read(fd, &value, sizeof(value)), -1);
    CHECK_EQ(errno, EAGAIN);
    value = 3;
    CHECK_EQ(write(fd, &value, sizeof(value)), (long)sizeof(value));
    value = 4;
    CHECK_EQ(write(fd, &value, sizeof(value)), (long)sizeof(value));
    value = 0;
    CHECK_EQ(read(fd, &value, sizeof(value)), (long)sizeof(value));
    CHECK_EQ(value, 7);  // a counter, not a queue
    close(fd);

    fd = CTernLinux_eventfd(0);
    CHECK(fd >= 0);
    CHECK(!nonblocking(fd));
    CHECK(cloexec(fd));
    value = 1;
    CHECK_EQ(write(fd, &value, sizeof(value)), (long)sizeof(value));
    value = 0;
    CHECK_EQ(read(fd, &value, sizeof(value)), (long)sizeof(value));  // non-zero: does not block
    CHECK_EQ(value, 1);
    close(fd);
}

static void test_linger_reset(void) {
    // Control: a plain close is a FIN, which the peer reads as end of stream.
    int client;
    int server = tcp_pair(&client);
    close(server);
    char byte;
    CHECK(wait_for(client, POLLIN) & POLLIN);
    CHECK_EQ(read(client, &byte, 1), 0);
    close(client);

    server = tcp_pair(&client);
    CHECK_EQ(CTernLinux_set_linger_reset(server), 0);
    struct linger lg = {.l_onoff = -1, .l_linger = -1};
    socklen_t length = sizeof(lg);
    CHECK_EQ(getsockopt(server, SOL_SOCKET, SO_LINGER, &lg, &length), 0);
    CHECK_EQ(lg.l_onoff, 1);
    CHECK_EQ(lg.l_linger, 0);
    close(server);
    CHECK(wait_for(client, POLLIN) != 0);
    CHECK_EQ(read(client, &byte, 1), -1);
    CHECK_EQ(errno, ECONNRESET);
    close(client);

    int efd = eventfd(0, EFD_CLOEXEC);
    CHECK_EQ(CTernLinux_set_linger_reset(efd), -ENOTSOCK);
    close(efd);
}

int main(void) {
    test_pipe();
    test_accept();
    test_splice();
    test_eventfd();
    test_linger_reset();
    return check_finish("cshim.fds");
}
