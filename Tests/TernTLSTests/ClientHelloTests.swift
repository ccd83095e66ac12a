import Testing
import TernTLS

/// ClientHellos made by OpenSSL itself (a TernTLS client session's first flight), read back by the SNI reader.
@Suite struct ClientHelloTests {
    func hello(serverName: String?, version: TLSVersion = .tls13) throws -> [UInt8] {
        var settings = TLSClientSettings()
        settings.insecureSkipVerify = true
        settings.maximumVersion = version
        settings.alpn = ["http/1.1"]
        let context = try TLSContext.client(settings)
        let t = TLSSessions(capacity: 1)
        #expect(t.open(0, context, serverName: serverName))
        var out = [UInt8](repeating: 0, count: 16 * 1024)
        var n = 0
        out.withUnsafeMutableBytes { b in
            t.setOutput(0, b)
            #expect(t.handshake(0) == .wantRead)
            n = t.outputCount(0)
        }
        return Array(out[0..<n])
    }

    func read(_ bytes: [UInt8]) -> (ClientHelloResult, String) {
        var name = [UInt8](repeating: 0, count: ClientHello.maxNameLength)
        var span = name.mutableSpan
        let r = ClientHello.serverName(in: bytes.span, into: &span)
        if case .complete(let n) = r { return (r, String(decoding: name[0..<n], as: UTF8.self)) }
        return (r, "")
    }

    @Test(arguments: ["a.example.com", "localhost", "Mixed.Case.Example"])
    func readsTheServerNameOfOpenSSLsHello(name: String) throws {
        let (r, got) = read(try hello(serverName: name))
        #expect(r == .complete(nameLength: name.utf8.count))
        #expect(got == name.lowercased())
    }

    @Test func tls12HelloAndHelloWithoutSNI() throws {
        #expect(read(try hello(serverName: "x.example", version: .tls12)).1 == "x.example")
        #expect(read(try hello(serverName: nil)).0 == .complete(nameLength: 0))
    }

    @Test func everyCutIsIncompleteUntilTheNameIsIn() throws {
        let bytes = try hello(serverName: "cut.example.com")
        var sawComplete = false
        for cut in 0..<bytes.count {
            let (r, _) = read(Array(bytes[0..<cut]))
            if case .complete = r { sawComplete = true } else { #expect(r == .incomplete, "cut at \(cut)") }
        }
        #expect(read(bytes).1 == "cut.example.com")
        _ = sawComplete
    }

    @Test func helloSplitOverSeveralRecords() throws {
        let bytes = try hello(serverName: "split.example.com")
        // Re-frame the handshake message into records of 7 bytes each, as a peer may.
        let body = Array(bytes[5...])
        var framed: [UInt8] = []
        var i = 0
        while i < body.count {
            let n = min(7, body.count - i)
            framed += [22, 3, 1, 0, UInt8(n)] + body[i..<(i + n)]
            i += n
        }
        #expect(read(framed).1 == "split.example.com")
        #expect(read(Array(framed.prefix(60))).0 == .incomplete)
    }

    @Test(arguments: [
        Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8),
        [22, 3, 1, 0, 0],            // an empty record
        [22, 3, 9, 0, 4, 1, 0, 0, 0],  // not TLS framing
        [23, 3, 3, 0, 4, 1, 2, 3, 4],  // application data first
        [22, 3, 1, 0, 4, 2, 0, 0, 40],  // a ServerHello
        [22, 3, 1, 0, 4, 1, 0, 0, 3],   // a ClientHello too short to be one
    ])
    func garbageIsNotTLS(bytes: [UInt8]) {
        #expect(read(bytes).0 == .notTLS)
    }

    @Test func namesWithControlBytesOrTooLongAreRefused() throws {
        var bytes = try hello(serverName: "ok.example")
        // Overwrite the name's first byte with NUL.
        let name = Array("ok.example".utf8)
        if let at = (0..<(bytes.count - name.count)).first(where: { Array(bytes[$0..<($0 + name.count)]) == name }) {
            bytes[at] = 0
            #expect(read(bytes).0 == .notTLS)
        } else {
            Issue.record("name not found in the hello")
        }
    }

    @Test func randomBytesNeverCrashTheReader() {
        var seed: UInt64 = 0x1234_5678_9ABC_DEF0
        for _ in 0..<20_000 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1
            let n = Int(seed >> 54)
            var bytes = [UInt8](repeating: 0, count: n)
            for i in bytes.indices {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1
                bytes[i] = UInt8(truncatingIfNeeded: seed >> 33)
            }
            if n > 5 && seed & 1 == 0 { bytes[0] = 22; bytes[1] = 3; bytes[2] = 1; bytes[5] = 1 }
            _ = read(bytes)
        }
    }
}
