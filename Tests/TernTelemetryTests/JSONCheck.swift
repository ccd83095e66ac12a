// A small strict JSON reader (RFC 8259) for checking what the span encoders write: the whole input must be one
// value, strings must be valid with known escapes, numbers well formed.

indirect enum JSON: Equatable {
    case object([(String, JSON)])
    case array([JSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.array(let x), .array(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.bool(let x), .bool(let y)): x == y
        case (.null, .null): true
        default: false
        }
    }

    subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    subscript(index: Int) -> JSON? {
        guard case .array(let items) = self, index < items.count else { return nil }
        return items[index]
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var number: String? { if case .number(let s) = self { s } else { nil } }
    var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
    var keys: [String]? { if case .object(let m) = self { m.map(\.0) } else { nil } }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func parse(_ bytes: [UInt8]) throws -> JSON {
        var p = Reader(bytes: bytes)
        let v = try p.value()
        p.space()
        guard p.i == bytes.count else { throw Failure(description: "trailing bytes at \(p.i)") }
        return v
    }

    private struct Reader {
        let bytes: [UInt8]
        var i = 0

        mutating func space() { while i < bytes.count && [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 } }

        func fail(_ what: String) -> Failure { Failure(description: "\(what) at \(i)") }

        mutating func value() throws -> JSON {
            space()
            guard i < bytes.count else { throw fail("end of input") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(String, JSON)] = []
                space()
                if i < bytes.count && bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    space()
                    guard case .string(let k) = try value() else { throw fail("key") }
                    space()
                    try expect(":")
                    members.append((k, try value()))
                    space()
                    if try comma("}") { continue }
                    return .object(members)
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                space()
                if i < bytes.count && bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    items.append(try value())
                    space()
                    if try comma("]") { continue }
                    return .array(items)
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try word("true"); return .bool(true)
            case UInt8(ascii: "f"): try word("false"); return .bool(false)
            case UInt8(ascii: "n"): try word("null"); return .null
            default: return .number(try number())
            }
        }

        mutating func expect(_ c: Character) throws {
            guard i < bytes.count, bytes[i] == c.asciiValue! else { throw fail("expected \(c)") }
            i += 1
        }

        /// true after ",", false after `close`.
        mutating func comma(_ close: Character) throws -> Bool {
            guard i < bytes.count else { throw fail("end of input") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; return true }
            try expect(close)
            return false
        }

        mutating func word(_ w: String) throws {
            for c in w.utf8 {
                guard i < bytes.count, bytes[i] == c else { throw fail("bad literal") }
                i += 1
            }
        }

        mutating func number() throws -> String {
            let start = i
            if i < bytes.count && bytes[i] == UInt8(ascii: "-") { i += 1 }
            let digits = i
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
            guard i > digits, !(bytes[digits] == 0x30 && i - digits > 1) else { throw fail("bad number") }
            if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
                i += 1
                let f = i
                while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
                guard i > f else { throw fail("bad fraction") }
            }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }

        mutating func string() throws -> String {
            try expect("\"")
            var out: [UInt8] = []
            while true {
                guard i < bytes.count else { throw fail("unterminated string") }
                let b = bytes[i]
                i += 1
                switch b {
                case 0x22:
                    // Must be valid UTF-8.
                    guard String(validating: out, as: UTF8.self) != nil else { throw fail("invalid UTF-8") }
                    return String(decoding: out, as: UTF8.self)
                case 0x00..<0x20: throw fail("control character in string")
                case 0x5C:
                    guard i < bytes.count else { throw fail("bad escape") }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "u"):
                        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16),
                              let scalar = Unicode.Scalar(v)
                        else { throw fail("bad \\u escape") }
                        i += 4
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default: throw fail("bad escape")
                    }
                default: out.append(b)
                }
            }
        }
    }
}
