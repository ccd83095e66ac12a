import Testing
import TernIO

/// getaddrinfo through the system resolver, without changing the machine: `localhost` is in /etc/hosts on every
/// Debian, and `.invalid` never resolves (RFC 2606).
@Suite struct NameResolutionTests {
    @Test func localhostResolvesToLoopback() throws {
        let addresses = try SocketAddress.lookup(host: "localhost", port: 80)
        #expect(addresses.contains { $0.ip == "127.0.0.1" || $0.ip == "::1" }, "\(addresses)")
        #expect(addresses.allSatisfy { $0.port == 80 })
    }

    @Test func anInvalidNameFailsWithTheResolversMessage() {
        #expect(throws: NameResolutionError.self) { try SocketAddress.lookup(host: "nonexistent.invalid", port: 1) }
        do {
            _ = try SocketAddress.lookup(host: "nonexistent.invalid", port: 1)
        } catch {
            #expect(error.code != 0 && !error.description.isEmpty)
        }
    }
}
