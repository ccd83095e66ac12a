import Testing
import TernConfig

/// Addresses and ranges as text, as iptables-save and Go's netip print them (RFC 5952): what `tern iptables`
/// writes into its rules.
struct IPAddressTextTests {
    @Test(arguments: [
        ("10.1.2.3", "10.1.2.3/32"), ("0.0.0.0/0", "0.0.0.0/0"), ("FD00:0:0:1::5/64", "fd00:0:0:1::/64"), ("FD00::1:0:0:0/64", "fd00::/64"),
        ("::/0", "::/0"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1/128"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3/128"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1/128"), ("fe80::", "fe80::/128"), ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8/128"),
        ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7/128"),
    ])
    func rangesPrintAsIptablesSavePrintsThem(_ text: String, _ printed: String) throws {
        #expect(try CIDRRange(parsing: text).description == printed)
    }

    @Test func loopbackIsGosIsLoopback() {
        #expect(IPAddress(parsing: "127.0.0.1")!.isLoopback)
        #expect(IPAddress(parsing: "127.255.0.9")!.isLoopback)
        #expect(IPAddress(parsing: "::1")!.isLoopback)
        #expect(!IPAddress(parsing: "128.0.0.1")!.isLoopback)
        #expect(!IPAddress(parsing: "::2")!.isLoopback)
        #expect(IPAddress(parsing: "::ffff:127.0.0.1")!.isLoopback)
    }
}
