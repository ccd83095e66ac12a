import ArgumentParser
import TernControl
import TernIO

/// `tern iptables`: Istio's istio-iptables for the network namespace it runs in (docs/interception.md). The rules
/// come from TernControl's `Interception`; this command finds the iptables binaries and runs them. Usage errors
/// exit 64 with one line naming the flag; a failing iptables exits 1 with its own first line of complaint.
struct IptablesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iptables",
        abstract: "Redirect this network namespace's TCP to the sidecar, as Istio's istio-iptables does: outbound to --proxy-port, inbound to --inbound-capture-port, the proxy's own uid and gid excluded.",
        discussion: "The rules are applied atomically with iptables-restore --noflush in the nat table's chains ISTIO_INBOUND, ISTIO_IN_REDIRECT, ISTIO_OUTPUT and ISTIO_REDIRECT. Running again replaces them; --cleanup removes them."
    )

    @Option(name: [.customShort("p"), .customLong("proxy-port")], help: "Port outbound TCP is redirected to.")
    var proxyPort = "15001"

    @Option(name: [.customShort("z"), .customLong("inbound-capture-port")], help: "Port inbound TCP is redirected to.")
    var inboundCapturePort = "15006"

    @Option(name: [.customShort("u"), .customLong("proxy-uid")], help: "The proxy's user id(s), comma-separated: their connections are not redirected.")
    var proxyUID = "1337"

    @Option(name: [.customShort("g"), .customLong("proxy-gid")], help: "The proxy's group id(s), comma-separated (default: the --proxy-uid values).")
    var proxyGID: String?

    @Option(name: [.customShort("b"), .customLong("inbound-ports")], help: "Inbound ports to redirect, comma-separated; '*' for all, '' for none.")
    var inboundPorts = "*"

    @Option(name: [.customShort("d"), .customLong("inbound-exclude-ports")], help: "Inbound ports not redirected with --inbound-ports '*', besides 15090, 15021, 15020, 15008 and the two proxy ports, which never are.")
    var inboundExcludePorts = ""

    @Option(name: [.customShort("i"), .customLong("outbound-ip-ranges")], help: "Outbound destinations to redirect, CIDRs comma-separated; '*' for all, '' for none.")
    var outboundIPRanges = "*"

    @Option(name: [.customShort("x"), .customLong("outbound-exclude-ip-ranges")], help: "Outbound destinations never redirected, CIDRs comma-separated.")
    var outboundExcludeIPRanges = ""

    @Option(name: [.customShort("q"), .customLong("outbound-ports")], help: "Outbound ports redirected whatever the destination address, comma-separated.")
    var outboundPorts = ""

    @Option(name: [.customShort("o"), .customLong("outbound-exclude-ports")], help: "Outbound ports never redirected, comma-separated.")
    var outboundExcludePorts = ""

    @Flag(name: .customLong("ipv6"), help: "Intercept IPv6 too, with ip6tables-restore (without it IPv6 is not intercepted).")
    var ipv6 = false

    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Print the iptables-restore input and change nothing (with --cleanup: what would be removed).")
    var dryRun = false

    @Flag(name: .customLong("cleanup"), help: "Remove Tern's chains and the jumps to them (nothing installed is fine).")
    var cleanup = false

    @Option(name: .customLong("iptables-restore"), help: "The iptables-restore binary; its *-save is expected beside it (default: iptables-legacy-restore when legacy rules exist here, else iptables-restore as Debian's alternatives choose).")
    var iptablesRestore: String?

    @Option(name: .customLong("ip6tables-restore"), help: "The ip6tables-restore binary for --ipv6 (default: the IPv6 twin of the IPv4 one).")
    var ip6tablesRestore: String?

    func validate() throws {
        _ = try interception()
        for (flag, path) in [("--iptables-restore", iptablesRestore), ("--ip6tables-restore", ip6tablesRestore)] {
            if let path, !path.hasSuffix("-restore") {
                throw ValidationError("\(flag) must name a *-restore binary (its *-save is used beside it), got '\(path)'")
            }
        }
    }

    /// The flags as an `Interception`, or the usage error naming the first bad one.
    func interception() throws(ValidationError) -> Interception {
        do throws(InterceptionError) {
            var rules = Interception()
            rules.proxyPort = try port(proxyPort, "--proxy-port")
            rules.inboundCapturePort = try port(inboundCapturePort, "--inbound-capture-port")
            if rules.proxyPort == rules.inboundCapturePort {
                throw InterceptionError("--inbound-capture-port must differ from --proxy-port (\(proxyPort)): the proxy tells inbound from outbound by the port")
            }
            rules.proxyUIDs = try Interception.ids(proxyUID, flag: "--proxy-uid")
            if let proxyGID {
                rules.proxyGIDs = try Interception.ids(proxyGID, flag: "--proxy-gid")
            } else {
                rules.proxyGIDs = rules.proxyUIDs
            }
            rules.inboundPorts = try Interception.ports(includeList: inboundPorts, flag: "--inbound-ports")
            rules.inboundExcludePorts = try Interception.ports(inboundExcludePorts, flag: "--inbound-exclude-ports")
            rules.outboundIPRanges = try Interception.ranges(includeList: outboundIPRanges, flag: "--outbound-ip-ranges")
            rules.outboundExcludeIPRanges = try Interception.ranges(outboundExcludeIPRanges, flag: "--outbound-exclude-ip-ranges")
            rules.outboundPorts = try Interception.ports(outboundPorts, flag: "--outbound-ports")
            rules.outboundExcludePorts = try Interception.ports(outboundExcludePorts, flag: "--outbound-exclude-ports")
            return rules
        } catch {
            throw ValidationError(error.description)
        }
    }

    private func port(_ text: String, _ flag: String) throws(InterceptionError) -> UInt16 {
        guard let ports = try? Interception.ports(text, flag: flag), ports.count == 1 else {
            throw InterceptionError("\(flag) must be a port from 1 to 65535, got '\(text)'")
        }
        return ports[0]
    }

    /// Runs and returns the exit status: 0, or 1 after a line on stderr.
    func runIptables() -> Int32 {
        Signals.ignoreBrokenPipe()
        do {
            if dryRun && !cleanup {
                try printDryRun()
            } else if cleanup {
                try removeRules()
            } else {
                try installRules()
            }
            return 0
        } catch {
            System.writeStderr("tern iptables: \(error.message)")
            return 1
        }
    }

    private func printDryRun() throws(IptablesFailure) {
        guard let rules = try? interception() else { return }
        print("# IPv4: iptables-restore --noflush")
        print(rules.restoreInput(.v4), terminator: "")
        if ipv6 {
            print("# IPv6: ip6tables-restore --noflush")
            print(rules.restoreInput(.v6), terminator: "")
        } else {
            print("# IPv6 is not intercepted (no --ipv6)")
        }
    }

    private func installRules() throws(IptablesFailure) {
        guard let rules = try? interception() else { return }
        let v4 = try IptablesBinaries.choose(restore: iptablesRestore)
        try v4.restore(rules.restoreInput(.v4, installed: try v4.save()))
        var done = "tern iptables: installed with \(v4.restorePath) (IPv4)"
        if ipv6 {
            let v6 = try IptablesBinaries.v6(of: v4, restore: ip6tablesRestore)
            do {
                try v6.restore(rules.restoreInput(.v6, installed: try v6.save()))
            } catch {
                throw IptablesFailure("IPv4 rules are installed, IPv6 failed: \(error.message)")
            }
            done += " and \(v6.restorePath) (IPv6)"
        } else {
            done += "; IPv6 is not intercepted (no --ipv6)"
        }
        System.writeStderr(done)
    }

    /// Removes from IPv4, and from IPv6 where ip6tables is there (a failure there only matters with --ipv6),
    /// the chains and jumps found installed; with --dry-run prints what it would run instead.
    private func removeRules() throws(IptablesFailure) {
        let v4 = try IptablesBinaries.choose(restore: iptablesRestore)
        var families: [(String, IptablesBinaries)] = [("IPv4", v4)]
        do {
            families.append(("IPv6", try IptablesBinaries.v6(of: v4, restore: ip6tablesRestore)))
        } catch {
            if ipv6 { throw error }
        }
        var summary: [String] = []
        for (name, binaries) in families {
            let installed: String
            do {
                installed = try binaries.save()
            } catch {
                if name == "IPv6" && !ipv6 { continue }
                throw error
            }
            guard let input = Interception.cleanupInput(installed: installed) else {
                summary.append("\(name): nothing installed")
                continue
            }
            if dryRun {
                print("# \(name): \(binaries.restorePath) --noflush")
                print(input, terminator: "")
            } else {
                try binaries.restore(input)
            }
            summary.append("\(name): removed")
        }
        if !dryRun { System.writeStderr("tern iptables --cleanup: " + summary.joined(separator: "; ")) }
    }
}

