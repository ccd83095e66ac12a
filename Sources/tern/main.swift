// tern: the command line. Usage errors print one line naming the flag and exit 64; runtime failures
// exit 1; a normal stop exits 0.
import ArgumentParser
import Glibc
import TernIO

struct Tern: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "Tern, a service-mesh sidecar proxy.",
        version: TernVersion.string,
        subcommands: [ProxyCommand.self, ValidateCommand.self, CertCommand.self, IptablesCommand.self]
    )
}

enum TernVersion {
    static let string = "0.1.0"
}

do {
    var command = try Tern.parseAsRoot()
    if var proxy = command as? ProxyCommand {
        exit(proxy.runProxy())
    }
    if let validate = command as? ValidateCommand {
        exit(validate.runValidate())
    }
    if let iptables = command as? IptablesCommand {
        exit(iptables.runIptables())
    }
    if let cert = command as? any CertSubcommand {
        exit(cert.runAndReport())
    }
    try command.run()
} catch {
    let code = Tern.exitCode(for: error)
    if code == .success {
        Tern.exit(withError: error)  // --help, --version
    }
    let message = Tern.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid usage"
    let line = message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message
    System.writeStderr("tern: " + line)
    exit(code == .validationFailure ? 64 : code.rawValue)
}
