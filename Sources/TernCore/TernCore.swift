// TernCore: primitives shared by every layer (slab, durations, diagnostics). It makes no system call and
// knows nothing of sockets or TLS; of HTTP it holds only the protocol-neutral head field (`HeadField`), which
// the codecs and routing share (ARCHITECTURE.md §2).
