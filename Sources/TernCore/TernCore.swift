// TernCore: primitives shared by every layer (slab, durations, diagnostics). It makes no system call and
// knows nothing of sockets, TLS or HTTP (ARCHITECTURE.md §2).
