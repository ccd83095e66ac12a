import Testing
@testable import TernHTTP

/// The eight-bytes-at-a-time scans agree with the byte-by-byte definitions wherever the interesting byte sits
/// (every position in and across words, every byte value).
@Suite struct HTTPGrammarScanTests {
    static func naiveSpecial(_ bytes: [UInt8], _ from: Int, _ end: Int) -> Int {
        for i in from..<end where (bytes[i] < 0x20 && bytes[i] != 0x09) || bytes[i] == 0x7F { return i }
        return end
    }

    static func naiveNonTarget(_ bytes: [UInt8], _ from: Int, _ end: Int) -> Int {
        for i in from..<end where !HTTPGrammar.isTargetChar(bytes[i]) { return i }
        return end
    }

    @Test func everyByteValueAtEveryPosition() {
        for value in 0...255 {
            for position in 0..<24 {
                var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 24)
                bytes[position] = UInt8(value)
                for from in [0, 1, 5, 8] where from <= 24 {
                    #expect(HTTPGrammar.firstSpecial(bytes.span, from: from, end: 24) == Self.naiveSpecial(bytes, from, 24))
                    #expect(HTTPGrammar.firstNonTarget(bytes.span, from: from, end: 24) == Self.naiveNonTarget(bytes, from, 24))
                }
            }
        }
    }

    @Test func randomLinesAgree() {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [0x00, 0x09, 0x0A, 0x0D, 0x20, 0x23, 0x41, 0x61, 0x7E, 0x7F, 0x80, 0xFF]
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<40, using: &rng)
            let bytes = (0..<n).map { _ in Bool.random(using: &rng) ? UInt8(ascii: "x") : alphabet.randomElement(using: &rng)! }
            let from = n == 0 ? 0 : Int.random(in: 0...n, using: &rng)
            #expect(HTTPGrammar.firstSpecial(bytes.span, from: from, end: n) == Self.naiveSpecial(bytes, from, n))
            #expect(HTTPGrammar.firstNonTarget(bytes.span, from: from, end: n) == Self.naiveNonTarget(bytes, from, n))
            #expect(HTTPGrammar.isTokenCharFast(bytes.first ?? 0) == HTTPGrammar.isTokenChar(bytes.first ?? 0))
        }
        for b in 0...255 { #expect(HTTPGrammar.isTokenCharFast(UInt8(b)) == HTTPGrammar.isTokenChar(UInt8(b))) }
        // The Host bit table is the set RFC 3986 §3.2.2 allows (unreserved, sub-delims, "%", ":", "[", "]").
        let host = Set(Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]".utf8))
        for b in 0...255 { #expect(HTTPGrammar.isHostChar(UInt8(b)) == host.contains(UInt8(b)), "byte \(b)") }
    }
}
