// Trace context (../shared/reference/istio.md §6): the ids a request arrives with, the sampling decision, and the
// context of the proxy's own span, whose id the forwarded request carries as its parent. Plain values: nothing
// here allocates, reads a clock or draws randomness of its own (the caller passes a generator it owns).

/// The propagation styles a request carried (and the proxied request carries on): W3C Trace Context, B3 multi
/// (`x-b3-*` fields), B3 single (`b3`).
public struct TraceStyles: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let w3c = TraceStyles(rawValue: 1 << 0)
    public static let b3Multi = TraceStyles(rawValue: 1 << 1)
    public static let b3Single = TraceStyles(rawValue: 1 << 2)
}

/// A position in a trace: the 128-bit trace id, a span id, its parent, and the sampling state.
///
/// As parsed from a request (`TraceHeaders`), `spanID` is the caller's span and `parentSpanID` is its parent when
/// B3 says so; `hasIDs` is false when nothing valid came (then only `sampled`/`debug` may be set, by B3's
/// sampling-only forms `b3: 0` or a lone `x-b3-sampled`). As returned by `child`, it is the proxy's span.
public struct TraceContext: Equatable, Sendable {
    public var traceIDHigh: UInt64 = 0
    public var traceIDLow: UInt64 = 0
    public var spanID: UInt64 = 0
    /// 0: none (a root span).
    public var parentSpanID: UInt64 = 0
    /// nil: the caller deferred the decision.
    public var sampled: Bool? = nil
    /// B3 debug (`x-b3-flags: 1`, `b3: …-d`): sampled, and forwarded as debug.
    public var debug = false
    /// The trace id came as 16 hex digits (a 64-bit B3 trace id): B3 fields and Zipkin carry it so again.
    public var shortTraceID = false
    /// Which styles the request's fields used (valid or not): the proxied request carries the same B3 style.
    public var styles: TraceStyles = []
    /// A valid tracestate came with the valid traceparent this context continues: forward it unchanged.
    public var forwardsTraceState = false

    public init() {}

    public init(traceIDHigh: UInt64, traceIDLow: UInt64, spanID: UInt64, parentSpanID: UInt64 = 0,
                sampled: Bool? = nil, debug: Bool = false, styles: TraceStyles = [])
    {
        self.traceIDHigh = traceIDHigh
        self.traceIDLow = traceIDLow
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        self.debug = debug
        self.styles = styles
    }

    /// Both ids are present (neither all zeros).
    public var hasIDs: Bool { (traceIDHigh | traceIDLow) != 0 && spanID != 0 }

    /// The context of the proxy's span for a request that arrived with `self`: the same trace (a new one when
    /// the request brought no valid ids), a new span id, the caller's span as parent, and the sampling
    /// decision (`sampler`, honouring the caller's). Draws 1 random number, 4 for a new trace. Inlinable, so the
    /// proxy's generator is called directly rather than through its protocol witness.
    @inlinable
    public func child(sampler: TraceSampler, using random: inout some RandomNumberGenerator) -> TraceContext {
        var out = TraceContext()
        out.styles = styles
        out.debug = debug
        if hasIDs {
            out.traceIDHigh = traceIDHigh
            out.traceIDLow = traceIDLow
            out.parentSpanID = spanID
            out.shortTraceID = shortTraceID
            out.forwardsTraceState = forwardsTraceState
        } else {
            // A new trace: 128 random bits (W3C §3.2.2.3 asks for randomness in the right-most 7 bytes at least).
            repeat {
                out.traceIDHigh = random.next()
                out.traceIDLow = random.next()
            } while (out.traceIDHigh | out.traceIDLow) == 0
        }
        repeat { out.spanID = random.next() } while out.spanID == 0 || out.spanID == spanID
        out.sampled = sampler.decide(incoming: sampled, debug: debug, random: random.next())
        return out
    }
}

/// The sampling decision for requests that do not bring one: `percent` of them (Istio's
/// `PILOT_TRACE_SAMPLING`, default 1 %), drawn from the caller's random numbers. `x-request-id` plays no part.
public struct TraceSampler: Sendable, Equatable {
    /// A request is sampled when its random number is below this; nil: every request (100 %).
    public let threshold: UInt64?
    public let percent: Double

    /// `percent` is clamped to 0…100 (NaN is 0).
    public init(percent: Double = 1.0) {
        let p = percent.isNaN ? 0 : min(max(percent, 0), 100)
        self.percent = p
        if p >= 100 {
            threshold = nil
        } else {
            // p/100 × 2^64, computed in Double (exact enough: the rate is what matters, not the last bit).
            threshold = UInt64(min(p / 100 * 18_446_744_073_709_551_616.0, 18_446_744_073_709_549_568.0))
        }
    }

    /// The caller's decision when it sent one (debug implies sampled); otherwise a draw.
    @inlinable
    public func decide(incoming: Bool?, debug: Bool = false, random: UInt64) -> Bool {
        if debug { return true }
        if let incoming { return incoming }
        guard let threshold else { return true }
        return random < threshold
    }
}
