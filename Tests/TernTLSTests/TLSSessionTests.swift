import Foundation
import Testing
import TernTLS

/// The certificates of Tests/Fixtures/tls/make-certs.sh, made once per test process with the openssl CLI.
enum Certificates {
    static let directory: String = {
        let dir = NSTemporaryDirectory() + "tern-tls-\(getpid())"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/tls/make-certs.sh").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, dir]
        try! p.run()
        p.waitUntilExit()
        precondition(p.terminationStatus == 0, "make-certs.sh failed")
        return dir
    }()

    static func path(_ name: String) -> String { directory + "/" + name }
}

/// A client and a server session in two `TLSSessions` tables, wired back to back through byte arrays: what one
/// writes is the other's input, as sockets would carry it.
final class Pair {
    let client = TLSSessions(capacity: 1)
    let server = TLSSessions(capacity: 1)
    var toServer: [UInt8] = []
    var toClient: [UInt8] = []
    var out = [UInt8](repeating: 0, count: 16 * 1024)

    init(client c: TLSContext, server s: TLSContext, serverName: String? = "localhost", verifyName: String? = "localhost",
         resume: TLSResumption? = nil) {
        #expect(client.open(0, c, serverName: serverName, verifyName: verifyName, resume: resume))
        #expect(server.open(0, s))
    }

    /// Runs one call with `input` as the session's input, collecting what it writes into `sent` (giving it room
    /// again after each full buffer) and removing from `input` what it consumed.
    func call(_ t: TLSSessions, input: inout [UInt8], sent: inout [UInt8], _ op: (TLSSessions) -> TLSStep) -> TLSStep {
        var step = TLSStep.wantWrite
        let inputCopy = input
        inputCopy.withUnsafeBytes { inBytes in
            t.setInput(0, inBytes)
            out.withUnsafeMutableBytes { outBytes in
                while true {
                    t.setOutput(0, outBytes)
                    step = op(t)
                    sent += outBytes[0..<t.outputCount(0)]
                    if step != .wantWrite { break }
                }
            }
            let consumed = inBytes.count - t.inputLeft(0)
            input.removeFirst(consumed)
            t.setInput(0, UnsafeRawBufferPointer(start: nil, count: 0))
        }
        _ = inputCopy
        return step
    }

    /// Drives both handshakes until both finish or one fails; returns the two last steps.
    func handshake() -> (client: TLSStep, server: TLSStep) {
        var c = TLSStep.wantRead, s = TLSStep.wantRead
        for _ in 0..<20 {
            if c != .done(0) { c = call(client, input: &toClient, sent: &toServer) { $0.handshake(0) } }
            if s != .done(0) { s = call(server, input: &toServer, sent: &toClient) { $0.handshake(0) } }
            if case .failed = c { break }
            if case .failed = s { break }
            if c == .done(0) && s == .done(0) { break }
        }
        return (c, s)
    }

    /// Sends `data` one way and reads it all on the other side (after whatever that side had not read yet).
    func transfer(_ data: [UInt8], fromClient: Bool) -> [UInt8] {
        let (w, r) = fromClient ? (client, server) : (server, client)
        var none: [UInt8] = []
        var wire = fromClient ? toServer : toClient
        var offset = 0
        while offset < data.count {
            let chunk = min(16 * 1024 - 64, data.count - offset)
            let step = data[offset..<(offset + chunk)].withUnsafeBytes { bytes in
                call(w, input: &none, sent: &wire) { $0.write(0, bytes) }
            }
            #expect(step == .done(chunk))
            offset += chunk
        }
        var received: [UInt8] = []
        var plain = [UInt8](repeating: 0, count: 16 * 1024)
        var back = fromClient ? toClient : toServer
        while true {
            let step = plain.withUnsafeMutableBytes { p in call(r, input: &wire, sent: &back) { $0.read(0, into: p) } }
            guard case .done(let n) = step else { break }
            received += plain[0..<n]
        }
        if fromClient {
            toServer = wire
            toClient = back
        } else {
            toClient = wire
            toServer = back
        }
        return received
    }
}

@Suite struct TLSSessionTests {
    let serverContext = try! TLSContext.server(certificate: Certificates.path("server-chain.crt"), key: Certificates.path("server.key"))
    func clientContext(_ configure: (inout TLSClientSettings) -> Void = { _ in }) -> TLSContext {
        var s = TLSClientSettings()
        s.caFile = Certificates.path("ca.crt")
        s.alpn = ["http/1.1"]
        configure(&s)
        return try! TLSContext.client(s)
    }

