import Glibc
import TernTelemetry
import Testing

/// The context a request with these fields carries.
func traceContext(_ fields: [(String, String)]) -> TraceContext {
    var h = TraceHeaders()
    for (name, value) in fields {
        let n = Array(name.utf8), v = Array(value.utf8)
        h.add(name: n.span, value: v.span)
    }
    return h.context
}

/// The proxy span's field lines as text.
func fieldLines(_ c: TraceContext, traceState: String = "") -> String {
    var out: [UInt8] = []
    let ts = Array(traceState.utf8)
    c.writeFields(traceState: ts.span) { out.append($0) }
    return String(decoding: out, as: UTF8.self)
}

/// SplitMix64, as the proxy's reactors own one.
struct TestRandom: RandomNumberGenerator {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
let parentHex = "00f067aa0ba902b7"

@Suite struct TraceparentTests {
    @Test func validTraceparentGivesIdsAndSampledFlag() {
        let c = traceContext([("traceparent", "00-\(traceHex)-\(parentHex)-01")])
        #expect(c.hasIDs)
        #expect(c.traceIDHigh == 0x4bf9_2f35_77b3_4da6 && c.traceIDLow == 0xa3ce_929d_0e0e_4736)
        #expect(c.spanID == 0x00f0_67aa_0ba9_02b7 && c.parentSpanID == 0)
        #expect(c.sampled == true && !c.debug && !c.shortTraceID)
        #expect(c.styles == .w3c)
    }

    @Test func flagsAreAMask() {
        #expect(traceContext([("traceparent", "00-\(traceHex)-\(parentHex)-00")]).sampled == false)
        #expect(traceContext([("traceparent", "00-\(traceHex)-\(parentHex)-03")]).sampled == true)
        #expect(traceContext([("traceparent", "00-\(traceHex)-\(parentHex)-02")]).sampled == false)
        #expect(traceContext([("TraceParent", "00-\(traceHex)-\(parentHex)-09")]).sampled == true)
    }

    @Test(arguments: [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // uppercase
        "00-\(traceHex)-00F067AA0BA902B7-01",  // uppercase parent
        "00-\(traceHex)-\(parentHex)-0A",  // uppercase flags
        "ff-\(traceHex)-\(parentHex)-01",  // version ff
        "0g-\(traceHex)-\(parentHex)-01",  // version not hex
        "00-00000000000000000000000000000000-\(parentHex)-01",  // zero trace id
        "00-\(traceHex)-0000000000000000-01",  // zero parent id
        "00-\(traceHex)-\(parentHex)-01-extra",  // version 00 with more
        "00-\(traceHex)-\(parentHex)-1",  // short
        "00-\(traceHex)-\(parentHex)",  // no flags
        "00_\(traceHex)_\(parentHex)_01",  // wrong separators
        "00-\(traceHex)x-\(parentHex)-01",  // trace id too long
        "00-\(traceHex)-\(parentHex)-0x",  // flags not hex
        "01-\(traceHex)-\(parentHex)-01x",  // future version: byte 55 must be a dash
        "",
        "garbage",
    ])
    func invalidTraceparentMeansNoContext(_ value: String) {
        let c = traceContext([("traceparent", value)])
        #expect(!c.hasIDs)
        #expect(c.sampled == nil)
        #expect(c.styles == .w3c)  // it was present: the proxy still writes traceparent for its new trace
    }

    @Test func futureVersionIsReadAsVersion00() {
        let c = traceContext([("traceparent", "cc-\(traceHex)-\(parentHex)-01-what-the-future-will-be-like")])
        #expect(c.hasIDs && c.spanID == 0x00f0_67aa_0ba9_02b7 && c.sampled == true)
        #expect(traceContext([("traceparent", "01-\(traceHex)-\(parentHex)-00")]).hasIDs)
    }

    @Test func twoTraceparentFieldsAreInvalid() {
        let tp = "00-\(traceHex)-\(parentHex)-01"
        #expect(!traceContext([("traceparent", tp), ("traceparent", tp)]).hasIDs)
    }

