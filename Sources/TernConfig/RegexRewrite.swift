/// A VirtualService's `rewrite.uriRegexRewrite` (Istio's RegexRewrite, Envoy's route `regex_rewrite`), compiled
/// once per table. Istio hands `match` and `rewrite` to Envoy unchanged, which replaces, in the request's path
/// only (the query and fragment stay as they were), every non-overlapping match of `match`, leftmost first, with
/// `rewrite`, RE2's `GlobalReplace`:
///
/// - in `rewrite`, `\0` inserts the whole match and `\1`–`\9` its groups (a group that took no part inserts
///   nothing), `\\` a backslash; any other backslash ends the substitution there (RE2 stops writing it);
/// - a substitution naming a group the pattern does not have rewrites nothing: the path stays as it is;
/// - an empty match right where the previous match ended is skipped (the character after it is copied as is),
///   so `x*` on `/ab` gives `-/-a-b-`, one substitution per gap;
/// - no match leaves the path unchanged.
///
/// The validator warns about the last two kinds of substitution (`problems`), since Envoy accepts them silently.
/// `apply` runs per request on a reactor, with that reactor's copy of the regex (`CompiledRegex`): it writes
/// through a callback (the proxy's pooled buffer) and allocates nothing but what RE2 may allocate to find groups
/// (`CompiledRegex`: none for a one-pass pattern or a substitution naming no group but `\0`).
public final class RegexRewrite: Sendable {
    public let pattern: String
    public let substitution: String
    private let regex: CompiledRegex
    /// The substitution in order: literal runs of `literal` (`group` < 0) and group references.
    private let pieces: [Piece]
    private let literal: [UInt8]
    /// False when the substitution names a group the pattern lacks: nothing is rewritten, as in Envoy.
    private let rewrites: Bool
    /// The groups each search asks for, as GlobalReplace's `1 + MaxSubmatch(rewrite)`: fewer groups, less work.
    private let groups: Int

    private struct Piece: Sendable {
        /// The group to insert, or -1 for `literal[from..<to]`.
        var group: Int
        var from: Int
        var to: Int
    }

    private init(pattern: String, substitution: String, regex: CompiledRegex) {
        self.pattern = pattern
        self.substitution = substitution
        self.regex = regex
        let parsed = Self.parse(substitution)
        literal = parsed.literal
        pieces = parsed.pieces
        rewrites = parsed.highestGroup <= regex.captureCount
        groups = 1 + parsed.highestGroup
    }

    /// Compiles `match` (RE2 syntax) for searching, one copy per reactor (`copies`), and the substitution.
    public static func compile(match: String, rewrite: String, copies: Int = 1) -> Result<RegexRewrite, CompiledRegex.CompileError> {
        CompiledRegex.compile(match, copies: copies, search: true).map {
            RegexRewrite(pattern: match, substitution: rewrite, regex: $0)
        }
    }

    /// What Envoy would do differently from what the substitution seems to say (a reference to a group the
    /// pattern lacks, an unknown escape), as warnings; empty when there is nothing to say or `match` is invalid.
    public static func problems(match: String, rewrite: String) -> [String] {
        guard case .success(let r) = compile(match: match, rewrite: rewrite) else { return [] }
        let parsed = parse(rewrite)
        var out: [String] = []
        if parsed.highestGroup > r.regex.captureCount {
            let groups = r.regex.captureCount == 1 ? "1 group" : "\(r.regex.captureCount) groups"
            out.append("\\\(parsed.highestGroup) names a group the match does not have (it has \(groups)): "
                       + "Envoy then rewrites nothing, every path stays as it is")
        }
        if let bad = parsed.badEscape {
            out.append("unknown escape at offset \(bad) (\\0-\\9 insert groups, \\\\ a backslash): Envoy drops the "
                       + "rest of the substitution from there")
        }
        return out
    }