    @Test func tls13HandshakeALPNAndDataBothWays() {
        let p = Pair(client: clientContext(), server: serverContext)
        let (c, s) = p.handshake()
        #expect(c == .done(0) && s == .done(0))
        #expect(p.server.version(0) == "TLSv1.3")
        #expect(p.client.alpn(0) == "http/1.1")
        #expect(p.server.alpn(0) == "http/1.1")
        #expect(p.server.serverName(0) == "localhost")
        #expect(p.server.cipher(0).hasPrefix("TLS_"))
        var data = [UInt8](repeating: 0, count: 100_000)
        for i in data.indices { data[i] = UInt8(truncatingIfNeeded: i &* 31) }
        let up = p.transfer(data, fromClient: true) == data
        let down = p.transfer(data, fromClient: false) == data
        #expect(up)
        #expect(down)
    }

    @Test func tls12Handshake() {
        let p = Pair(client: clientContext { $0.maximumVersion = .tls12 }, server: serverContext)
        let (c, s) = p.handshake()
        #expect(c == .done(0) && s == .done(0))
        #expect(p.server.version(0) == "TLSv1.2")
        #expect(p.server.cipher(0).contains("ECDHE"))
        #expect(p.transfer(Array("hello".utf8), fromClient: true) == Array("hello".utf8))
    }

    @Test(arguments: ["a.example.com", "x.b.example.com", "localhost"])
    func sniAndSANNames(name: String) {
        let p = Pair(client: clientContext(), server: serverContext, serverName: name, verifyName: name)
        let (c, s) = p.handshake()
        #expect(c == .done(0) && s == .done(0))
        #expect(p.server.serverName(0) == name)
    }

    @Test func sanMismatchFailsTheClient() {
        let p = Pair(client: clientContext(), server: serverContext, serverName: "c.example.com", verifyName: "c.example.com")
        let (c, _) = p.handshake()
        guard case .failed(let f) = c else { Issue.record("expected a failure, got \(c)"); return }
        #expect(f.reason == .sanMismatch)
    }

    @Test func unknownCAFailsTheClient() {
        let p = Pair(client: clientContext { $0.caFile = Certificates.path("other-ca.crt") }, server: serverContext)
        let (c, _) = p.handshake()
        guard case .failed(let f) = c else { Issue.record("expected a failure, got \(c)"); return }
        #expect(f.reason == .certificateVerifyFailed)
        #expect(f.detail.contains("certificate verify failed"))
    }

    @Test(arguments: [("expired", TLSFailureReason.certificateExpired), ("future", .certificateNotYetValid)])
    func datedCertificatesFail(name: String, reason: TLSFailureReason) throws {
        let server = try TLSContext.server(certificate: Certificates.path("\(name).crt"), key: Certificates.path("\(name).key"))
        let p = Pair(client: clientContext(), server: server)
        let (c, _) = p.handshake()
        guard case .failed(let f) = c else { Issue.record("expected a failure, got \(c)"); return }
        #expect(f.reason == reason)
    }

    @Test func clientCertificateRequiredPresentAndMissing() throws {
        let server = try TLSContext.server(certificate: Certificates.path("server.crt"), key: Certificates.path("server.key"),
                                           clientCA: Certificates.path("ca.crt"))
        let with = Pair(client: clientContext {
            $0.certificateFile = Certificates.path("client.crt")
            $0.keyFile = Certificates.path("client.key")
        }, server: server)
        let (c, s) = with.handshake()
        #expect(c == .done(0) && s == .done(0))
        #expect(with.server.peerPresentedCertificate(0))
        #expect(with.server.peerURI(0) == "spiffe://cluster.local/ns/default/sa/client")
        #expect(with.server.peerMatches(0, anyOf: ["spiffe://cluster.local/ns/default/sa/client"]))
        #expect(!with.server.peerMatches(0, anyOf: ["spiffe://cluster.local/ns/default/sa/other"]))

        let without = Pair(client: clientContext(), server: server)
        var (_, s2) = without.handshake()
        // TLS 1.3: the client finishes first; the server's failure shows once it reads the client's last flight.
        if s2 == .wantRead { s2 = without.call(without.server, input: &without.toServer, sent: &without.toClient) { $0.handshake(0) } }
        guard case .failed(let f) = s2 else { Issue.record("expected a failure, got \(s2)"); return }
        #expect(f.reason == .noCertificate)
    }