    @Test func tracestateIsForwardedOnlyWhenValidAndWithAValidTraceparent() {
        let tp = ("traceparent", "00-\(traceHex)-\(parentHex)-01")
        #expect(traceContext([tp, ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")]).forwardsTraceState)
        #expect(traceContext([tp, ("tracestate", "a=1"), ("tracestate", "b=2")]).forwardsTraceState)
        #expect(traceContext([tp, ("tracestate", " ,a=1 ,, b=2\t,")]).forwardsTraceState)
        #expect(traceContext([tp, ("tracestate", "tenant@vendor=x,3t@v=y,a_-*/9=z")]).forwardsTraceState)
        #expect(traceContext([tp, ("tracestate", "a=hello world")]).forwardsTraceState)
        // Invalid lists are dropped; the trace continues.
        for bad in ["A=1", "a", "=1", "a=", "a=1=2", "a=x\u{7f}", "1a=1", "t@=1", "@v=1", "t@toolongsystemid1=1",
                    "t@V=1", "a@b@c=1", "a=b\u{01}c", String(repeating: "k", count: 257) + "=1"]
        {
            let c = traceContext([tp, ("tracestate", bad)])
            #expect(c.hasIDs && !c.forwardsTraceState, "\(bad)")
        }
        // 32 members at most, 512 bytes at most.
        let members32 = (0..<32).map { "k\($0)=v" }.joined(separator: ",")
        #expect(traceContext([tp, ("tracestate", members32)]).forwardsTraceState)
        #expect(!traceContext([tp, ("tracestate", members32 + ",x=1")]).forwardsTraceState)
        let long = "a=" + String(repeating: "v", count: 256) + ",b=" + String(repeating: "v", count: 251)
        #expect(long.utf8.count == 512)
        #expect(traceContext([tp, ("tracestate", long)]).forwardsTraceState)
        #expect(!traceContext([tp, ("tracestate", long + "w")]).forwardsTraceState)
        #expect(!traceContext([tp, ("tracestate", String(long.dropLast(100))), ("tracestate", "c=" + String(repeating: "v", count: 98))]).forwardsTraceState)
        // An empty tracestate has nothing to forward.
        #expect(!traceContext([tp, ("tracestate", "")]).forwardsTraceState)
        // Without a valid traceparent there is nothing to attach it to.
        #expect(!traceContext([("tracestate", "a=1")]).forwardsTraceState)
        #expect(!traceContext([("traceparent", "00-bad"), ("tracestate", "a=1")]).forwardsTraceState)
    }
}

@Suite struct B3Tests {
    let t32 = "463ac35c9f6413ad48485a3953bb6124", t16 = "a3ce929d0e0e4736"
    let s = "a2fb4a1d1a96d312", p = "0020000000000001"

    @Test func multiWithEveryField() {
        let c = traceContext([("X-B3-TraceId", t32), ("X-B3-SpanId", s), ("X-B3-ParentSpanId", p), ("X-B3-Sampled", "1")])
        #expect(c.hasIDs && c.traceIDHigh == 0x463a_c35c_9f64_13ad && c.traceIDLow == 0x4848_5a39_53bb_6124)
        #expect(c.spanID == 0xa2fb_4a1d_1a96_d312 && c.parentSpanID == 0x0020_0000_0000_0001)
        #expect(c.sampled == true && !c.shortTraceID && c.styles == .b3Multi)
    }

    @Test func multiWith64BitTraceIdAndLenientSampled() {
        let c = traceContext([("x-b3-traceid", t16), ("x-b3-spanid", s), ("x-b3-sampled", "false")])
        #expect(c.hasIDs && c.traceIDHigh == 0 && c.traceIDLow == 0xa3ce_929d_0e0e_4736 && c.shortTraceID)
        #expect(c.sampled == false && c.parentSpanID == 0)
        #expect(traceContext([("x-b3-traceid", t16), ("x-b3-spanid", s), ("x-b3-sampled", "true")]).sampled == true)
        #expect(traceContext([("x-b3-traceid", t16), ("x-b3-spanid", s)]).sampled == nil)
        // Either case of hex digits.
        #expect(traceContext([("x-b3-traceid", t32.uppercased()), ("x-b3-spanid", s.uppercased())]).hasIDs)
    }

    @Test func debugFlagImpliesSampled() {
        let c = traceContext([("x-b3-traceid", t32), ("x-b3-spanid", s), ("x-b3-flags", "1")])
        #expect(c.hasIDs && c.debug && c.sampled == true)
        #expect(!traceContext([("x-b3-traceid", t32), ("x-b3-spanid", s), ("x-b3-flags", "0")]).debug)
    }

