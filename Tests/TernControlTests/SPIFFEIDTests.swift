import Testing
import TernTLS

/// The SPIFFE ID grammar: the valid and invalid forms of SPIFFE-ID.md and of go-spiffe's tests.
struct SPIFFEIDTests {
    @Test(arguments: [
        ("spiffe://trustdomain", "trustdomain", ""),
        ("spiffe://trustdomain/path", "trustdomain", "/path"),
        ("spiffe://trustdomain/path1/path2", "trustdomain", "/path1/path2"),
        ("spiffe://cluster.local/ns/default/sa/web", "cluster.local", "/ns/default/sa/web"),
        ("spiffe://a-b_c.d0/X.y-Z_9", "a-b_c.d0", "/X.y-Z_9"),
        ("spiffe://td/.../a..b/.hidden", "td", "/.../a..b/.hidden"),
        ("spiffe://1.2.3.4/p", "1.2.3.4", "/p"),
    ])
    func validIDsParse(_ text: String, _ domain: String, _ path: String) throws {
        let id = try SPIFFEID(parsing: text)
        #expect(id.trustDomain == domain)
        #expect(id.path == path)
        #expect(id.description == text)
    }

    @Test(arguments: [
        ("", SPIFFEIDError.empty),
        ("s", .wrongScheme),
        ("spiffe:/", .wrongScheme),
        ("spiffe:", .wrongScheme),
        ("http://trustdomain/path", .wrongScheme),
        ("SPIFFE://trustdomain/path", .uppercaseScheme),
        ("Spiffe://trustdomain", .uppercaseScheme),
        ("spiffe://", .missingTrustDomain),
        ("spiffe:///path", .missingTrustDomain),
        ("spiffe://Trustdomain/path", .uppercaseTrustDomain),
        ("spiffe://trustdomain:8080/path", .port),
        ("spiffe://user@trustdomain/path", .userinfo),
        ("spiffe://user:pass@trustdomain/path", .port),
        ("spiffe://trust%41domain/path", .percentEncoded),
        ("spiffe://trustdomain?x=1", .query),
        ("spiffe://trustdomain#frag", .fragment),
        ("spiffe://trust domain/path", .badTrustDomainCharacter),
        ("spiffe://trustdomain/", .trailingSlash),
        ("spiffe://trustdomain/path/", .trailingSlash),
        ("spiffe://trustdomain//", .emptySegment),
        ("spiffe://trustdomain//path", .emptySegment),
        ("spiffe://trustdomain/path//other", .emptySegment),
        ("spiffe://trustdomain/.", .dotSegment),
        ("spiffe://trustdomain/./path", .dotSegment),
        ("spiffe://trustdomain/..", .dotSegment),
        ("spiffe://trustdomain/path/../other", .dotSegment),
        ("spiffe://trustdomain/pa%41th", .percentEncoded),
        ("spiffe://trustdomain/path?query", .query),
        ("spiffe://trustdomain/path#fragment", .fragment),
        ("spiffe://trustdomain/pa th", .badPathCharacter),
        ("spiffe://trustdomain/pa:th", .badPathCharacter),
        ("spiffe://trustdomain/pa+th", .badPathCharacter),
        ("spiffe://trustdomain/caf\u{e9}", .badPathCharacter),
        ("spiffe://trustdomain/a\u{0}b", .badPathCharacter),
    ])
    func invalidIDsAreRefusedWithTheirReason(_ text: String, _ expected: SPIFFEIDError) {
        #expect(throws: expected) { try SPIFFEID(parsing: text) }
    }

    @Test func anIDOf2048BytesIsTheLongestAccepted() throws {
        let prefix = "spiffe://td/"
        let longest = prefix + String(repeating: "a", count: SPIFFEID.maximumLength - prefix.utf8.count)
        #expect(try SPIFFEID(parsing: longest).description == longest)
        #expect(throws: SPIFFEIDError.tooLong(2049)) { try SPIFFEID(parsing: longest + "a") }
    }

    @Test func aTrustDomainOf255BytesIsTheLongestAccepted() throws {
        let longest = String(repeating: "a", count: SPIFFEID.maximumTrustDomainLength)
        try SPIFFEID.validate(trustDomain: longest)
        #expect(try SPIFFEID(parsing: "spiffe://" + longest + "/ns/a").trustDomain == longest)
        #expect(throws: SPIFFEIDError.trustDomainTooLong(256)) { try SPIFFEID.validate(trustDomain: longest + "a") }
        #expect(throws: SPIFFEIDError.trustDomainTooLong(256)) { try SPIFFEID(parsing: "spiffe://" + longest + "a/ns/a") }
    }

    @Test func istioWorkloadIdentitiesRoundTrip() throws {
        let id = try SPIFFEID.workload(trustDomain: "cluster.local", namespace: "default", serviceAccount: "sleep")
        #expect(id.description == "spiffe://cluster.local/ns/default/sa/sleep")
        #expect(id.principal == "cluster.local/ns/default/sa/sleep")
        #expect(id.istioWorkload?.namespace == "default")
        #expect(id.istioWorkload?.serviceAccount == "sleep")
        #expect(try SPIFFEID(parsing: "spiffe://td/other/path").istioWorkload == nil)
        #expect(throws: SPIFFEIDError.dotSegment) {
            try SPIFFEID.workload(trustDomain: "td", namespace: "..", serviceAccount: "x")
        }
    }
}
