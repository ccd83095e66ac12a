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
}
