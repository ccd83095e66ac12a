import Glibc
import TernIO
import Testing

@Suite struct SocketAddressTests {
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
