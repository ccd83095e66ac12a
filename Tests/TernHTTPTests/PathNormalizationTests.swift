import TernHTTP
import Testing

// Istio's path normalisation (istio.io docs/reference/config/security/normalization, Envoy's normalize_path).

@Suite struct PathNormalizationTests {
    func normal(_ path: String, _ mode: PathNormalization = .base) -> String? {
        var out: [UInt8] = []
        let bytes = Array(path.utf8)
        switch mode.normalize(bytes.span, into: &out) {
        case .unchanged: return path
        case .normalized: return String(decoding: out, as: UTF8.self)
        case .refused: return nil
        }
    }

    @Test func baseDecodesUnreservedCharactersOnceAndNothingElse() {
        #expect(normal("/some%2fdata/%61%62%63") == "/some%2fdata/abc")  // Istio's own example under BASE
        #expect(normal("/%2D%2e%30%39%41%5A%5f%61%7a%7E") == "/-.09AZ_az~")
        #expect(normal("/a%252e") == "/a%252e")  // no double decoding
        #expect(normal("/a%20b%3F") == "/a%20b%3F")  // reserved and others kept
        #expect(normal("/a%2") == "/a%2")
        #expect(normal("/a%00b") == nil)
        #expect(normal("/plain/path.html") == "/plain/path.html")
    }

    @Test func backslashesAndDotSegments() {
        #expect(normal("/some\\data") == "/some/data")
        #expect(normal("\\da") == "\\da")  // not a path starting with "/": left to the parser's rules
        #expect(normal("/public/./data/abc/../xyz") == "/public/data/xyz")
        #expect(normal("/a/../b") == "/b")
        #expect(normal("/a/b/..") == "/a/")
        #expect(normal("/a/b/.") == "/a/b/")
        #expect(normal("/..") == "/")
        #expect(normal("/../../etc/passwd") == "/etc/passwd")
        #expect(normal("/api/orders/../admin") == "/api/admin")
        #expect(normal("/%2e%2e/admin") == "/admin")
        #expect(normal("/api/%2E%2E/admin") == "/admin")
        #expect(normal("/a/.b/..c/...") == "/a/.b/..c/...")
        #expect(normal("/a//..") == "/a/")
        #expect(normal("/a//b") == "/a//b")  // BASE keeps empty segments
        #expect(normal("/a\\..\\b") == "/b")
    }

    @Test func theOtherModes() {
        #expect(normal("/a//b///c", .mergeSlashes) == "/a/b/c")
        #expect(normal("/a%2fb", .mergeSlashes) == "/a%2fb")
        #expect(normal("/a%2fb", .decodeAndMergeSlashes) == "/a/b")
        #expect(normal("/a%5c..%5Cb", .decodeAndMergeSlashes) == "/b")
        #expect(normal("/a%2F%2F%2e%2e/b", .decodeAndMergeSlashes) == "/a/b")  // dots first, then merged (Envoy)
        #expect(normal("/a//../b", .mergeSlashes) == "/a/b")
        #expect(normal("/a/../b%2e", .none) == "/a/../b%2e")
        #expect(normal("/a%00", .none) == "/a%00")
    }
}
