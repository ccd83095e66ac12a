// TernHTTP: I/O-free HTTP codecs (ARCHITECTURE.md §2, layer 2). Bytes in, heads, body ranges and typed errors out;
// heads are read in place in the caller's receive buffer (ARCHITECTURE.md §4). It never sees a socket, makes no
// system call, and imports nothing above TernCore.
