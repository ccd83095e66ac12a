import Synchronization

/// "Cannot happen, but survivable" (anchors.md §4 rule 10): logs through the installed reporter, counts in
/// `Bugs.count`, and traps in debug builds (unless `Bugs.trapsInDebug` was turned off). Never use it for anything
/// input, peers or the kernel can cause.
public func bug(_ message: String, file: StaticString = #fileID, line: UInt = #line) {
    Bugs.count.add(1, ordering: .relaxed)
    let report = Bugs.reporter.withLock { $0 }
    report?("internal bug at \(file):\(line): \(message)")
    if Bugs.trapsInDebug.load(ordering: .relaxed) { assertionFailure(message, file: file, line: line) }
}

/// Process-wide bug counter and the reporter the logger installs at start.
public enum Bugs {
    /// Number of `bug()` calls so far (exported as tern_internal_bug_total).
    public static let count = Atomic<Int>(0)
    /// Set once by the logger at start; read only when a bug is reported.
    public static let reporter = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// Whether `bug()` traps in a debug build once it has counted and reported (release builds never trap).
    /// Always true in the proxy; a test turns it off for the time it calls `bug()` itself, so it can count
    /// what `bug()` does from many threads.
    public static let trapsInDebug = Atomic<Bool>(true)
}
