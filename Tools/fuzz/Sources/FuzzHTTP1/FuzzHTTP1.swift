// libFuzzer target for the HTTP/1.1 head parser and the chunked decoder. Besides "never crash", it checks the
// property smuggling defences rest on: the outcome does not depend on how the bytes were split into reads.
// The first input byte picks request or response and the split point; the rest is the message.
import TernHTTP

enum Outcome: Equatable {
    case complete(length: Int, framing: String, keepAlive: Bool)
    case failed(HTTPParseError.Reason)
    case incomplete
}

func parse(_ bytes: [UInt8], kind: HTTP1Parser.Kind, cut: Int?) -> Outcome {
    var parser = HTTP1Parser(kind: kind)
    var lengths: [Int] = []
    if let cut, cut < bytes.count { lengths.append(cut) }
    lengths.append(bytes.count)
    do {
        for n in lengths {
            let prefix = Array(bytes[0..<n])
            if try parser.parse(prefix.span) == .complete {
                let head = parser.head
                return .complete(length: head.length, framing: "\(head.framing)", keepAlive: head.keepAlive)
            }
        }
        return .incomplete
    } catch {
        return .failed(error.reason)
    }
}

func decodeChunked(_ bytes: [UInt8], cut: Int) -> [String] {
    var decoder = ChunkedDecoder()
    var events: [String] = []
    var pieces: [[UInt8]] = []
    if cut > 0 && cut < bytes.count {
        pieces = [Array(bytes[0..<cut]), Array(bytes[cut...])]
    } else {
        pieces = [bytes]
    }
    var data: [UInt8] = []
    do {
        for piece in pieces {
            var offset = 0
            while offset < piece.count {
                let rest = Array(piece[offset...])
                let out = try decoder.decode(rest.span)
                if out.consumed == 0 && out.event != .end { break }
                offset += out.consumed
                switch out.event {
                case .data(let r): data += rest[r]
                case .end: events.append("end \(data.count)"); return events
                default: break
                }
            }
        }
        events.append("more \(data.count)")
    } catch {
        events.append("error \(error.reason)")
    }
    return events
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let control = input[0]
    let message = Array(input.dropFirst())
    let kind: HTTP1Parser.Kind = control & 1 == 0 ? .request : .response
    let cut = message.isEmpty ? 0 : Int(control >> 1) % (message.count + 1)
    let whole = parse(message, kind: kind, cut: nil)
    let split = parse(message, kind: kind, cut: cut)
    if whole != split {
        fatalError("outcome depends on the split at \(cut): \(whole) vs \(split)")
    }
    if case .complete(let length, let framing, _) = whole, framing.hasPrefix("chunked") {
        let body = Array(message[length...])
        let a = decodeChunked(body, cut: 0)
        let b = decodeChunked(body, cut: cut % (body.count + 1))
        if a != b { fatalError("chunked decoding depends on the split: \(a) vs \(b)") }
    }
    return 0
}
