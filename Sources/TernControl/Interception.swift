// Traffic interception for a sidecar (docs/interception.md): the nat-table rules of Istio's `istio-iptables`
// (tools/istio-iptables/pkg/capture/run.go, REDIRECT mode), generated as `iptables-restore` input. Pure: it never
// runs iptables, reads no file and opens no socket; `tern iptables` runs the restore binaries with this text.
import TernConfig

/// A bad interception setting: the flag and what is wrong with its value, one line.
public struct InterceptionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What a network namespace's TCP is redirected to the sidecar for, as istio-iptables' flags say it.
public struct Interception: Sendable, Equatable {
    /// Ports named by an include list: all (`*`), or only these (an empty list captures nothing).
    public enum Ports: Sendable, Equatable {
        case all
        case only([UInt16])
    }

    /// Destination ranges named by an include list: all (`*`), or only these (empty: none).
    public enum Ranges: Sendable, Equatable {
        case all
        case only([CIDRRange])
    }

    public enum Family: Sendable {
        case v4, v6
    }

    /// Istio's chains in the nat table, in the order they are declared. Everything Tern installs is one of these
    /// or a jump to one from a built-in chain, which is what `--cleanup` removes.
    public static let chains = ["ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"]

    /// Istio's HBONE tunnel port: istio-iptables always lets inbound connections to it through and never sends
    /// the proxy's own loopback connections to it back to the inbound listener.
    public static let tunnelPort: UInt16 = 15008

    /// Ports the sidecar injector always passes in `-d`: Envoy's Prometheus (15090) and health (15021)
    /// ports and the agent's status port (15020).
    public static let istioExcludedInboundPorts: [UInt16] = [15090, 15021, 15020]

    /// `-p`: where outbound connections go (Istio's virtualOutbound listener).
    public var proxyPort: UInt16 = 15001
    /// `-z`: where inbound connections go (Istio's virtualInbound listener).
    public var inboundCapturePort: UInt16 = 15006
    /// `-u`: the proxy's own users, whose connections are never redirected outward.
    public var proxyUIDs: [UInt32] = [1337]
    /// `-g`: the proxy's own groups, likewise.
    public var proxyGIDs: [UInt32] = [1337]
    /// `-b`: inbound destination ports to redirect.
    public var inboundPorts: Ports = .all
    /// `-d`: inbound ports left alone when `inboundPorts` is `.all`, besides those `excludedInboundPorts` adds.
    public var inboundExcludePorts: [UInt16] = []
    /// `-i`: outbound destinations to redirect.
    public var outboundIPRanges: Ranges = .all
    /// `-x`: outbound destinations left alone (checked before `-i`).
    public var outboundExcludeIPRanges: [CIDRRange] = []
    /// `-q`: outbound destination ports redirected whatever their address (checked after `-x`, before `-i`).
    public var outboundPorts: [UInt16] = []
    /// `-o`: outbound destination ports left alone (checked first).
    public var outboundExcludePorts: [UInt16] = []

    public init() {}

    /// The inbound ports never redirected with `-b '*'`: Istio's own, the proxy's two listener ports (a connection
    /// made straight to one is already the proxy's), then the user's `-d`, without repeats.
    public var excludedInboundPorts: [UInt16] {
        var seen = Set<UInt16>()
        return (Self.istioExcludedInboundPorts + [proxyPort, inboundCapturePort] + inboundExcludePorts)
            .filter { seen.insert($0).inserted }
    }

    // MARK: - Rules

