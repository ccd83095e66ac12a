import TernHTTP

/// Which side of the connection a head comes from, and what the response answers.
enum Side: Sendable {
    case request
    case response(toHEAD: Bool = false, toCONNECT: Bool = false)
}

/// The fields of a parsed head a table case states.
struct Summary: Equatable, Sendable {
    var framing: BodyFraming
    var keepAlive = true
    var method: HTTPMethod = .get
    var form: RequestTargetForm = .origin
    var version: HTTPVersion = .http11
    var status = 0
    var upgrade = false
    var expectContinue = false
}

enum HeadOutcome: Equatable, Sendable {
    case head(Summary, length: Int)
    case error(Int, HTTPParseError.Reason)
    case incomplete
}

/// Parses `bytes` as a receive buffer that grows: the parser sees the prefixes ending at each of `cuts`, then all
/// of `bytes`. With no cuts this is the whole message at once; with every offset, byte by byte.
func parseHead(_ bytes: [UInt8], side: Side, cuts: [Int], limits: HTTP1Parser.Limits = .init()) -> HeadOutcome {
    var parser: HTTP1Parser
    switch side {
    case .request:
        parser = HTTP1Parser(kind: .request, limits: limits)
    case .response(let toHEAD, let toCONNECT):
        parser = HTTP1Parser(kind: .response, limits: limits)
        parser.respondingToHEAD = toHEAD
        parser.respondingToCONNECT = toCONNECT
    }
    let span = bytes.span
    do {
        for end in cuts + [bytes.count] {
            switch try parser.parse(span.extracting(0..<end)) {
            case .needMore(let scanned):
                precondition(scanned <= end, "scanned past the bytes given")
                continue
            case .complete:
                let h = parser.head
                let summary = Summary(
                    framing: h.framing, keepAlive: h.keepAlive, method: h.method, form: h.targetForm,
                    version: h.version, status: h.status, upgrade: h.upgrade, expectContinue: h.expectContinue)
                return .head(summary, length: h.length)
            }
        }
        return .incomplete
    } catch {
        return .error(error.status, error.reason)
    }
}

enum BodyOutcome: Equatable, Sendable {
    /// The decoded data, and the offset just past the chunked body.
    case body([UInt8], end: Int)
    case error(Int)
    case incomplete([UInt8])
}

/// Decodes `bytes` delivered as independent pieces split at `cuts`.
func decodeChunked(_ bytes: [UInt8], cuts: [Int]) -> BodyOutcome {
    var decoder = ChunkedDecoder()
    var data: [UInt8] = []
    let span = bytes.span
    let starts = [0] + cuts
    let ends = cuts + [bytes.count]
    do {
        for (lo, hi) in zip(starts, ends) {
            var position = lo
            pieces: while true {
                let output = try decoder.decode(span.extracting(position..<hi))
                switch output.event {
                case .data(let range):
                    data += bytes[(position + range.lowerBound)..<(position + range.upperBound)]
                    position += output.consumed
                case .needMore:
                    precondition(position + output.consumed == hi, "needMore before the piece was consumed")
                    break pieces
                case .lastChunk:
                    position += output.consumed
                case .end:
                    return .body(data, end: position + output.consumed)
                }
            }
        }
        return .incomplete(data)
    } catch {
        return .error(error.status)
    }
}

/// Split points for a message of `count` bytes: every offset, or for big messages a sample (every offset would
/// make the test quadratic) that includes both ends.
func everyOffset(_ count: Int) -> [Int] {
    guard count > 1 else { return [] }
    if count <= 2048 { return Array(1..<count) }
    return Array(1..<64) + Array(stride(from: 64, to: count - 64, by: 509)) + Array((count - 64)..<count)
}
