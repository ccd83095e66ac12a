import Glibc
import TernIO
import Testing

@Suite struct SocketAddressTests {
    @Test func equalityAndHashingGoByFamilyAddressAndPort() throws {
        let a = try #require(SocketAddress(parsing: "10.1.2.3:80"))
        #expect(a == SocketAddress(parsing: "10.1.2.3:80"))
        #expect(a != SocketAddress(parsing: "10.1.2.3:81") && a != SocketAddress(parsing: "10.1.2.4:80"))
        #expect(a != SocketAddress(parsing: "[::ffff:10.1.2.3]:80"))  // another family, as their descriptions differ
        let v6 = try #require(SocketAddress(parsing: "[fd00::5]:7000"))
        #expect(v6 == SocketAddress(parsing: "[fd00:0::5]:7000") && v6 != SocketAddress(parsing: "[fd00::6]:7000"))
        // As a key: the index HTTPProxy and TCPRouter keep of every endpoint, looked up on each swap.
        var index: [SocketAddress: Int] = [:]
        for i in 0..<1_000 { index[try #require(SocketAddress(parsing: "10.0.\(i / 256).\(i % 256):8080"))] = i }
        index[v6] = -1
        #expect(index.count == 1_001)
        #expect(index[try #require(SocketAddress(parsing: "10.0.3.7:8080"))] == 3 * 256 + 7)
        #expect(index[try #require(SocketAddress(parsing: "10.0.3.7:8081"))] == nil)
        #expect(index[try #require(SocketAddress(parsing: "[fd00::5]:7000"))] == -1)
    }

    @Test func theIPReadsAsNumbersOfItsFamily() throws {
        let v4 = try #require(SocketAddress(parsing: "10.1.2.3:80"))
        #expect(v4.ipv4 == 0x0A01_0203)
        #expect(v4.ipv6 == nil)
        let v6 = try #require(SocketAddress(parsing: "[fd00:1::ff:2]:80"))
        #expect(v6.ipv4 == nil)
        #expect(v6.ipv6?.high == 0xFD00_0001_0000_0000 && v6.ipv6?.low == 0x0000_0000_00FF_0002)
    }

    @Test func aConnectionNoNATTranslatedWasMadeToItsLocalAddress() throws {
        let (server, client) = try TestSockets.pair()
        defer {
            close(server)
            close(client)
        }
        let local = try System.localAddress(server)
        #expect(System.originalDestination(server) == local)
        #expect(System.originalDestination(-1) == nil)
    }

    @Test func textOnTheStackIsTheCanonicalAddress() throws {
        for text in ["10.1.2.3:80", "127.0.0.1:0", "255.255.255.255:65535", "[::1]:8080", "[fd00:1::ff:2]:443",
                     "[2001:db8:85a3:1:2:8a2e:370:7334]:65535", "[::ffff:1.2.3.4]:1", "[::]:9"]
        {
            let a = try #require(SocketAddress(parsing: text))
            var ip: [UInt8] = [], full: [UInt8] = []
            a.withText(withPort: false) { span in for i in span.indices { ip.append(span[i]) } }
            a.withText(withPort: true) { span in for i in span.indices { full.append(span[i]) } }
            // Each input is already in canonical form (RFC 5952 for IPv6), so it comes back as written.
            let host = String(text[..<text.lastIndex(of: ":")!].filter { $0 != "[" && $0 != "]" })
            #expect(String(decoding: full, as: UTF8.self) == text)
            #expect(String(decoding: ip, as: UTF8.self) == host, "\(text)")
            #expect((a.ip, a.description) == (host, text))
        }
    }
}