    /// The rules for one address family as the lines of the nat table's `iptables-restore` block, without
    /// `*nat` and `COMMIT`: chain declarations (`:CHAIN - [0:0]`, which create a chain or, under `--noflush`,
    /// empty an existing one), then the rules in istio-iptables' order.
    public func rules(_ family: Family) -> [String] {
        let v6 = family == .v6
        let loopback = v6 ? "::1/128" : "127.0.0.1/32"
        let passthroughSource = v6 ? "::6/128" : "127.0.0.6/32"
        let tunnel = String(Self.tunnelPort)
        var lines = Self.chains.map { ":\($0) - [0:0]" }
        func add(_ chain: String, _ spec: String) { lines.append("-A \(chain) \(spec)") }

        add("ISTIO_INBOUND", "-p tcp --dport \(tunnel) -j RETURN")
        add("ISTIO_REDIRECT", "-p tcp -j REDIRECT --to-ports \(proxyPort)")
        add("ISTIO_IN_REDIRECT", "-p tcp -j REDIRECT --to-ports \(inboundCapturePort)")

        // Inbound: PREROUTING sees connections arriving from other hosts.
        switch inboundPorts {
        case .all:
            add("PREROUTING", "-p tcp -j ISTIO_INBOUND")
            for port in excludedInboundPorts { add("ISTIO_INBOUND", "-p tcp --dport \(port) -j RETURN") }
            add("ISTIO_INBOUND", "-p tcp -j ISTIO_IN_REDIRECT")
        case .only(let ports) where !ports.isEmpty:
            add("PREROUTING", "-p tcp -j ISTIO_INBOUND")
            for port in ports { add("ISTIO_INBOUND", "-p tcp --dport \(port) -j ISTIO_IN_REDIRECT") }
        case .only:
            break
        }

        // Outbound: OUTPUT sees connections made in the namespace, the app's and the proxy's.
        add("OUTPUT", "-j ISTIO_OUTPUT")
        for port in outboundExcludePorts { add("ISTIO_OUTPUT", "-p tcp --dport \(port) -j RETURN") }
        // The proxy's inbound side connects to the app from 127.0.0.6 (Istio 1.10+): never intercepted.
        add("ISTIO_OUTPUT", "-o lo -s \(passthroughSource) -j RETURN")
        let includesLoopback: Bool
        switch outboundIPRanges {
        case .all: includesLoopback = false
        case .only(let ranges): includesLoopback = ranges.contains { $0.base.isLoopback }
        }
        for (option, id) in proxyUIDs.map({ ("--uid-owner", $0) }) + proxyGIDs.map({ ("--gid-owner", $0) }) {
            // The proxy calling its own pod's address over lo (app → proxy → proxy → same app, by a service
            // address) is an inbound connection: to the inbound listener.
            add("ISTIO_OUTPUT", "-o lo ! -d \(loopback) -p tcp ! --dport \(tunnel) -m owner \(option) \(id) -j ISTIO_IN_REDIRECT")
            // The app calling its own pod's address over lo stays local, unless loopback was asked for in -i.
            if !includesLoopback { add("ISTIO_OUTPUT", "-o lo -m owner ! \(option) \(id) -j RETURN") }
            // Anything else the proxy sends goes out as it is: redirecting it would loop.
            add("ISTIO_OUTPUT", "-m owner \(option) \(id) -j RETURN")
        }
        // Calls to localhost (the app's own sidecar-aware calls, container to container) are left alone.
        add("ISTIO_OUTPUT", "-d \(loopback) -j RETURN")
        for range in outboundExcludeIPRanges where range.base.isV6 == v6 { add("ISTIO_OUTPUT", "-d \(range) -j RETURN") }
        for port in outboundPorts { add("ISTIO_OUTPUT", "-p tcp --dport \(port) -j ISTIO_REDIRECT") }
        switch outboundIPRanges {
        case .all:
            add("ISTIO_OUTPUT", "-j ISTIO_REDIRECT")
        case .only(let ranges):
            for range in ranges where range.base.isV6 == v6 { add("ISTIO_OUTPUT", "-d \(range) -j ISTIO_REDIRECT") }
        }
        return lines
    }

    /// The `iptables-restore --noflush` input that installs the rules for `family` in one commit. `installed` is
    /// the namespace's current `iptables-save` output: the jumps to Istio's chains it shows are deleted first,
    /// so that running again replaces the rules rather than adding a second jump (the chains themselves are
    /// emptied by their declarations). With `installed` empty it is what `--dry-run` prints.
    public func restoreInput(_ family: Family, installed: String = "") -> String {
        let lines = rules(family)
        let jumps: [String] = Self.installed(in: installed).jumps.map { "-D " + $0 }
        let declarations = Array(lines.prefix(Self.chains.count))
        let rest = Array(lines.dropFirst(Self.chains.count))
        return Self.block(declarations + jumps + rest)
    }