    @Test func samplingOnly() {
        let c = traceContext([("x-b3-sampled", "0")])
        #expect(!c.hasIDs && c.sampled == false && c.styles == .b3Multi)
        let d = traceContext([("x-b3-flags", "1")])
        #expect(!d.hasIDs && d.debug && d.sampled == true)
    }

    @Test func invalidMultiFieldsVoidTheirContext() {
        let cases: [[(String, String)]] = [
            [("x-b3-traceid", t32)],  // no span id
            [("x-b3-spanid", s)],  // no trace id
            [("x-b3-traceid", String(t16.dropLast())), ("x-b3-spanid", s)],  // 15 digits
            [("x-b3-traceid", t32 + "0"), ("x-b3-spanid", s)],  // 33 digits
            [("x-b3-traceid", "0000000000000000"), ("x-b3-spanid", s)],  // zero trace id
            [("x-b3-traceid", t16), ("x-b3-spanid", "0000000000000000")],  // zero span id
            [("x-b3-traceid", t16), ("x-b3-spanid", "g2fb4a1d1a96d312")],  // not hex
            [("x-b3-traceid", t16), ("x-b3-spanid", s), ("x-b3-parentspanid", "12")],  // bad parent
            [("x-b3-traceid", t16), ("x-b3-spanid", s), ("x-b3-sampled", "yes")],  // bad sampled
            [("x-b3-traceid", t16), ("x-b3-traceid", t16), ("x-b3-spanid", s)],  // repeated
            [("x-b3-parentspanid", p)],  // a parent alone
        ]
        for fields in cases {
            let c = traceContext(fields)
            #expect(!c.hasIDs && c.sampled == nil, "\(fields)")
            #expect(c.styles == .b3Multi)
        }
    }

    @Test func single() {
        var c = traceContext([("b3", "\(t32)-\(s)-1-\(p)")])
        #expect(c.hasIDs && c.traceIDLow == 0x4848_5a39_53bb_6124 && c.spanID == 0xa2fb_4a1d_1a96_d312)
        #expect(c.parentSpanID == 0x0020_0000_0000_0001 && c.sampled == true && c.styles == .b3Single)
        c = traceContext([("b3", "\(t16)-\(s)")])
        #expect(c.hasIDs && c.shortTraceID && c.sampled == nil && c.parentSpanID == 0)
        c = traceContext([("b3", "\(t16)-\(s)-0")])
        #expect(c.hasIDs && c.sampled == false)
        c = traceContext([("B3", "\(t32)-\(s)-d")])
        #expect(c.hasIDs && c.debug && c.sampled == true)
        c = traceContext([("b3", "0")])
        #expect(!c.hasIDs && c.sampled == false && c.styles == .b3Single)
        c = traceContext([("b3", "1")])
        #expect(!c.hasIDs && c.sampled == true)
        c = traceContext([("b3", "d")])
        #expect(!c.hasIDs && c.debug)
    }

    @Test(arguments: [
        "2", "", "-", "01", "\(String(repeating: "0", count: 32))-a2fb4a1d1a96d312-1",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-x",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020000000000001-x",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0000000000000000",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d31",
        "463ac35c9f6413ad48485a3953bb6124a2fb4a1d1a96d312",
        "463ac35c9f6413ad48485a3953bb612-a2fb4a1d1a96d312",
        "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-10",
        "463ac35c9f6413ad48485a3953bb6124--1",
    ])
    func invalidSingleMeansNoContext(_ value: String) {
        let c = traceContext([("b3", value)])
        #expect(!c.hasIDs && c.sampled == nil && !c.debug)
    }

    @Test func singleWinsOverMultiAndAnInvalidSingleFallsBackToMulti() {
        let other = "1111111111111111"
        var c = traceContext([("x-b3-traceid", t32), ("x-b3-spanid", other), ("b3", "\(t32)-\(s)-1")])
        #expect(c.spanID == 0xa2fb_4a1d_1a96_d312 && c.styles == [.b3Single, .b3Multi])
        c = traceContext([("b3", "nonsense"), ("x-b3-traceid", t32), ("x-b3-spanid", other)])
        #expect(c.hasIDs && c.spanID == 0x1111_1111_1111_1111)
        // Two b3 fields are invalid.
        #expect(!traceContext([("b3", "\(t32)-\(s)"), ("b3", "\(t32)-\(s)")]).hasIDs)
    }

