// Glue between a parsed request head and the tracing pieces of TernTelemetry, for the HTTP proxy's reactors.
import TernHTTP
import TernTelemetry

/// The reactors' SplitMix draws the trace and span ids (`TraceContext.child(sampler:using:)`).
extension SplitMix: RandomNumberGenerator {}

extension TraceHeaders {
    /// The trace fields of a parsed request head (`bytes` are the bytes it was parsed from). Each tracestate
    /// value is also appended to `capture` (slot `slot`, field `.traceState`, joined with ","), where
    /// `TraceContext.writeFields(traceStateFrom:slot:_:)` reads it when the head is forwarded.
    public init(head: HTTP1Head, bytes: borrowing Span<UInt8>, capture: RequestCapture? = nil, slot: Int = 0) {
        self.init()
        capture?.clear(slot, .traceState)
        for i in head.fields.indices {
            let field = head.fields[i]
            switch field.known {
            case .traceparent, .b3, .xB3:
                add(name: field.name, value: field.value, in: bytes)
            case .tracestate:
                add(name: field.name, value: field.value, in: bytes)
                capture?.append(slot, .traceState, bytes.extracting(field.value))
            default:
                break
            }
        }
    }
}
