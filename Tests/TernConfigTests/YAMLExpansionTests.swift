import TernConfig
import TernTestSupport
import Testing

/// Alias expansion and nesting limits (issue 15, item 3): a document that would expand past
/// max(10 × what was written, 100,000 nodes or 1 MiB of scalars), or nest deeper than 1,000 levels, is refused with
/// the line of the alias or collection that crossed the limit; modest anchors and aliases decode as their
/// expanded form does.
@Suite struct YAMLExpansionTests {
    /// The billion laughs in `metadata.annotations`: `a0` a list of nine scalars (line 6), each next level a list
    /// of nine aliases to the one before (line 6 + level); ten levels are 9^10 scalars to walk.
    static func aliasBomb(levels: Int = 10) -> String {
        var yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bomb\n  annotations:\n"
        yaml += "    a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        for level in 1..<levels {
            let previous = "*a\(level - 1)"
            yaml += "    a\(level): &a\(level) [" + Array(repeating: previous, count: 9).joined(separator: ", ") + "]\n"
        }
        return yaml + "spec: {}\n"
    }

    /// What reading `text` as `t.yaml` throws, as `FILE:LINE: message`; nil when it reads.
    func readError(_ text: String) -> String? {
        do {
            _ = try YAMLReader.documents(text, file: "t.yaml")
            return nil
        } catch {
            return "\(error.file):\(error.line): \(error.message)"
        }
    }

    @Test func theAliasBombIsRefusedAtTheAliasThatCrossesTheLimit() throws {
        let bomb = Self.aliasBomb()
        #expect(bomb.utf8.count < 1024)
        // Up to a5's first alias (line 11) the document expands to 74,750 nodes; that alias adds a4's 66,430,
        // 141,180 in all, against a limit of max(10 × 69 written, 100,000).
        let expected = "f.yaml:11: YAML: excessive aliasing: this alias expands the configuration to 141180 nodes, "
            + "more than 100000 (10 × the 69 written, at least 100000)"
        #expect(diagnostics(bomb) == [expected])
        #expect(readError(bomb) == "t" + expected.dropFirst())
        // Five levels (a4: 66,430 nodes) stay under the floor, and render as JSON in proportion.
        #expect(diagnostics(Self.aliasBomb(levels: 5)) == [])
        let accepted = try #require(try? YAMLReader.documents(Self.aliasBomb(levels: 5), file: "t.yaml").first)
        #expect(accepted.root.json.utf8.count < 400_000)
    }

    @Test func manyDocumentsAndFilesShareOneLimit() {
        // Each document alone expands to 74,750 nodes; two in a file, or two files of one load, do not pass.
        let one = Self.aliasBomb(levels: 5)
        #expect(diagnostics(one + "---\n" + one).first?.hasPrefix("f.yaml:22: YAML: excessive aliasing:") == true)
        let set = ConfigLoader.load(files: [("a.yaml", one), ("b.yaml", one)], namespace: "default")
        #expect(set.errors.map(\.description).first?.hasPrefix("b.yaml:10: YAML: excessive aliasing:") == true)
        #expect(set.errors.count == 1)
    }

    @Test func nodeLimitBoundaryIsTenTimesWhatWasWritten() throws {
        // A padding list of 17,907 scalars (line 1), an anchored list of 90 (line 2), then n aliases to it, one a
        // line: 18,000 nodes written before the aliases, each alias one more written and 91 more expanded. With
        // 2,000 aliases: 20,000 written and exactly 200,000 expanded, the limit; one more alias passes it.
        func document(aliases: Int) -> String {
            "- [" + Array(repeating: "p", count: 17_907).joined(separator: ",") + "]\n"
                + "- &a [" + Array(repeating: "x", count: 90).joined(separator: ",") + "]\n"
                + String(repeating: "- *a\n", count: aliases)
        }
        var expansion = YAMLExpansion()
        let docs = try YAMLReader.documents(document(aliases: 2_000), file: "t.yaml", expansion: &expansion)
        #expect(docs.count == 1)
        #expect(expansion.writtenNodes == 20_000 && expansion.expandedNodes == 200_000)
        #expect(expansion.nodeLimit == 200_000)
        #expect(readError(document(aliases: 2_001)) == "t.yaml:2003: YAML: excessive aliasing: this alias expands the configuration to 200091 nodes, more than 200010 (10 × the 20001 written, at least 100000)")
    }

    @Test func nodeLimitFloorBoundary() throws {
        // An anchored list of 270 scalars (271 nodes) and 368 aliases to it in a list: 1 + 271 × 369 = 100,000
        // nodes expanded, the floor; one scalar more before the aliases passes it at the last alias.
        let anchor = "- &a [" + Array(repeating: "x", count: 270).joined(separator: ",") + "]\n"
        let aliases = String(repeating: "- *a\n", count: 368)
        var expansion = YAMLExpansion()
        _ = try YAMLReader.documents(anchor + aliases, file: "t.yaml", expansion: &expansion)
        #expect(expansion.expandedNodes == 100_000 && expansion.nodeLimit == 100_000)
        #expect(readError("- y\n" + anchor + aliases) == "t.yaml:370: YAML: excessive aliasing: this alias expands the configuration to 100001 nodes, more than 100000 (10 × the 641 written, at least 100000)")
    }

    @Test func scalarBytesAreBoundedToo() throws {
        // One 64 KiB string aliased: 16 copies in all are 1 MiB, the floor; a 17th passes it, although the
        // document has only 18 nodes.
        let long = "- &s " + String(repeating: "z", count: 65_536) + "\n"
        var expansion = YAMLExpansion()
        _ = try YAMLReader.documents(long + String(repeating: "- *s\n", count: 15), file: "t.yaml", expansion: &expansion)
        #expect(expansion.expandedBytes == 1 << 20 && expansion.byteLimit == 1 << 20)
        #expect(readError(long + String(repeating: "- *s\n", count: 16)) == "t.yaml:17: YAML: excessive aliasing: this alias expands the configuration to 1114112 bytes of scalars, more than 1048576 (10 × the 65536 written, at least 1048576)")
    }

    @Test func nestingIsBoundedAlsoThroughAliases() throws {
        let limit = YAMLReader.maximumDepth
        func nested(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }
        #expect(try YAMLReader.documents(nested(limit), file: "t.yaml").count == 1)
        #expect(readError(nested(limit + 1)) == "t.yaml:1: YAML: lists and maps nested more than 1000 deep")
        // An anchor 600 deep used 400 lists down (the root list is one more): 1,000; one list more passes it.
        func throughAlias(_ depth: Int) -> String {
            "- &a " + nested(600) + "\n- " + String(repeating: "[", count: depth) + "*a" + String(repeating: "]", count: depth) + "\n"
        }
        #expect(try YAMLReader.documents(throughAlias(399), file: "t.yaml").count == 1)
        #expect(readError(throughAlias(400)) == "t.yaml:2: YAML: lists and maps nested more than 1000 deep (through *a)")
        // 40,000 levels once overflowed the stack releasing the tree; now refused at the 1,001st.
        #expect(diagnostics("a: " + nested(40_000) + "\n") == ["f.yaml:1: YAML: lists and maps nested more than 1000 deep"])
    }

    /// The canary with anchors and aliases where users write them: an address, a destination.
    static let aliasedCanary = canaryYAML
        .replacing("- {address: 127.0.0.1, ports: {http: 9001}", with: "- {address: &local 127.0.0.1, ports: {http: 9001}")
        .replacing("- {address: 127.0.0.1, ports: {http: 9002}", with: "- {address: *local, ports: {http: 9002}")
        .replacing("route: [{destination: {host: cart, subset: beta}}]", with: "route: [{destination: &beta {host: cart, subset: beta}}]")
        .replacing("- {destination: {host: cart, subset: beta}, weight: 20}", with: "- {destination: *beta, weight: 20}")

    @Test func modestAliasesDecodeAsTheirExpandedForm() throws {
        #expect(Self.aliasedCanary.contains("*local") && Self.aliasedCanary.contains("*beta"))
        let aliased = ConfigLoader.load(yaml: Self.aliasedCanary, namespace: "shop")
        let expanded = ConfigLoader.load(yaml: canaryYAML, namespace: "shop")
        #expect(aliased.diagnostics == [] && expanded.diagnostics == [])
        #expect(aliased.resources.map(\.document.json) == expanded.resources.map(\.document.json))
        let a = try compile(Self.aliasedCanary, namespace: "shop")
        let e = try compile(canaryYAML, namespace: "shop")
        #expect(a.clusters.map(\.name) == e.clusters.map(\.name))
        #expect(a.clusters.map { $0.endpoints.map { "\($0.address):\($0.port)" } }
            == e.clusters.map { $0.endpoints.map { "\($0.address):\($0.port)" } })
        let beta = try select(a, get("/", headers: ["x-beta: yes"]))
        #expect(a.pickDestination(beta, random: 0)?.subset == "beta")
        let rest = try select(a, get("/", headers: ["x-beta: no"]))
        let restExpanded = try select(e, get("/", headers: ["x-beta: no"]))
        for random: UInt64 in [0, 1 << 62, 1 << 63, .max] {
            #expect(a.pickDestination(rest, random: random)?.subset == e.pickDestination(restExpanded, random: random)?.subset)
        }
    }
}
