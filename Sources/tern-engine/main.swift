// tern-engine: the serving process of `tern proxy`, which validates the flags and executes this binary
// with them encoded as `__serve-proxy key=value ...`. It links no argument parser, so an idle sidecar stays
// small (Sources/TernProxy/Server/ProxySettings+Encoding.swift). Not meant to be run by hand.
import Glibc
import TernIO
import TernProxy

let arguments = CommandLine.arguments
guard arguments.count >= 2, arguments[1] == ProxySettings.serveCommand else {
    System.writeStderr("tern-engine: run `tern proxy` instead (tern-engine is the process it hands over to)")
    exit(64)
}
do {
    let settings = try ProxySettings(decoding: Array(arguments.dropFirst(2)))
    exit(ProxyServer(settings: settings).run())
} catch {
    System.writeStderr("tern-engine: internal error: \(error.description)")
    exit(70)
}