    @Test func validTraceparentWinsOverB3() {
        let c = traceContext([("b3", "\(t32)-\(s)-0"), ("traceparent", "00-\(traceHex)-\(parentHex)-01")])
        #expect(c.spanID == 0x00f0_67aa_0ba9_02b7 && c.sampled == true && c.styles == [.w3c, .b3Single])
        let d = traceContext([("b3", "\(t32)-\(s)-0"), ("traceparent", "00-zz")])
        #expect(d.spanID == 0xa2fb_4a1d_1a96_d312 && d.sampled == false)
    }

    @Test func otherFieldsAreIgnored() {
        let c = traceContext([("x-b3-unknown", "1"), ("host", "a"), ("x-request-id", "r"), ("traceparentx", "1")])
        #expect(c == TraceContext())
    }

    @Test func rangesOfAHeadAreRead() {
        let value = "\(t16)-\(s)-1"
        let head = Array("GET / HTTP/1.1\r\nb3: \(value)\r\n\r\n".utf8)
        var h = TraceHeaders()
        h.add(name: 16..<18, value: 20..<(20 + value.utf8.count), in: head.span)
        #expect(h.context.hasIDs && h.context.sampled == true)
        h.reset()
        #expect(h.context == TraceContext())
    }
}

@Suite struct SamplingTests {
    @Test func zeroAndHundredPercent() {
        let never = TraceSampler(percent: 0), always = TraceSampler(percent: 100)
        var r = TestRandom(1)
        for _ in 0..<10_000 {
            let x = r.next()
            #expect(!never.decide(incoming: nil, random: x))
            #expect(always.decide(incoming: nil, random: x))
        }
        #expect(!never.decide(incoming: nil, random: 0))
        #expect(always.decide(incoming: nil, random: .max))
        #expect(TraceSampler(percent: 250) == always && TraceSampler(percent: -1) == never && TraceSampler(percent: .nan) == never)
        #expect(TraceSampler().percent == 1.0)
    }

    @Test func incomingDecisionIsHonoured() {
        #expect(!TraceSampler(percent: 100).decide(incoming: false, random: 0))
        #expect(TraceSampler(percent: 0).decide(incoming: true, random: .max))
        #expect(TraceSampler(percent: 0).decide(incoming: false, debug: true, random: .max))
    }

    @Test func rateIsRoughlyThePercentage() {
        var r = TestRandom(42)
        for (percent, low, high) in [(1.0, 800, 1200), (10.0, 9_400, 10_600), (50.0, 49_000, 51_000), (0.01, 0, 30)] {
            let s = TraceSampler(percent: percent)
            var n = 0
            for _ in 0..<100_000 where s.decide(incoming: nil, random: r.next()) { n += 1 }
            #expect(n >= low && n <= high, "\(percent)%: \(n) of 100000")
        }
    }

    @Test func childContinuesTheTraceWithANewSpan() {
        var r = TestRandom(7)
        let incoming = traceContext([("traceparent", "00-\(traceHex)-\(parentHex)-00"), ("tracestate", "a=1")])
        let c = incoming.child(sampler: TraceSampler(percent: 100), using: &r)
        #expect(c.traceIDHigh == incoming.traceIDHigh && c.traceIDLow == incoming.traceIDLow)
        #expect(c.parentSpanID == incoming.spanID && c.spanID != 0 && c.spanID != incoming.spanID)
        #expect(c.sampled == false)  // the caller said no
        #expect(c.forwardsTraceState && c.styles == .w3c)
        let again = incoming.child(sampler: TraceSampler(percent: 100), using: &r)
        #expect(again.spanID != c.spanID)
    }

