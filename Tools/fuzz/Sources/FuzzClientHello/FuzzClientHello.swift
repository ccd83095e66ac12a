// libFuzzer target for the ClientHello reader that routes TLS connections by server name (TernTLS.ClientHello).
// Besides "never crash": the verdict does not depend on how many bytes have arrived, beyond the one step from
// `incomplete` to an answer (a prefix of a ClientHello is `incomplete` or the same answer as the whole; never
// `notTLS` where the whole is a ClientHello, nor a different name).
import TernTLS

func read(_ bytes: [UInt8]) -> (ClientHelloResult, [UInt8]) {
    var name = [UInt8](repeating: 0, count: ClientHello.maxNameLength)
    var out = name.mutableSpan
    let r = ClientHello.serverName(in: bytes.span, into: &out)
    if case .complete(let n) = r { return (r, Array(name[0..<n])) }
    return (r, [])
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let whole = read(input)
    guard !input.isEmpty else { return 0 }
    let cut = Int(input[0]) * 7 % input.count
    let prefix = read(Array(input[0..<cut]))
    switch prefix.0 {
    case .incomplete:
        break
    case .notTLS:
        if whole.0 != .notTLS { fatalError("a prefix of \(cut) bytes is not TLS, the whole is \(whole.0)") }
    case .complete:
        if prefix.0 != whole.0 || prefix.1 != whole.1 {
            fatalError("a prefix of \(cut) bytes reads \(prefix), the whole \(whole)")
        }
    }
    return 0
}
