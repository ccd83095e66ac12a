import Testing
import TernConfig
import TernControl

/// The interception rules `tern iptables` installs, as exact `iptables-restore` text: istio-iptables' nat rules in
/// REDIRECT mode (its capture/testdata goldens, with the injector's `-b '*' -d 15090,15021,15020`), each include
/// and exclude flag, replacing and removing what is installed, and the flag values refused.
struct InterceptionTests {
    static let chains = [":ISTIO_INBOUND - [0:0]", ":ISTIO_REDIRECT - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]"]

    /// The rules every configuration starts with.
    static let head = chains + [
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    ]

    static let inboundAll = [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN",
        "-A ISTIO_INBOUND -p tcp --dport 15006 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    ]

    static let owners = [
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
    ]

    /// The outbound rules up to and including the localhost exemption, for the default proxy ids.
    static let outboundHead = ["-A OUTPUT -j ISTIO_OUTPUT", "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN"] + owners
        + ["-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"]

    /// The IPv4 rules: `head`, then `inbound`, `outboundHead` and `tail`.
    static func expected(inbound: [String] = inboundAll, tail: [String] = ["-A ISTIO_OUTPUT -j ISTIO_REDIRECT"]) -> [String] {
        head + inbound + outboundHead + tail
    }

    static func block(_ lines: [String]) -> String {
        (["*nat"] + lines + ["COMMIT"]).joined(separator: "\n") + "\n"
    }

    @Test func defaultsRedirectAllTCPBothWaysExceptTheProxysOwn() {
        #expect(Interception().rules(.v4) == Self.expected())
        #expect(Interception().restoreInput(.v4) == Self.block(Self.expected()))
    }

    @Test func ipv6UsesTheIPv6LoopbackAndPassthroughAddresses() {
        let expected = Self.head + Self.inboundAll + [
            "-A OUTPUT -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ]
        #expect(Interception().rules(.v6) == expected)
    }

    @Test func proxyPortsUIDsAndGIDsAreTheOnesGiven() throws {
        var rules = Interception()
        rules.proxyPort = 7001
        rules.inboundCapturePort = 7006
        rules.proxyUIDs = try Interception.ids("101", flag: "--proxy-uid")
        rules.proxyGIDs = try Interception.ids("202, 203", flag: "--proxy-gid")
        let lines = rules.rules(.v4)
        #expect(lines.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 7001"))
        #expect(lines.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7006"))
        #expect(lines.contains("-A ISTIO_INBOUND -p tcp --dport 7001 -j RETURN"))
        #expect(lines.contains("-A ISTIO_INBOUND -p tcp --dport 7006 -j RETURN"))
        #expect(!lines.contains { $0.contains("1337") })
        #expect(lines.filter { $0.contains("owner") } == [
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 101 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 101 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 101 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 202 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 202 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 202 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 203 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 203 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 203 -j RETURN",
        ])
    }

    @Test func inboundExcludePortsComeAfterTheOnesAlwaysExcluded() throws {
        var rules = Interception()
        rules.inboundExcludePorts = try Interception.ports("22, 15021,8080", flag: "--inbound-exclude-ports")
        let added = ["-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN", "-A ISTIO_INBOUND -p tcp --dport 8080 -j RETURN"]
        #expect(rules.rules(.v4) == Self.expected(inbound: Self.inboundAll.dropLast() + added + Self.inboundAll.suffix(1)))
    }

