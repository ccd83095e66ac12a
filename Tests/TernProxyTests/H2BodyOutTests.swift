import TernHTTP
import Testing
@testable import TernProxy

/// The engine's HTTP/1.1 body bytes read back as an HTTP/2 body (issue 17): framing removed, however the bytes
/// are split, and a chunked body's trailer section kept for HTTP/2 trailers.
@Suite struct H2BodyOutTests {
    /// Feeds `wire` in pieces of `step` bytes, as sends arrive, each de-framed at the end of the data so far.
    func read(_ framing: BodyFraming, _ wire: String, step: Int) -> (data: String, ended: Bool, trailers: String, broken: Bool) {
        var body = H2BodyOut()
        body.begin(framing)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var end = 0
        let bytes = Array(wire.utf8)
        var at = 0
        while at < bytes.count {
            let k = min(step, bytes.count - at)
            for i in 0..<k { buffer[end + i] = bytes[at + i] }
            let from = end
            end = buffer.withUnsafeMutableBytes { body.absorb($0, from: from, end: from + k) }
            at += k
        }
        return (String(decoding: buffer[0..<end], as: UTF8.self), body.ended, String(decoding: body.trailers, as: UTF8.self), body.broken)
    }

    @Test func chunkedDataAndTrailersHoweverSplit() {
        let wire = "5\r\nhello\r\n6;x=1\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n"
        for step in [1, 2, 3, 7, 100] {
            let r = read(.chunked, wire, step: step)
            #expect(r.data == "hello world" && r.ended && !r.broken, "step \(step)")
            #expect(r.trailers == "grpc-status: 0\r\n\r\n", "step \(step)")
        }
        var body = H2BodyOut()
        body.begin(.chunked)
        #expect(!body.hasTrailers)
        // A section that is only its empty line is not kept (however split), so a body without trailers stores
        // nothing.
        for step in [1, 2, 100] {
            let plain = read(.chunked, "3\r\nabc\r\n0\r\n\r\n", step: step)
            #expect(plain.data == "abc" && plain.ended && plain.trailers == "", "step \(step)")
        }
    }

    @Test func lengthsAndNoBody() {
        let r = read(.contentLength(4), "abcdEXTRA", step: 3)
        #expect(r.data == "abcd" && r.ended)
        var none = H2BodyOut()
        none.begin(.none)
        #expect(none.ended)
        let broken = read(.chunked, "zz\r\n", step: 4)
        #expect(broken.broken && !broken.ended)
    }
}
