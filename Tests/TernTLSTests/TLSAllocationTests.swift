// How many times OpenSSL (and TernTLS) allocate per request on a warm TLS keep-alive connection, and per
// handshake: a client and a server session back to back on this thread, their records moved between fixed
// buffers; the thread's malloc calls counted by Tools/malloc-count (TernTestSupport's MallocCounter), in
// Tools/scripts/test.sh's `--filter AllocationTests` run. A plain `swift test` checks the bytes only.
import TernTLS
import TernTestSupport
import Testing

@Suite struct TLSAllocationTests {
    /// Encrypts `bytes` on `from` into `wire` and decrypts them on `to` into `plain`: no Swift allocation (the
    /// buffers are the caller's), so what the counter sees is OpenSSL's (and TernTLS's).
    static func oneWay(_ from: TLSSessions, _ to: TLSSessions, _ bytes: UnsafeRawBufferPointer,
                       _ wire: UnsafeMutableRawBufferPointer, _ plain: UnsafeMutableRawBufferPointer) -> Bool {
        from.setOutput(0, wire)
        guard from.write(0, bytes) == .done(bytes.count) else { return false }
        let n = from.outputCount(0)
        from.setOutput(0, nil)
        to.setInput(0, UnsafeRawBufferPointer(rebasing: wire[0..<n]))
        let step = to.read(0, into: plain)
        to.setInput(0, UnsafeRawBufferPointer(start: nil, count: 0))
        return step == .done(bytes.count)
    }

    @Test func allocationsPerRequestOnAWarmConnectionAndPerHandshake() throws {
        let counter = try MallocCounter.load()
        let server = try TLSContext.server(certificate: Certificates.path("server-chain.crt"), key: Certificates.path("server.key"))
        var settings = TLSClientSettings()
        settings.caFile = Certificates.path("ca.crt")
        settings.alpn = ["http/1.1"]
        let client = try TLSContext.client(settings)
        // A first handshake warms OpenSSL's lazily built tables; the second is the one counted.
        _ = Pair(client: client, server: server).handshake()
        let beforeHandshake = counter?.count() ?? 0
        let p = Pair(client: client, server: server)
        #expect(p.handshake() == (.done(0), .done(0)))
        let handshakeMallocs = (counter?.count() ?? 0) &- beforeHandshake
        // The ticket the server sent after the handshake is read by the client's first read.
        #expect(p.transfer(Array("warm".utf8), fromClient: false) == Array("warm".utf8))
        let request = [UInt8](repeating: 0x61, count: 200), response = [UInt8](repeating: 0x62, count: 300)
        let wire = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer {
            wire.deallocate()
            plain.deallocate()
        }
        var ok = true
        request.withUnsafeBytes { req in
            response.withUnsafeBytes { res in
                for _ in 0..<100 {
                    ok = ok && Self.oneWay(p.client, p.server, req, wire, plain) && Self.oneWay(p.server, p.client, res, wire, plain)
                }
            }
        }
        let before = counter?.count() ?? 0
        request.withUnsafeBytes { req in
            response.withUnsafeBytes { res in
                for _ in 0..<1000 {
                    ok = ok && Self.oneWay(p.client, p.server, req, wire, plain) && Self.oneWay(p.server, p.client, res, wire, plain)
                }
            }
        }
        let mallocs = (counter?.count() ?? 0) &- before
        #expect(ok)
        if counter != nil {
            print("TLS allocations: \(handshakeMallocs) per full TLS 1.3 handshake (client and server sessions, "
                  + "ECDSA P-256, X25519), \(Double(mallocs) / 1000) per request (200 bytes up, 300 down) on a warm connection")
            // SSL_MODE_RELEASE_BUFFERS: OpenSSL frees a connection's record buffers between records and takes them
            // again for the next: 12 per request measured here (3 per record on each side: the price of an idle
            // connection holding no record buffer). More than that is a regression.
            #expect(mallocs <= 1000 * 12, "\(mallocs) mallocs for 1,000 requests")
        }
    }
}