/// A failure at run time: one line for stderr.
struct IptablesFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// A pair of iptables binaries of one kind (legacy or nf_tables, IPv4 or IPv6): restore and its save.
struct IptablesBinaries {
    var restorePath: String
    var savePath: String

    /// How long one iptables run may take: restore waits for the xtables lock another writer holds.
    static let timeoutMillis = 30_000

    /// The pair from a restore binary's name or path; nil unless both are executables.
    init?(restore: String) {
        guard let restorePath = System.findExecutable(restore),
              let savePath = System.findExecutable(String(restore.dropLast("-restore".count)) + "-save") else { return nil }
        self.restorePath = restorePath
        self.savePath = savePath
    }

    /// `--iptables-restore` when given; else Istio's choice between the two kinds (dependencies
    /// implementation_linux.go): legacy when this namespace already has legacy rules (so ours land where the
    /// others are), else `iptables-restore` as Debian's alternatives point it, else whichever kind is installed.
    static func choose(restore override: String?) throws(IptablesFailure) -> IptablesBinaries {
        if let override {
            guard let binaries = IptablesBinaries(restore: override) else {
                throw IptablesFailure("--iptables-restore \(override): no such executable, or no *-save beside it")
            }
            return binaries
        }
        if let legacy = IptablesBinaries(restore: "iptables-legacy-restore"), let rules = try? legacy.save(), rules.contains("\n-A ") {
            return legacy
        }
        for name in ["iptables-restore", "iptables-nft-restore", "iptables-legacy-restore"] {
            if let binaries = IptablesBinaries(restore: name) { return binaries }
        }
        throw IptablesFailure("no iptables-restore found in PATH or /usr/sbin, /sbin (install Debian's iptables package, or pass --iptables-restore)")
    }

