import Foundation
import TernConfig
import Testing
@testable import TernIO

/// FileWatcher on a real directory with real inotify, asking what ConfigFiles reads: which changes count as
/// configuration changes.
@Suite struct FileWatcherTests {
    let dir: String

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tern-watch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String = "x") throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/" + name))
    }

    @Test func aWatchedFileCountsOnlyItselfAndConfigMapSwaps() throws {
        try write("mesh.yaml", "a: 1\n")
        let watcher = try #require(FileWatcher(path: dir + "/mesh.yaml", directoryEntries: ConfigFiles.isConfigurationEntry))
        #expect(!watcher.changed())
        // Tern's own log next to its configuration, an editor's swap file, another YAML file: not this file.
        try write("tern.log", "config applied version=2\n")
        try write(".mesh.yaml.swp")
        try write("other.yaml")
        #expect(!watcher.changed())
        // Written in place, and written elsewhere then renamed over it.
        try write("mesh.yaml", "a: 2\n")
        #expect(watcher.changed())
        try write("mesh.yaml.tmp", "a: 3\n")
        #expect(rename(dir + "/mesh.yaml.tmp", dir + "/mesh.yaml") == 0)
        #expect(watcher.changed())
        #expect(!watcher.changed())
        // A ConfigMap volume swaps its ..data symlink.
        #expect(symlink(".", dir + "/..data_tmp") == 0)
        #expect(rename(dir + "/..data_tmp", dir + "/..data") == 0)
        #expect(watcher.changed())
    }

    @Test func aWatchedDirectoryCountsTheFilesConfigFilesReads() throws {
        let watcher = try #require(FileWatcher(path: dir, directoryEntries: ConfigFiles.isConfigurationEntry))
        try write("notes.txt")
        try write(".hidden.yaml")
        try write("tern.log")
        #expect(!watcher.changed())
        try write("b.yml")
        #expect(watcher.changed())
        try write("a.yaml")
        #expect(watcher.changed())
        #expect(FileManager.default.createFile(atPath: dir + "/..2026_11_29", contents: nil))
        #expect(watcher.changed())
    }

    @Test func namesAreJudgedAsConfigFilesReadsThem() throws {
        try write("mesh.yaml")
        let file = try #require(FileWatcher(path: dir + "/mesh.yaml", directoryEntries: ConfigFiles.isConfigurationEntry))
        #expect(file.counts(name: "mesh.yaml") && file.counts(name: "..data") && file.counts(name: ""))
        #expect(!file.counts(name: "mesh.yaml~") && !file.counts(name: "mesh.yml") && !file.counts(name: "tern.log"))
        let directory = try #require(FileWatcher(path: dir, directoryEntries: ConfigFiles.isConfigurationEntry))
        #expect(directory.counts(name: "a.yaml") && directory.counts(name: "b.yml") && directory.counts(name: "..data"))
        #expect(!directory.counts(name: ".a.yaml") && !directory.counts(name: "a.yaml.swp") && !directory.counts(name: "log"))
    }
}
