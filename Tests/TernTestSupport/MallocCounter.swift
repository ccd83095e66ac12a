// What the test targets share (ARCHITECTURE.md §2, Tests/): the malloc counter of the allocation tests and the
// switches under which CI turns a missing capability from a skip into a failure (here), the configuration and
// request fixtures of the TernConfig and TernProxy tests (ConfigFixtures.swift, HTTP1Requests.swift) and a
// seeded generator for statistical tests (SplitMix64.swift).
import Glibc

/// The calling thread's malloc-family call count from Tools/malloc-count/count_malloc.c, preloaded with
/// LD_PRELOAD by Tools/scripts/test.sh for its `--filter AllocationTests` run.
///
/// An allocation test calls `MallocCounter.load()` first. Without the counter (a plain `swift test`) it gets nil
/// and only checks its results. In the run that is meant to count, test.sh also sets
/// TERN_REQUIRE_MALLOC_COUNTER=1, and there a missing counter is an error: an allocation test cannot pass
/// without having counted. A counter that is loaded but does not see a malloc made on this thread is an error
/// in any run.
public struct MallocCounter: Sendable {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    private let read: @convention(c) () -> UInt

    /// The counter, checked live on the calling thread; nil when it is not preloaded and the run does not
    /// require it. Call it before the counted loop (and on the thread that runs it).
    public static func load() throws(Unavailable) -> MallocCounter? {
        guard let read = threadMallocCount else {
            if TestRequirement.isSet("TERN_REQUIRE_MALLOC_COUNTER") {
                throw Unavailable(description: "TERN_REQUIRE_MALLOC_COUNTER=1 but tern_thread_malloc_count is not loaded "
                    + "(run with LD_PRELOAD=count_malloc.so, as Tools/scripts/test.sh does): nothing was counted")
            }
            return nil
        }
        let before = read()
        let allocated = probeAllocation()
        let after = read()
        guard allocated, after &- before >= 1 else {
            throw Unavailable(description: "the malloc counter is loaded but did not count a malloc on this thread "
                + "(\(before) → \(after)): its counts would prove nothing")
        }
        return MallocCounter(read: read)
    }

    /// malloc-family calls made on this thread so far.
    public func count() -> UInt { read() }
}

/// One malloc and free the optimiser may not remove (a release build elides a malloc whose block is only
/// written and freed).
@inline(never) @_optimize(none)
private func probeAllocation() -> Bool {
    let block = malloc(64)
    block?.storeBytes(of: 1, as: UInt8.self)
    free(block)
    return block != nil
}

/// Looked up once (dlsym itself allocates), when the first test asks.
private let threadMallocCount: (@convention(c) () -> UInt)? = {
    guard let symbol = dlsym(nil, "tern_thread_malloc_count") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) () -> UInt).self)
}()

/// Environment switches CI sets (Tools/scripts/test.sh, .ci/run) so that what a test would skip for lack of a
/// capability (the malloc counter, io_uring, network namespaces) fails it instead.
public enum TestRequirement {
    /// True when the variable is set to 1.
    public static func isSet(_ name: String) -> Bool {
        guard let value = getenv(name) else { return false }
        return String(cString: value) == "1"
    }
}