    /// The substitution parsed as RE2's `Rewrite` reads it; `highestGroup` as RE2's `MaxSubmatch` counts it
    /// (over the whole text, also past an unknown escape).
    private static func parse(_ text: String) -> (pieces: [Piece], literal: [UInt8], highestGroup: Int, badEscape: Int?) {
        let bytes = Array(text.utf8)
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        var highest = 0
        var bad: Int?
        var i = 0
        func add(_ b: UInt8) {
            if let last = pieces.last, last.group < 0, last.to == literal.count {
                pieces[pieces.count - 1].to += 1
            } else {
                pieces.append(Piece(group: -1, from: literal.count, to: literal.count + 1))
            }
            literal.append(b)
        }
        while i < bytes.count {
            let b = bytes[i]
            i += 1
            guard b == UInt8(ascii: "\\") else {
                if bad == nil { add(b) }
                continue
            }
            let next = i < bytes.count ? bytes[i] : nil
            if let d = next, d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") {
                let n = Int(d - UInt8(ascii: "0"))
                highest = max(highest, n)
                if bad == nil { pieces.append(Piece(group: n, from: 0, to: 0)) }
                i += 1
            } else if next == UInt8(ascii: "\\") {
                if bad == nil { add(UInt8(ascii: "\\")) }
                i += 1
            } else if bad == nil {
                bad = i - 1
            }
        }
        return (pieces, literal, highest, bad)
    }

    /// Rewrites an origin-form request-target: its path (up to the first `?` or `#`) as `apply` does, its query
    /// and fragment handed on unchanged, all through `emit`. Returns the number of matches replaced.
    @discardableResult
    public func apply(target: Span<UInt8>, reactor: Int, _ emit: (borrowing Span<UInt8>) -> Void) -> Int {
        var end = 0
        while end < target.count, target[end] != UInt8(ascii: "?"), target[end] != UInt8(ascii: "#") { end += 1 }
        let n = apply(path: target.extracting(0..<end), reactor: reactor, emit)
        if end < target.count { emit(target.extracting(end..<target.count)) }
        return n
    }

    /// Rewrites `path` (a request path without its query), handing the result to `emit` in pieces, in order
    /// (runs of `path` and of the substitution; nothing when the path is empty and nothing matched). Returns the
    /// number of matches replaced, with reactor `reactor`'s copy of the regex.
    @discardableResult
    public func apply(path: Span<UInt8>, reactor: Int, _ emit: (borrowing Span<UInt8>) -> Void) -> Int {
        let end = path.count
        guard rewrites else {
            if end > 0 { emit(path) }
            return 0
        }
        var p = 0
        var lastEnd = -1
        var count = 0
        // RE2's GlobalReplace loop: search from p; copy what precedes the match; skip an empty match at the end
        // of the previous one (copying one character); otherwise write the substitution and go on after it.
        while p <= end, let m = regex.firstMatch(in: path, from: p, groups: groups, reactor: reactor) {
            let r = m.range
            if p < r.lowerBound { emit(path.extracting(p..<r.lowerBound)) }
            if r.lowerBound == lastEnd && r.isEmpty {
                guard p < end else { break }
                let n = Self.characterLength(path, at: p)
                emit(path.extracting(p..<(p + n)))
                p += n
                continue
            }
            substitute(m, path, emit)
            p = r.upperBound
            lastEnd = p
            count += 1
        }
        if p < end { emit(path.extracting(p..<end)) }
        return count
    }

    private func substitute(_ m: RegexMatch, _ path: Span<UInt8>, _ emit: (borrowing Span<UInt8>) -> Void) {
        // A local copy (a retain, no allocation): a span of a class's stored array cannot outlive the access.
        let literal = self.literal
        let literalBytes = literal.span
        // Index loop: a for-in over an array of structs allocates an iterator box in unoptimised builds.
        for i in 0..<pieces.count {
            let piece = pieces[i]
            if piece.group < 0 {
                emit(literalBytes.extracting(piece.from..<piece.to))
            } else if let g = m.group(piece.group), !g.isEmpty {
                emit(path.extracting(g))
            }
        }
    }

    /// The length of the UTF-8 sequence at `i` (1 for a byte that does not start a complete one), as RE2 steps
    /// over a character after an empty match.
    private static func characterLength(_ s: Span<UInt8>, at i: Int) -> Int {
        let b = s[i]
        let n = b < 0xC2 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 1
        guard n > 1, i + n <= s.count else { return 1 }
        for k in 1..<n where s[i + k] & 0xC0 != 0x80 { return 1 }
        return n
    }

    /// A request-target (path, then maybe `?query`) rewritten, as a string (allocates: for tests and tools).
    public func rewrite(_ target: String) -> String {
        let bytes = Array(target.utf8)
        var out: [UInt8] = []
        apply(target: bytes.span, reactor: 0) { piece in
            for i in 0..<piece.count { out.append(piece[i]) }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
