import Testing
import TernTelemetry

@Suite struct RequestCaptureTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func set(_ c: RequestCapture, _ slot: Int, _ field: CapturedField, _ value: [UInt8]) {
        value.withUnsafeBytes { c.set(slot, field, $0) }
    }

    func append(_ c: RequestCapture, _ slot: Int, _ field: CapturedField, _ value: [UInt8]) {
        value.withUnsafeBytes { c.append(slot, field, $0) }
    }

    @Test func aNewRequestForgetsTheLastOnesFieldsButNotTheConnections() {
        let c = RequestCapture(slots: 2)
        c.clear(1)
        c.set(1, .downstreamRemote, "127.0.0.1:5000")
        c.set(1, .downstreamLocal, "127.0.0.1:80")
        c.set(1, .method, "GET")
        c.set(1, .path, "/a")
        c.set(1, .userAgent, "curl")
        c.beginRequest(1)
        #expect(c.length(1, .method) == 0 && c.length(1, .path) == 0 && c.length(1, .userAgent) == 0)
        #expect(c.string(1, .downstreamRemote) == "127.0.0.1:5000")
        #expect(c.string(1, .downstreamLocal) == "127.0.0.1:80")
        c.set(1, .path, "/b")
        #expect(c.string(1, .path) == "/b")
        #expect(c.length(0, .path) == 0, "another slot")
    }

    @Test func appendingToAFieldStoredBeforeOthersKeepsBoth() {
        let c = RequestCapture(slots: 1)
        c.beginRequest(0)
        append(c, 0, .traceState, bytes("a=1"))
        c.set(0, .method, "GET")
        append(c, 0, .traceState, bytes("b=2"))
        c.set(0, .path, "/x")
        append(c, 0, .traceState, bytes("c=3"))
        #expect(c.string(0, .traceState) == "a=1,b=2,c=3")
        #expect(c.string(0, .method) == "GET")
        #expect(c.string(0, .path) == "/x")
    }

    @Test func valuesAreCutAtTheirLimit() {
        let c = RequestCapture(slots: 1)
        c.beginRequest(0)
        set(c, 0, .method, [UInt8](repeating: 0x41, count: 100))
        #expect(c.length(0, .method) == CapturedField.method.limit)
        append(c, 0, .forwardedFor, [UInt8](repeating: 0x31, count: CapturedField.forwardedFor.limit - 2))
        append(c, 0, .forwardedFor, bytes("99"))
        #expect(c.string(0, .forwardedFor) == String(repeating: "1", count: CapturedField.forwardedFor.limit - 2) + ",9")
        append(c, 0, .forwardedFor, bytes("7"))
        #expect(c.length(0, .forwardedFor) == CapturedField.forwardedFor.limit)
    }

    /// Stores, appends and clears in a random order, at random lengths (up to past each limit), without a new
    /// request between them, so the packed region fills and is compacted again and again: every field must read
    /// back as a plain model of it says, in two slots that must not disturb each other.
    @Test func randomStoresMatchAModelThroughCompaction() {
        let c = RequestCapture(slots: 2)
        c.clear(0)
        c.clear(1)
        var model: [[CapturedField: [UInt8]]] = [[:], [:]]
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: seed >> 33)
        }
        for step in 0..<20_000 {
            let slot = next() % 2
            let field = CapturedField.allCases[next() % CapturedField.allCases.count]
            let n = next() % (field.limit + 20)
            let value = (0..<n).map { UInt8(truncatingIfNeeded: 0x21 + ($0 + step) % 90) }
            switch next() % 10 {
            case 0:
                c.clear(slot, field)
                model[slot][field] = nil
            case 1...3:
                append(c, slot, field, value)
                var m = model[slot][field] ?? []
                if m.count < field.limit {
                    if !m.isEmpty { m.append(0x2C) }
                    m += value.prefix(field.limit - m.count)
                }
                model[slot][field] = m.isEmpty ? nil : m
            case 4 where step % 50 == 0:
                c.beginRequest(slot)
                for f in CapturedField.allCases where ![.downstreamRemote, .downstreamLocal, .tlsVersion, .tlsCipher, .serverName].contains(f) {
                    model[slot][f] = nil
                }
            default:
                set(c, slot, field, value)
                model[slot][field] = value.isEmpty ? nil : Array(value.prefix(field.limit))
            }
            for s in 0..<2 {
                for f in CapturedField.allCases {
                    var got: [UInt8] = []
                    c.forEachByte(s, f) { got.append($0) }
                    if got != (model[s][f] ?? []) {
                        Issue.record("step \(step): slot \(s) \(f) reads \(got.count) bytes, want \((model[s][f] ?? []).count)")
                        return
                    }
                }
            }
        }
    }
}