    /// The IPv6 twin of `v4` (ip6tables-nft-restore for iptables-nft-restore), or `--ip6tables-restore`.
    static func v6(of v4: IptablesBinaries, restore override: String?) throws(IptablesFailure) -> IptablesBinaries {
        let flag = override == nil ? "" : "--ip6tables-restore "
        var name = override ?? v4.restorePath
        if override == nil {
            let slash = name.lastIndex(of: "/").map { name.index(after: $0) } ?? name.startIndex
            guard name[slash...].hasPrefix("iptables") else {
                throw IptablesFailure("cannot tell the IPv6 twin of \(v4.restorePath): pass --ip6tables-restore")
            }
            name.insert("6", at: name.index(slash, offsetBy: 2))
        }
        guard let binaries = IptablesBinaries(restore: name) else {
            throw IptablesFailure("\(flag)\(name): no such executable, or no *-save beside it (IPv6)")
        }
        return binaries
    }

    /// The tables as the save binary prints them. All of them, not `-t nat`: naming a table creates it, and
    /// `--cleanup` with nothing installed must leave the namespace as it found it.
    func save() throws(IptablesFailure) -> String {
        let result = try run(savePath, [], input: [])
        return String(decoding: result.output, as: UTF8.self)
    }

    /// Applies `input` in one commit, leaving rules outside it alone.
    func restore(_ input: String) throws(IptablesFailure) {
        _ = try run(restorePath, ["--noflush"], input: Array(input.utf8))
    }

    private func run(_ path: String, _ arguments: [String], input: [UInt8]) throws(IptablesFailure) -> System.ProcessResult {
        let result: System.ProcessResult
        do {
            result = try System.run(path, arguments, input: input, timeoutMillis: Self.timeoutMillis)
        } catch {
            throw IptablesFailure("\(error)")
        }
        guard result.status == 0 else {
            let complaint = String(decoding: result.errors, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "no message"
            throw IptablesFailure("\(path) \(arguments.joined(separator: " ")) failed (exit \(result.status)): \(complaint)")
        }
        return result
    }
}
