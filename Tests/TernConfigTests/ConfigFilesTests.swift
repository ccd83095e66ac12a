import Foundation
import Testing
@testable import TernConfig

/// `ConfigFiles.readFile` keeps a file's bytes only once the file has settled: unchanged while read and last
/// modified `settleNanos` ago. The pause and, where a test needs a file to look freshly written however slow the
/// machine, the clock are injected, so these tests never sleep and state exact sequences.
@Suite struct ConfigFilesTests {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tern-config-files-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    /// A clock that always reads 1 ms after `url` was last modified: the file looks as if its writer were
    /// still at it, whatever time passed on a busy machine between writing and reading it.
    func justWritten(_ url: URL) -> () -> UInt64 {
        {
            var st = stat()
            guard stat(url.path, &st) == 0 else { return 0 }
            return UInt64(st.st_mtim.tv_sec) * 1_000_000_000 + UInt64(st.st_mtim.tv_nsec) + 1_000_000
        }
    }

    func file(_ text: String, modified: Date = Date()) throws -> URL {
        let url = dir.appendingPathComponent("config.yaml")
        try Data(text.utf8).write(to: url)
        try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: url.path)
        return url
    }

    func append(_ text: String, to url: URL, modified: Date = Date()) throws {
        let h = try FileHandle(forWritingTo: url)
        try h.seekToEnd()
        try h.write(contentsOf: Data(text.utf8))
        try h.close()
        try FileManager.default.setAttributes([.modificationDate: modified], ofItemAtPath: url.path)
    }

    @Test func aSettledFileIsReadAtOnce() throws {
        let url = try file("kind: VirtualService\n", modified: Date(timeIntervalSinceNow: -5))
        var pauses: [UInt64] = []
        let text = try ConfigFiles.readFile(url.path) { pauses.append($0) }
        #expect(text == "kind: VirtualService\n")
        #expect(pauses == [])
    }

    @Test func aFileCaughtPartWrittenIsReadAgainOnceItsWriterIsDone() throws {
        // The first half alone is valid YAML (and would load as a configuration without the second route).
        let first = "- a: 1\n", rest = "- b: 2\n"
        let url = try file(first)
        var pauses: [UInt64] = []
        let writing = justWritten(url)
        let text = try ConfigFiles.readFile(url.path, pause: { nanos in
            pauses.append(nanos)
            // The writer finishes during the pause; by the end of it the file is older than the settle time.
            if pauses.count == 1 { try? append(rest, to: url, modified: Date(timeIntervalSinceNow: -1)) }
        }, now: { pauses.isEmpty ? writing() : ConfigFiles.realtimeNanos() })
        #expect(text == first + rest)
        #expect(pauses.count == 1)
        #expect(pauses[0] > 0 && pauses[0] <= ConfigFiles.settleNanos)
    }

    @Test func aFileThatKeepsChangingIsRefusedAfterTheLimit() throws {
        let url = try file("- a: 1\n")
        var waited: UInt64 = 0
        #expect(throws: ConfigFiles.ReadError.self) {
            _ = try ConfigFiles.readFile(url.path, pause: { nanos in
                waited += nanos
                try? append("- more: 1\n", to: url)
            }, now: justWritten(url))
        }
        do {
            _ = try ConfigFiles.readFile(url.path, pause: { _ in try? append("- more: 1\n", to: url) }, now: justWritten(url))
            Issue.record("a file that kept changing was read")
        } catch {
            #expect(error.path == url.path)
            #expect(error.message.contains("kept changing"))
        }
        #expect(waited >= ConfigFiles.settleLimitNanos && waited < ConfigFiles.settleLimitNanos + ConfigFiles.settleNanos)
    }

    @Test func aModificationTimeAheadOfTheClockDoesNotHoldTheReadUp() throws {
        let url = try file("- a: 1\n", modified: Date(timeIntervalSinceNow: 3600))
        var pauses = 0
        let text = try ConfigFiles.readFile(url.path) { _ in pauses += 1 }
        #expect(text == "- a: 1\n")
        #expect(pauses == 0)
    }

    @Test func aMissingFileIsAnErrorNamingIt() {
        let path = dir.appendingPathComponent("absent.yaml").path
        #expect(throws: ConfigFiles.ReadError(path: path, message: "No such file or directory")) {
            _ = try ConfigFiles.readFile(path) { _ in }
        }
    }
}