    @Test func ticketsResume() {
        let client = clientContext()
        let first = Pair(client: client, server: serverContext)
        #expect(first.handshake() == (.done(0), .done(0)))
        // TLS 1.3 tickets come after the handshake: the client reads them with its first read.
        _ = first.transfer(Array("x".utf8), fromClient: false)
        #expect(!first.server.resumed(0))
        guard let ticket = first.client.resumption(0) else { Issue.record("no resumable session"); return }
        let second = Pair(client: client, server: serverContext, resume: ticket)
        #expect(second.handshake() == (.done(0), .done(0)))
        #expect(second.server.resumed(0))
        #expect(second.client.resumed(0))
    }

    @Test func ticketsFromTwoRotationsAgoStillResumeAndThreeDoNot() {
        let client = clientContext()
        let first = Pair(client: client, server: serverContext)
        #expect(first.handshake() == (.done(0), .done(0)))
        _ = first.transfer(Array("x".utf8), fromClient: false)
        guard let ticket = first.client.resumption(0) else { Issue.record("no resumable session"); return }
        TicketKeys.shared.rotate()
        TicketKeys.shared.rotate()
        let second = Pair(client: client, server: serverContext, resume: ticket)
        #expect(second.handshake() == (.done(0), .done(0)))
        #expect(second.server.resumed(0))
        TicketKeys.shared.rotate()
        let third = Pair(client: client, server: serverContext, resume: ticket)
        #expect(third.handshake() == (.done(0), .done(0)))
        #expect(!third.server.resumed(0))
    }

    @Test func closeNotifyEndsTheStream() {
        let p = Pair(client: clientContext(), server: serverContext)
        #expect(p.handshake() == (.done(0), .done(0)))
        var none: [UInt8] = []
        #expect(p.call(p.client, input: &none, sent: &p.toServer) { $0.shutdown(0) } == .done(0))
        var plain = [UInt8](repeating: 0, count: 1024)
        let step = plain.withUnsafeMutableBytes { b in p.call(p.server, input: &p.toServer, sent: &p.toClient) { $0.read(0, into: b) } }
        #expect(step == .closed)
    }

    @Test(arguments: [
        ("plaintext HTTP", Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), TLSFailureReason.httpRequest),
        ("a handshake record of garbage", [0x16, 0x03, 0x01, 0x00, 0x05] + Array("garbage and more garbage".utf8), .protocolError),
        ("random bytes", (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 77 &+ 3) }, .protocolError),
        ("an alert record before any handshake", [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28], .protocolError),
    ])
    func garbageFailsTheServer(name: String, bytes: [UInt8], reason: TLSFailureReason) {
        let t = TLSSessions(capacity: 1)
        #expect(t.open(0, serverContext))
        var input = bytes
        var sent: [UInt8] = []
        let p = Pair(client: clientContext(), server: serverContext)
        let step = p.call(t, input: &input, sent: &sent) { $0.handshake(0) }
        guard case .failed(let f) = step else { Issue.record("\(name): expected a failure, got \(step)"); return }
        #expect(f.reason == reason, "\(name): \(f.reason) \(f.detail)")
    }

    @Test func truncatedStreamIsAnEarlyClose() {
        let t = TLSSessions(capacity: 1)
        #expect(t.open(0, serverContext))
        var input = Array("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}".utf8)
        var sent: [UInt8] = []
        let p = Pair(client: clientContext(), server: serverContext)
        #expect(p.call(t, input: &input, sent: &sent) { $0.handshake(0) } == .wantRead)
        t.setEndOfInput(0)
        let step = p.call(t, input: &input, sent: &sent) { $0.handshake(0) }
        guard case .failed(let f) = step else { Issue.record("expected a failure, got \(step)"); return }
        #expect(f.reason == .closedEarly, "\(f.detail)")
    }

    @Test func setupErrorsNameTheFile() {
        #expect(throws: TLSSetupError.self) { try TLSContext.server(certificate: "/nonexistent.pem", key: Certificates.path("server.key")) }
        do {
            _ = try TLSContext.server(certificate: Certificates.path("server.crt"), key: Certificates.path("mismatch.key"))
            Issue.record("a key that does not match its certificate was accepted")
        } catch {
            #expect(error.description.contains("mismatch.key"))
            #expect(error.description.contains("mismatch"))
        }
        do {
            _ = try TLSContext.server(certificate: Certificates.path("server.key"), key: Certificates.path("server.key"))
            Issue.record("a key file was accepted as a certificate")
        } catch {
            #expect(error.description.contains("server.key: not a usable PEM certificate chain"))
        }
    }

    @Test func rsaCertificate() throws {
        let server = try TLSContext.server(certificate: Certificates.path("rsa.crt"), key: Certificates.path("rsa.key"))
        let p = Pair(client: clientContext(), server: server)
        #expect(p.handshake() == (.done(0), .done(0)))
    }
}
