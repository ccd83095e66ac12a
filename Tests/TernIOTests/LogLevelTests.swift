import Testing
import TernIO

@Suite struct LogLevelTests {
    /// The names are what `--log-level`, the admin endpoint's /logging and every log line use; they were the case
    /// names Swift's reflection printed before they were spelled out, and must stay exactly those.
    @Test func namesAreTheCaseNamesAndParseBack() {
        #expect(LogLevel.allCases.map(\.description) == ["trace", "debug", "info", "warn", "error"])
        for level in LogLevel.allCases {
            #expect(LogLevel(name: level.description) == level)
            #expect("\(level)" == level.description)
        }
        #expect(LogLevel(name: "INFO") == nil)
        #expect(LogLevel(name: "") == nil)
        #expect(LogLevel(name: "warning") == nil)
    }
}