    @Test func inboundPortsListRedirectsOnlyThosePorts() throws {
        var rules = Interception()
        rules.inboundPorts = try Interception.ports(includeList: "8080,9090", flag: "--inbound-ports")
        #expect(rules.rules(.v4) == Self.expected(inbound: [
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT",
        ]))
    }

    @Test func emptyInboundPortsCaptureNoInbound() throws {
        var rules = Interception()
        rules.inboundPorts = try Interception.ports(includeList: "", flag: "--inbound-ports")
        #expect(rules.inboundPorts == .only([]))
        #expect(rules.rules(.v4) == Self.expected(inbound: []))
    }

    @Test func outboundIPRangesRedirectOnlyThoseOfTheFamily() throws {
        var rules = Interception()
        rules.outboundIPRanges = try Interception.ranges(includeList: "10.0.0.0/8, 172.16.1.2/12,fd00::/8", flag: "-i")
        #expect(rules.rules(.v4) == Self.expected(tail: [
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -d 172.16.0.0/12 -j ISTIO_REDIRECT",
        ]))
        #expect(rules.rules(.v6).suffix(2) == ["-A ISTIO_OUTPUT -d ::1/128 -j RETURN", "-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT"])
    }

    @Test func emptyOutboundIPRangesCaptureNoOutbound() throws {
        var rules = Interception()
        rules.outboundIPRanges = try Interception.ranges(includeList: "", flag: "-i")
        #expect(rules.rules(.v4) == Self.expected(tail: []))
    }

    @Test func aLoopbackRangeInOutboundIPRangesKeepsTheAppsLoopbackCallsRedirected() throws {
        var rules = Interception()
        rules.outboundIPRanges = try Interception.ranges(includeList: "127.0.0.0/8,10.0.0.0/8", flag: "-i")
        let lines = rules.rules(.v4)
        #expect(!lines.contains { $0.contains("-o lo -m owner !") })
        #expect(lines.suffix(2) == ["-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT", "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"])
    }

    @Test func outboundExcludesComeBeforeTheIncludes() throws {
        var rules = Interception()
        rules.outboundExcludeIPRanges = try Interception.ranges("169.254.169.254, 10.96.0.0/12, fd00::1", flag: "-x")
        rules.outboundPorts = try Interception.ports("3306", flag: "-q")
        rules.outboundExcludePorts = try Interception.ports("5432,6379", flag: "-o")
        let outbound = [
            "-A OUTPUT -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 6379 -j RETURN",
            "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        ] + Self.owners + [
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 3306 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ]
        #expect(rules.rules(.v4) == Self.head + Self.inboundAll + outbound)
        #expect(rules.rules(.v6).contains("-A ISTIO_OUTPUT -d fd00::1/128 -j RETURN"))
        #expect(!rules.rules(.v6).contains { $0.contains("169.254") })
    }

    // MARK: - Replacing and removing

    static let installedSave = """
        # Generated by iptables-nft-save v1.8.9 (nf_tables) on Mon Dec  7 20:45:27 2026
        *filter
        :INPUT ACCEPT [0:0]
        -A INPUT -j ISTIO_OUTPUT
        COMMIT
        *nat
        :PREROUTING ACCEPT [0:0]
        :INPUT ACCEPT [0:0]
        :OUTPUT ACCEPT [0:0]
        :POSTROUTING ACCEPT [0:0]
        :ISTIO_INBOUND - [0:0]
        :ISTIO_IN_REDIRECT - [0:0]
        :ISTIO_OUTPUT - [0:0]
        :ISTIO_REDIRECT - [0:0]
        :MINE - [0:0]
        -A PREROUTING -p tcp -j ISTIO_INBOUND
        -A PREROUTING -d 10.9.9.9/32 -j MINE
        -A OUTPUT -j ISTIO_OUTPUT
        -A OUTPUT -p tcp -m comment --comment "keep me" -j RETURN
        -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
        -A ISTIO_OUTPUT -j ISTIO_REDIRECT
        -A MINE -p tcp -g ISTIO_REDIRECT
        COMMIT
        # Completed on Mon Dec  7 20:45:27 2026

        """

    @Test func reapplyingDeletesTheJumpsAlreadyThereInTheSameCommit() {
        let input = Interception().restoreInput(.v4, installed: Self.installedSave)
        let lines = input.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(8)) == ["*nat"] + Self.chains + [
            "-D PREROUTING -p tcp -j ISTIO_INBOUND",
            "-D OUTPUT -j ISTIO_OUTPUT",
            "-D MINE -p tcp -g ISTIO_REDIRECT",
        ])
        #expect(Array(lines.dropFirst(8)) == Array(Interception().restoreInput(.v4).split(separator: "\n").map(String.init).dropFirst(5)))
    }

    @Test func cleanupRemovesExactlyTheIstioChainsAndTheJumpsToThem() {
        #expect(Interception.cleanupInput(installed: Self.installedSave) == Self.block([
            ":ISTIO_INBOUND - [0:0]", ":ISTIO_REDIRECT - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]",
            "-D PREROUTING -p tcp -j ISTIO_INBOUND",
            "-D OUTPUT -j ISTIO_OUTPUT",
            "-D MINE -p tcp -g ISTIO_REDIRECT",
            "-X ISTIO_INBOUND", "-X ISTIO_REDIRECT", "-X ISTIO_IN_REDIRECT", "-X ISTIO_OUTPUT",
        ]))
    }

    @Test func cleanupWithNothingInstalledHasNothingToDo() {
        let empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n"
        #expect(Interception.cleanupInput(installed: empty) == nil)
        #expect(Interception.cleanupInput(installed: "") == nil)
    }

    @Test func cleanupOfAPartialInstallRemovesWhatIsThere() {
        let partial = "*nat\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n"
        #expect(Interception.cleanupInput(installed: partial) == Self.block([":ISTIO_OUTPUT - [0:0]", "-X ISTIO_OUTPUT"]))
    }

    // MARK: - Bad values

    @Test(arguments: [
        ("0", "--proxy-port must be ports from 1 to 65535 separated by commas, got '0' in '0'"),
        ("65536", "--proxy-port must be ports from 1 to 65535 separated by commas, got '65536' in '65536'"),
        ("80,x", "--proxy-port must be ports from 1 to 65535 separated by commas, got 'x' in '80,x'"),
        ("-1", "--proxy-port must be ports from 1 to 65535 separated by commas, got '-1' in '-1'"),
        ("8000:9000", "--proxy-port must be ports from 1 to 65535 separated by commas, got '8000:9000' in '8000:9000'"),
        ("*", "--proxy-port must be ports from 1 to 65535 separated by commas, got '*' in '*'"),
    ])
    func badPortsAreRefusedNamingTheFlag(_ text: String, _ message: String) {
        #expect(throws: InterceptionError(message)) { try Interception.ports(text, flag: "--proxy-port") }
    }

    @Test func badInboundPortsMentionTheWildcard() {
        #expect(throws: InterceptionError("--inbound-ports must be ports from 1 to 65535 separated by commas, or '*', got '**' in '**'")) {
            try Interception.ports(includeList: "**", flag: "--inbound-ports")
        }
    }

    @Test(arguments: ["10.0.0.0/33", "10.0.0/8", "10.0.0.0/", "*", "fd00::/129", "example.com", "10.0.0.0/08", "1.2.3.4/-1"])
    func badRangesAreRefusedNamingTheFlag(_ text: String) throws {
        let error = try #require(throws: InterceptionError.self) { try Interception.ranges("10.1.0.0/16," + text, flag: "--outbound-exclude-ip-ranges") }
        #expect(error.description.hasPrefix("--outbound-exclude-ip-ranges: \"\(text)\""))
    }

    @Test(arguments: ["", "x", "-1", "4294967295", "1337,abc", " , "])
    func badIDsAreRefusedNamingTheFlag(_ text: String) throws {
        let error = try #require(throws: InterceptionError.self) { try Interception.ids(text, flag: "--proxy-uid") }
        #expect(error.description.hasPrefix("--proxy-uid must "))
    }

    @Test func listsAreTrimmedAndRepeatsDropped() throws {
        #expect(try Interception.ports(" 80 , 443,80,", flag: "-q") == [80, 443])
        #expect(try Interception.ids("0", flag: "-u") == [0])
        #expect(try Interception.ranges("10.0.0.1/8,10.0.0.0/8", flag: "-x").map(\.description) == ["10.0.0.0/8"])
        #expect(try Interception.ranges(includeList: " * ", flag: "-i") == .all)
    }
}
