// TernIO: the reactor. io_uring and epoll backends behind one completion-style API, sockets, listeners,
// timers, buffer and pipe pools, reactor threads, logging. The only Swift target that makes system calls
// (in `*+Unsafe.swift` files); it knows nothing of TLS or HTTP (ARCHITECTURE.md §2–§4).
