import Testing
import TernIO

/// `System.run`, as `tern iptables` uses it to run iptables-restore: input in, output and errors out, the exit
/// status, and a deadline that kills a child that does not finish.
@Suite struct ProcessTests {
    init() { Signals.ignoreBrokenPipe() }

    @Test func inputLargerThanAPipeComesBackWhole() throws {
        // 1 MiB each way: more than the pipes hold, so feeding and draining must interleave.
        let input = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let result = try System.run(try #require(System.findExecutable("cat")), [], input: input)
        #expect(result.status == 0)
        #expect(result.output == input)
        #expect(result.errors.isEmpty)
    }

    @Test func exitStatusAndStderrAreReported() throws {
        let result = try System.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(result.status == 3)
        #expect(result.output == Array("out\n".utf8))
        #expect(result.errors == Array("err\n".utf8))
    }

    @Test func aChildThatIgnoresItsInputStillFinishes() throws {
        let result = try System.run("/bin/sh", ["-c", "exec 0<&-; exit 0"], input: [UInt8](repeating: 65, count: 1 << 20))
        #expect(result.status == 0)
    }

    @Test func aChildPastTheDeadlineIsKilled() throws {
        let start = System.monotonicNanos()
        #expect(throws: IOError.self) { try System.run("/bin/sh", ["-c", "exec sleep 30"], timeoutMillis: 200) }
        #expect(System.monotonicNanos() - start < 10_000_000_000)
    }

    @Test func aMissingExecutableIsAnError() {
        #expect(System.findExecutable("no-such-tern-tool") == nil)
        #expect(throws: IOError.self) { try System.run("/nonexistent/tool", []) }
    }
}