    /// The `iptables-restore --noflush` input that removes what `restoreInput` installed, found in the current
    /// `iptables-save` output: each jump to an Istio chain from another chain, then the chains (declared first,
    /// which empties them, so `-X` finds them unreferenced and empty). nil when nothing is installed.
    public static func cleanupInput(installed: String) -> String? {
        let found = Self.installed(in: installed)
        if found.chains.isEmpty && found.jumps.isEmpty { return nil }
        let declarations: [String] = found.chains.map { ":\($0) - [0:0]" }
        let deletions: [String] = found.jumps.map { "-D " + $0 }
        let removals: [String] = found.chains.map { "-X " + $0 }
        return block(declarations + deletions + removals)
    }

    static func block(_ lines: some Sequence<String>) -> String {
        (["*nat"] + lines + ["COMMIT"]).joined(separator: "\n") + "\n"
    }

    /// In `iptables-save` output's nat table: the Istio chains declared (in `chains` order) and the rules of
    /// other chains that jump or go to one, each as its chain and rule specification, as saved.
    static func installed(in save: String) -> (chains: [String], jumps: [String]) {
        var declared = Set<String>()
        var jumps: [String] = []
        var inNat = false
        for line in save.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("*") {
                inNat = line == "*nat"
                continue
            }
            guard inNat else { continue }
            if line.hasPrefix(":") {
                let name = String(line.dropFirst().prefix { $0 != " " })
                if chains.contains(name) { declared.insert(name) }
            } else if line.hasPrefix("-A ") {
                let words = line.split(separator: " ")
                guard words.count >= 2, !chains.contains(String(words[1])) else { continue }
                let targets = zip(words, words.dropFirst()).filter { $0.0 == "-j" || $0.0 == "-g" }.map { String($0.1) }
                if targets.contains(where: chains.contains) { jumps.append(String(line.dropFirst(3))) }
            }
        }
        return (chains.filter(declared.contains), jumps)
    }

    // MARK: - Flag values

    /// A `-b` value: `*`, or ports separated by commas (empty: no inbound capture).
    public static func ports(includeList text: String, flag: String) throws(InterceptionError) -> Ports {
        text.trimmed == "*" ? .all : .only(try ports(text, flag: flag))
    }

    /// A list of ports separated by commas (spaces around them allowed, repeats dropped); empty for "".
    public static func ports(_ text: String, flag: String) throws(InterceptionError) -> [UInt16] {
        var seen = Set<UInt16>()
        var ports: [UInt16] = []
        for item in items(text) {
            guard item.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), item.utf8.count <= 5, let n = Int(item), (1...65535).contains(n) else {
                throw InterceptionError("\(flag) must be ports from 1 to 65535 separated by commas\(flag == "--inbound-ports" ? ", or '*'" : ""), got '\(item)' in '\(text)'")
            }
            if seen.insert(UInt16(n)).inserted { ports.append(UInt16(n)) }
        }
        return ports
    }

    /// An `-i` value: `*`, or CIDR ranges separated by commas (empty: no outbound capture).
    public static func ranges(includeList text: String, flag: String) throws(InterceptionError) -> Ranges {
        text.trimmed == "*" ? .all : .only(try ranges(text, flag: flag))
    }

    /// CIDR ranges (IPv4 or IPv6, a bare address meaning itself alone) separated by commas; host bits are
    /// cleared as iptables clears them.
    public static func ranges(_ text: String, flag: String) throws(InterceptionError) -> [CIDRRange] {
        var ranges: [CIDRRange] = []
        for item in items(text) {
            do {
                let range = try CIDRRange(parsing: item)
                if !ranges.contains(range) { ranges.append(range) }
            } catch {
                throw InterceptionError("\(flag): \(error)")
            }
        }
        return ranges
    }

    /// `-u`/`-g`: numeric user or group ids separated by commas, at least one.
    public static func ids(_ text: String, flag: String) throws(InterceptionError) -> [UInt32] {
        let list = items(text)
        var ids: [UInt32] = []
        for item in list {
            // 4294967295 is (uid_t)-1, "no id", which no process runs as.
            guard item.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = UInt32(item), n != UInt32.max else {
                throw InterceptionError("\(flag) must be numeric ids from 0 to 4294967294 separated by commas, got '\(item)' in '\(text)'")
            }
            if !ids.contains(n) { ids.append(n) }
        }
        if ids.isEmpty { throw InterceptionError("\(flag) must name at least one numeric id, got '\(text)'") }
        return ids
    }

    static func items(_ text: String) -> [String] {
        text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmed }.filter { !$0.isEmpty }
    }
}

extension String {
    fileprivate var trimmed: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
