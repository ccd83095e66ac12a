import TernConfig
import TernTestSupport
import Testing

/// Regexes as Envoy runs them (RE2): what is refused and why, Envoy's program-size limit, matching that stays
/// linear on a pattern a backtracking engine takes exponential time over, and the per-reactor copies a table is
/// compiled with.
@Suite struct CompiledRegexTests {
    func refusal(_ pattern: String, maxProgramSize: Int? = CompiledRegex.istioMaxProgramSize) -> String? {
        guard case .failure(let e) = CompiledRegex.compile(pattern, maxProgramSize: maxProgramSize) else { return nil }
        return e.message
    }

    @Test func perlSyntaxRE2LacksIsRefusedWithWhatToDo() {
        let lookaround = "(lookahead and lookbehind are not RE2 syntax)"
        #expect(refusal("/a(?=b)") == "invalid regex: invalid perl operator: (?= \(lookaround)")
        #expect(refusal("/a(?!b)") == "invalid regex: invalid perl operator: (?! \(lookaround)")
        #expect(refusal("(?<=a)b") == "invalid regex: invalid perl operator: (?< \(lookaround)")
        #expect(refusal("(?<!a)b") == "invalid regex: invalid perl operator: (?< \(lookaround)")
        #expect(refusal("(?<id>[0-9]+)") == "invalid regex: invalid perl operator: (?< (write a named group as (?P<name>...))")
        #expect(refusal("(a)\\1") == "invalid regex: invalid escape sequence: \\1 (backreferences are not RE2 syntax)")
        #expect(refusal("a*+") == "invalid regex: bad repetition operator: *+ (possessive quantifiers are not RE2 syntax)")
        #expect(refusal("a**") == "invalid regex: bad repetition operator: **")
        #expect(refusal("(?>a)") == "invalid regex: invalid perl operator: (?> (atomic groups are not RE2 syntax)")
        #expect(refusal("a\\Z") == "invalid regex: invalid escape sequence: \\Z")
        #expect(refusal("a(") == "invalid regex: missing ): a(")
    }

    @Test func anyByteIsRefusedAsIstioRefusesIt() {
        #expect(refusal("a\\Cb") == "invalid regex: invalid escape sequence: \\C (Istio refuses it; it would match any byte)")
        #expect(refusal("\\Q\\C\\E") == nil)  // quoted: the text "\C"
        #expect(refusal("a\\\\C") == nil)  // an escaped backslash, then C
    }

    @Test func whatRE2AcceptsIsAccepted() {
        for pattern in ["(?P<id>[0-9]+)", "[[:alpha:]]+", "\\d\\s\\w", "(?i:abc)x", "^/api/v[0-9]+/(users|orders)/[a-z0-9-]+$",
                        "a{2,5}?", "\\Qa.b\\E", ""] {
            #expect(refusal(pattern) == nil, "\(pattern)")
        }
    }

    @Test func programSizeOverTheLimitIstioGivesEnvoyIsRefused() throws {
        // A literal of n characters is n instructions, plus 4 (RE2's unanchored prefix, the match): 96 is 100.
        #expect(try CompiledRegex.compile("a{96}").get().programSize == 100)
        #expect(refusal("a{97}", maxProgramSize: 100) == "regex too large: RE2 program size of 101 > max program size of 100 (the re2.max_program_size.error_level Istio gives Envoy)")
        // Istio's 32,768: every Unicode letter (over a thousand instructions) passes, 40 × 1,000 ASCII letters not.
        #expect(refusal("\\pL") == nil)
        let huge = String(repeating: "[a-z]{1000}", count: 40)
        #expect(refusal(huge)?.hasPrefix("regex too large: RE2 program size of ") == true)
        #expect(refusal(huge, maxProgramSize: nil) == nil)  // the admin's filter has no limit, as Envoy's
    }

    @Test func aRegexLongerThanIstiosLimitIsRefused() {
        #expect(refusal(String(repeating: "a", count: 1024)) == nil)
        #expect(refusal(String(repeating: "a", count: 1025)) == "regex is too large, max length allowed is 1024 (Istio's limit), got 1025")
    }

    /// (a*)*b is the textbook exponential backtracking case: against 'a' × 50,000 a backtracker tries every way
    /// of splitting the a's before giving up. RE2's automata finish in one pass, with the right answer.
    @Test func pathologicalPatternOnALongHeaderCompletes() throws {
        let yaml = RoutingTests.virtualService + """
              http:
              - match: [{headers: {x-a: {regex: "(a*)*b"}}}]
                directResponse: {status: 200}
              - match: [{headers: {x-a: {regex: "(a*)*b|(a|aa)+"}}}]
                directResponse: {status: 201}
              - directResponse: {status: 599}

            """
        let t = try compile(yaml, namespace: "ns")
        let long = String(repeating: "a", count: 50_000)
        func status(_ value: String) throws -> Int? {
            let m = try select(t, get("/", host: "svc", headers: ["x-a: " + value]))
            guard let r = t.route(m), case .directResponse(let s, _) = r.action else { return nil }
            return s
        }
        #expect(try status(long) == 201)
        #expect(try status(long + "b") == 200)
        #expect(try status(long + "c") == 599)
        // The rewrite's search, from every offset of a path that never matches.
        let rewrite = try RegexRewrite.compile(match: "(a*)*b", rewrite: "x").get()
        #expect(rewrite.rewrite("/" + long) == "/" + long)
    }

    @Test func aTableHasOneCopyPerReactorAndEveryCopyAgrees() throws {
        let yaml = RoutingTests.virtualService + """
              http:
              - match: [{uri: {regex: "/v[0-9]+/.*"}}]
                rewrite: {uriRegexRewrite: {match: "/v([0-9]+)/", rewrite: "/version-\\\\1/"}}
                directResponse: {status: 200}
              - directResponse: {status: 599}

            """
        let t = try RouteTable.compile(ConfigLoader.load(yaml: yaml, namespace: "ns"), namespace: "ns", reactors: 3)
        guard case .regex(let regex)? = t.virtualHosts.first?.routes.first?.matchers.first?.uri else {
            Issue.record("no regex matcher")
            return
        }
        #expect(regex.copyCount == 3)
        let request = Array(get("/v2/items", host: "svc").utf8)
        let head = HTTP1ParserBox(request).head
        let host = Array("svc".utf8)
        // Reactor 3 is past the copies (a table compiled for fewer reactors): it shares one, still correct.
        for reactor in 0..<4 {
            let m = t.select(host: host.span, port: 80, request: RequestView(http1: head, bytes: request.span), reactor: reactor)
            #expect(t.route(m)?.name == nil && m.route == 0, "reactor \(reactor)")
            var out: [UInt8] = []
            let path = Array("/v2/items/v3/".utf8)
            #expect(t.route(m)?.uriRegexRewrite?.apply(target: path.span, reactor: reactor) { piece in
                for i in 0..<piece.count { out.append(piece[i]) }
            } == 2)
            #expect(String(decoding: out, as: UTF8.self) == "/version-2/items/version-3/", "reactor \(reactor)")
        }
    }
}