    @Test func childOfNothingStartsATrace() {
        var r = TestRandom(9)
        let c = TraceContext().child(sampler: TraceSampler(percent: 100), using: &r)
        #expect(c.hasIDs && c.traceIDHigh != 0 && c.parentSpanID == 0 && c.sampled == true && c.styles == [])
        let d = TraceContext().child(sampler: TraceSampler(percent: 100), using: &r)
        #expect(d.traceIDLow != c.traceIDLow)
        // A sampling-only "b3: 0" keeps its decision in the new trace.
        let e = traceContext([("b3", "0")]).child(sampler: TraceSampler(percent: 100), using: &r)
        #expect(e.hasIDs && e.sampled == false && e.styles == .b3Single)
        // An invalid traceparent's flags are not trusted.
        let f = traceContext([("traceparent", "00-\(traceHex)-0000000000000000-01")]).child(sampler: TraceSampler(percent: 0), using: &r)
        #expect(f.sampled == false && f.parentSpanID == 0)
    }
}

@Suite struct PropagationTests {
    @Test func traceparentLineMatchesTheDigitsOfEveryId() {
        // Word-at-a-time hex against String(radix:): every nibble value in every position, the edges, and
        // random ids.
        var values: [UInt64] = [0, 1, 9, 10, 15, 16, .max, 0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 0x9A9A_9A9A_0F0F_F0F0]
        var random = TestRandom(7)
        for _ in 0..<500 { values.append(random.next()) }
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        for (i, v) in values.enumerated() {
            let c = TraceContext(traceIDHigh: v, traceIDLow: values[(i + 1) % values.count], spanID: ~v,
                                 sampled: i % 2 == 0)
            var bytes: [UInt8] = []
            c.withTraceparentLine { span in
                for j in span.indices { bytes.append(span[j]) }
            }
            let line = String(decoding: bytes, as: UTF8.self)
            let expected = "traceparent: 00-\(hex(v))\(hex(values[(i + 1) % values.count]))-\(hex(~v))-\(i % 2 == 0 ? "01" : "00")\r\n"
            #expect(line == expected)
            #expect(line.utf8.count == TraceContext.traceparentLineBytes)
        }
    }

    let proxySpan: UInt64 = 0x1234_5678_9abc_def0

    func child(of fields: [(String, String)], sampled: Bool? = nil) -> TraceContext {
        var c = traceContext(fields)
        if c.hasIDs {
            c.parentSpanID = c.spanID
        } else {
            c.traceIDHigh = 0x0102_0304_0506_0708
            c.traceIDLow = 0x090a_0b0c_0d0e_0f10
            c.parentSpanID = 0
        }
        c.spanID = proxySpan
        if let sampled { c.sampled = sampled }
        return c
    }

    @Test func w3cOnly() {
        let c = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-01")])
        #expect(fieldLines(c) == "traceparent: 00-\(traceHex)-123456789abcdef0-01\r\n")
        let n = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-00")])
        #expect(fieldLines(n) == "traceparent: 00-\(traceHex)-123456789abcdef0-00\r\n")
    }

    @Test func tracestatePassesUnchanged() {
        let c = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-01"), ("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")])
        #expect(fieldLines(c, traceState: "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
            == "traceparent: 00-\(traceHex)-123456789abcdef0-01\r\ntracestate: rojo=00f067aa0ba902b7, congo=t61rcWkgMzE\r\n")
        // Not forwarded when it was invalid, even if the caller passes the bytes.
        let bad = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-01"), ("tracestate", "BAD")])
        #expect(fieldLines(bad, traceState: "BAD") == "traceparent: 00-\(traceHex)-123456789abcdef0-01\r\n")
    }

    @Test func newTraceHasOnlyTraceparent() {
        let c = child(of: [], sampled: true)
        #expect(fieldLines(c) == "traceparent: 00-0102030405060708090a0b0c0d0e0f10-123456789abcdef0-01\r\n")
    }

