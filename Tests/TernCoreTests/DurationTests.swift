import Testing
import TernCore

@Suite struct DurationTests {
    @Test(arguments: [
        ("5s", 5_000_000_000), ("250ms", 250_000_000), ("1h30m", 5_400_000_000_000), ("1.5s", 1_500_000_000),
        ("100ms", 100_000_000), ("30s", 30_000_000_000), ("1h", 3_600_000_000_000), ("0s", 0), ("10us", 10_000),
        ("7ns", 7), ("2m3s", 123_000_000_000), ("0.25s", 250_000_000), ("1µs", 1_000),
    ] as [(String, UInt64)])
    func parsesWhatUsersWrite(text: String, nanos: UInt64) {
        #expect(TernDuration(parsing: text)?.nanoseconds == nanos)
    }

    @Test(arguments: ["", "5", "s", "5x", "-5s", "1.s5", "5 s", ".s", "99999999999999999999h", "1h30", "ms"])
    func rejectsWhatIsNotADuration(text: String) {
        #expect(TernDuration(parsing: text) == nil)
    }

    @Test func describesInShortestExactForm() {
        #expect(TernDuration(parsing: "1h30m")!.description == "1h30m")
        #expect(TernDuration(parsing: "250ms")!.description == "250ms")
        #expect(TernDuration.zero.description == "0s")
    }
}
