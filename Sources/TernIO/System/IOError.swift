/// A failed system call: which call and the errno it returned. Thrown with typed `throws(IOError)` so the
/// request path never boxes an error (anchors.md §4 rule 9).
public struct IOError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The system call or operation that failed, e.g. "bind", "io_uring_queue_init".
    public var call: String
    /// The positive errno value.
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(Errno.name(errno)) (\(Errno.message(errno)))" }
}