    @Test func b3MultiIsForwardedAsMulti() {
        let c = child(of: [("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312"),
                           ("x-b3-parentspanid", "0020000000000001"), ("x-b3-sampled", "1")])
        #expect(fieldLines(c) == "traceparent: 00-463ac35c9f6413ad48485a3953bb6124-123456789abcdef0-01\r\n"
            + "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124\r\nx-b3-spanid: 123456789abcdef0\r\n"
            + "x-b3-parentspanid: a2fb4a1d1a96d312\r\nx-b3-sampled: 1\r\n")
        // 64-bit trace id: 16 digits in B3, padded in traceparent; not sampled.
        let s = child(of: [("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-sampled", "0")])
        #expect(fieldLines(s) == "traceparent: 00-0000000000000000a3ce929d0e0e4736-123456789abcdef0-00\r\n"
            + "x-b3-traceid: a3ce929d0e0e4736\r\nx-b3-spanid: 123456789abcdef0\r\n"
            + "x-b3-parentspanid: a2fb4a1d1a96d312\r\nx-b3-sampled: 0\r\n")
        // Debug goes as x-b3-flags, without x-b3-sampled.
        let d = child(of: [("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", "a2fb4a1d1a96d312"), ("x-b3-flags", "1")])
        #expect(fieldLines(d).hasSuffix("x-b3-parentspanid: a2fb4a1d1a96d312\r\nx-b3-flags: 1\r\n"))
        // A new trace (invalid B3 came) is a root: no parent field.
        let r = child(of: [("x-b3-traceid", "zz"), ("x-b3-spanid", "a2fb4a1d1a96d312")], sampled: true)
        #expect(fieldLines(r) == "traceparent: 00-0102030405060708090a0b0c0d0e0f10-123456789abcdef0-01\r\n"
            + "x-b3-traceid: 0102030405060708090a0b0c0d0e0f10\r\nx-b3-spanid: 123456789abcdef0\r\nx-b3-sampled: 1\r\n")
    }

    @Test func b3SingleIsForwardedAsSingle() {
        let c = child(of: [("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020000000000001")])
        #expect(fieldLines(c) == "traceparent: 00-463ac35c9f6413ad48485a3953bb6124-123456789abcdef0-01\r\n"
            + "b3: 463ac35c9f6413ad48485a3953bb6124-123456789abcdef0-1-a2fb4a1d1a96d312\r\n")
        let short = child(of: [("b3", "a3ce929d0e0e4736-a2fb4a1d1a96d312-d")])
        #expect(fieldLines(short) == "traceparent: 00-0000000000000000a3ce929d0e0e4736-123456789abcdef0-01\r\n"
            + "b3: a3ce929d0e0e4736-123456789abcdef0-d-a2fb4a1d1a96d312\r\n")
        let deny = child(of: [("b3", "0")])
        #expect(fieldLines(deny) == "traceparent: 00-0102030405060708090a0b0c0d0e0f10-123456789abcdef0-00\r\n"
            + "b3: 0102030405060708090a0b0c0d0e0f10-123456789abcdef0-0\r\n")
        // Both B3 styles came: single only.
        let both = child(of: [("b3", "a3ce929d0e0e4736-a2fb4a1d1a96d312-1"), ("x-b3-sampled", "1")])
        #expect(!fieldLines(both).contains("x-b3-"))
    }

    @Test func bufferAndCaptureVariantsWriteTheSameBytes() {
        let c = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-01"), ("tracestate", "a=1,b=2"), ("b3", "0")])
        let expected = fieldLines(c, traceState: "a=1,b=2")
        #expect(c.fieldBytes(traceStateCount: 7) == expected.utf8.count)
        var buffer = [UInt8](repeating: 0, count: TraceContext.maxFieldBytes)
        let ts = Array("a=1,b=2".utf8)
        let n = buffer.withUnsafeMutableBytes { out in ts.withUnsafeBytes { c.writeFields(into: out, traceState: $0) } }
        #expect(n == expected.utf8.count)
        #expect(String(decoding: buffer[0..<(n ?? 0)], as: UTF8.self) == expected)
        var small = [UInt8](repeating: 0, count: expected.utf8.count - 1)
        #expect(small.withUnsafeMutableBytes { out in ts.withUnsafeBytes { c.writeFields(into: out, traceState: $0) } } == nil)
        let capture = RequestCapture(slots: 2)
        ts.withUnsafeBytes { capture.set(1, .traceState, $0) }
        var viaCapture: [UInt8] = []
        c.writeFields(traceStateFrom: capture, slot: 1) { viaCapture.append($0) }
        #expect(String(decoding: viaCapture, as: UTF8.self) == expected)
    }

    @Test func longestFieldsFitTheBound() {
        let tracestate = "a=" + String(repeating: "v", count: 256) + ",b=" + String(repeating: "v", count: 251)
        var c = child(of: [("traceparent", "00-\(traceHex)-\(parentHex)-01"), ("tracestate", tracestate),
                           ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "a2fb4a1d1a96d312")])
        c.debug = true
        #expect(c.forwardsTraceState)
        #expect(fieldLines(c, traceState: tracestate).utf8.count <= TraceContext.maxFieldBytes)
    }

    @Test func repeatedTracestateFieldsAreCapturedAsOneList() {
        let capture = RequestCapture(slots: 1)
        for part in ["a=1", "b=2"] { Array(part.utf8).withUnsafeBytes { capture.append(0, .traceState, $0) } }
        #expect(capture.string(0, .traceState) == "a=1,b=2")
        #expect(CapturedField.traceState.limit == TraceHeaders.traceStateLimit)
    }

    @Test func replacedFieldNames() {
        #expect(TraceContext.replacedFieldNames == ["traceparent", "tracestate", "b3"])
        #expect(TraceContext.replacedFieldPrefix == "x-b3-")
    }
}
