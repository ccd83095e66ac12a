import CTernRE2

/// A regex compiled with RE2, the engine behind Envoy's `safe_regex`: the same syntax (RE2's, which Istio checks
/// too: no lookarounds, backreferences, possessive quantifiers or atomic groups) and matching in time linear in
/// the subject (automata, no backtracking: a client's header cannot make a match run long), refused above the
/// program-size limit Istio gives Envoy and above the length Istio's validation allows. Matches whole strings (`matches`, Envoy's `FullMatch`) or finds matches with their groups
/// (`firstMatch`, for `RegexRewrite`). Subjects are bytes; the pattern is UTF-8, as in Envoy (`.` is one UTF-8
/// character).
///
/// One compiled copy per reactor (`copies`, made when the table is compiled, on the config thread). An RE2
/// object is thread-safe, but its DFA cache takes a lock on every search (a reader-writer lock, and a mutex when
/// it adds a state): shared by the reactors, that lock's cache line would bounce between cores on every regex
/// match. Each reactor matches with its own copy (`reactor:`), whose lock no other thread touches. Copies cost
/// memory (the program, and the DFA states a reactor meets, within RE2's budget per copy); compiling them lazily
/// per reactor instead would compile on a reactor thread, between requests it is serving.
///
/// Allocation: a full match runs RE2's DFA (or, for a one-pass pattern and a subject of at most 16 bytes, its
/// one-pass matcher), which allocates only when it meets a DFA state it has not cached yet: a copy allocates while
/// it warms up, then nothing. A search asking for groups beyond the whole match (a rewrite naming `\1`–`\9`)
/// then finds them within the match with the one-pass matcher when the pattern is one-pass (no allocation), else
/// with BitState (two allocations per match: its visited bitmap and its job stack) or, for a match over RE2's
/// BitState size, its NFA.
///
/// Owned by the table that compiled it and freed with it (on the publisher's thread, ARCHITECTURE.md §5).
@safe public final class CompiledRegex: @unchecked Sendable {
    // @unchecked Sendable: an RE2 object is immutable after compiling but for its DFA caches, which RE2 guards
    // itself; each copy is matched on by one reactor thread (or, past the copies, shared: still correct).
    private let copies: [OpaquePointer]
    public let pattern: String
    /// RE2's program size, what Envoy compares with its limit.
    public let programSize: Int
    public let captureCount: Int
    /// How many reactors have a copy of their own.
    public var copyCount: Int { unsafe copies.count }

    /// The `re2.max_program_size.error_level` Istio's sidecar bootstrap gives Envoy (Envoy's own default is 100):
    /// a regex whose program is larger is refused.
    public static let istioMaxProgramSize = 32768
    /// Istio's validation refuses a regex longer than this many bytes (its stand-in for the program size, which Go
    /// cannot compute).
    public static let istioMaxLength = 1024

    public struct CompileError: Error, Sendable {
        /// The reason, whole ("invalid regex: …", "RE2 program size of …").
        public var message: String
    }

    // SAFETY: takes ownership of the non-NULL regexes from tern_re2_compile, freed in deinit.
    private init(pattern: String, copies: [OpaquePointer], programSize: Int, captureCount: Int) {
        self.pattern = pattern
        unsafe self.copies = unsafe copies
        self.programSize = programSize
        self.captureCount = captureCount
    }

    deinit {
        // SAFETY: every copy came from tern_re2_compile and is freed exactly once, here.
        for unsafe re in unsafe copies { unsafe tern_re2_free(re) }
    }

    /// Compiles `pattern` `copies` times (one per reactor that will match with it; at least one), refusing what
    /// RE2 refuses, `\C` (Istio's validation refuses it), and a program larger than `maxProgramSize` (nil: no
    /// limit). `search`: the regex will be searched (`firstMatch`), so RE2's reverse program, which finds where
    /// a match starts, is compiled now rather than by the first search on a reactor.
    public static func compile(_ pattern: String, copies: Int = 1, maxProgramSize: Int? = istioMaxProgramSize,
                               search: Bool = false) -> Result<CompiledRegex, CompileError> {
        if let refusal = istioRefusal(pattern) { return .failure(CompileError(message: refusal)) }
        var made: [OpaquePointer] = unsafe []
        func fail(_ message: String) -> Result<CompiledRegex, CompileError> {
            // SAFETY: each was made by tern_re2_compile below and is owned by nothing else yet.
            for unsafe re in unsafe made { unsafe tern_re2_free(re) }
            return .failure(CompileError(message: message))
        }
        let bytes = Array(pattern.utf8)
        var message = [CChar](repeating: 0, count: 256)
        let capacity = message.count
        for _ in 0..<max(copies, 1) {
            // SAFETY: the pattern and message buffers outlive the call; the shim writes at most `capacity` bytes.
            let re = unsafe bytes.withUnsafeBufferPointer { p in
                unsafe message.withUnsafeMutableBufferPointer { m in
                    unsafe p.withMemoryRebound(to: CChar.self) { c in
                        unsafe tern_re2_compile(c.baseAddress, c.count, m.baseAddress, capacity)
                    }
                }
            }
            // SAFETY: NULL means failure; otherwise the regex is owned by `made` until the CompiledRegex takes it.
            guard let re = unsafe re else {
                let text = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                return fail(syntaxMessage(text, pattern: pattern))
            }
            unsafe made.append(re)
            // SAFETY: `re` is live (owned by `made`).
            if search, unsafe tern_re2_reverse_program_size(re) < 0 { return fail("out of memory compiling the regex") }
        }
        // SAFETY: `made` holds at least one live regex.
        let size = unsafe Int(tern_re2_program_size(made[0]))
        if let limit = maxProgramSize, size > limit {
            return fail("regex too large: RE2 program size of \(size) > max program size of \(limit) (the "
                        + "re2.max_program_size.error_level Istio gives Envoy)")
        }
        // SAFETY: as above.
        let groups = unsafe Int(tern_re2_capture_count(made[0]))
        return unsafe .success(CompiledRegex(pattern: pattern, copies: made, programSize: size, captureCount: groups))
    }

    /// RE2's message, with what to do instead for the Perl (PCRE) constructs RE2 lacks.
    static func syntaxMessage(_ re2: String, pattern: String) -> String {
        // RE2 reports "<what>: <the offending text>"; for (?<= and (?<! the text is only "(?<".
        let fragment = re2.firstRange(of: ": ").map { String(re2[$0.upperBound...]) } ?? ""
        let lookbehind = fragment == "(?<" && (pattern.contains("(?<=") || pattern.contains("(?<!"))
        let hint: String?
        if lookbehind || fragment.hasPrefix("(?=") || fragment.hasPrefix("(?!") {
            hint = "lookahead and lookbehind are not RE2 syntax"
        } else if fragment.hasPrefix("(?>") {
            hint = "atomic groups are not RE2 syntax"
        } else if fragment.hasPrefix("(?<") {
            hint = "write a named group as (?P<name>...)"
        } else if fragment.count == 2, fragment.first == "\\", let d = fragment.last, ("1"..."9").contains(d) {
            hint = "backreferences are not RE2 syntax"
        } else if re2.hasPrefix("bad repetition operator"), fragment.count >= 2, fragment.last == "+" {
            hint = "possessive quantifiers are not RE2 syntax"
        } else {
            hint = nil
        }
        return "invalid regex: \(re2)" + (hint.map { " (\($0))" } ?? "")
    }

    /// What Istio's validation (Go's regexp, RE2 syntax) refuses although RE2 accepts it: `\C`, any byte, outside
    /// a class (inside one RE2 refuses it itself) and outside `\Q…\E` (where it is literal text).
    static func istioRefusal(_ pattern: String) -> String? {
        let b = Array(pattern.utf8)
        if b.count > istioMaxLength { return "regex is too large, max length allowed is \(istioMaxLength) (Istio's limit), got \(b.count)" }
        var i = 0
        var quoted = false
        while i + 1 < b.count {
            guard b[i] == UInt8(ascii: "\\") else {
                i += 1
                continue
            }
            let next = b[i + 1]
            if quoted {
                if next == UInt8(ascii: "E") { quoted = false }
            } else if next == UInt8(ascii: "Q") {
                quoted = true
            } else if next == UInt8(ascii: "C") {
                return "invalid regex: invalid escape sequence: \\C (Istio refuses it; it would match any byte)"
            }
            i += 2
        }
        return nil
    }

    /// The copy reactor `reactor` matches with. A reactor past the copies (a table compiled for fewer reactors,
    /// as tests do) shares one: correct, only contended.
    private func copy(_ reactor: Int) -> OpaquePointer {
        unsafe copies[reactor < copies.count ? reactor : reactor % copies.count]
    }

    /// Whether all of `subject` matches (Envoy's `FullMatch`), with reactor `reactor`'s copy. RE2 running out of
    /// memory counts as no match.
    public func matches(_ subject: Span<UInt8>, reactor: Int) -> Bool {
        let re = unsafe copy(reactor)
        // SAFETY: the span's memory stays valid and unchanged for the call; RE2 only reads `count` bytes.
        let rc = unsafe subject.withUnsafeBufferPointer { b in
            unsafe tern_re2_full_match(re, b.baseAddress, b.count)
        }
        return rc == 1
    }

    /// The leftmost match in `subject` starting at or after byte `start`, with its first `groups` groups (1: the
    /// whole match only, up to 10: \0–\9), with reactor `reactor`'s copy. The bytes before `start` stay the
    /// context of `^` and `\b`, as in RE2's GlobalReplace. Nil when nothing matches, or when RE2 runs out of
    /// memory. Ask for no more groups than needed: each group past the first costs a second matcher's run.
    public func firstMatch(in subject: Span<UInt8>, from start: Int, groups: Int, reactor: Int) -> RegexMatch? {
        var m = RegexMatch()
        let wanted = Int32(min(max(groups, 1), Int(TERN_RE2_GROUPS)))
        let re = unsafe copy(reactor)
        // SAFETY: the span's memory stays valid and unchanged for the call and RE2 only reads `count` bytes;
        // `offsets` is a tuple of 2 × TERN_RE2_GROUPS words and the shim writes `wanted` pairs into it.
        let found = unsafe subject.withUnsafeBufferPointer { b in
            unsafe withUnsafeMutableBytes(of: &m.offsets) { o in
                unsafe tern_re2_search(re, b.baseAddress, b.count, start, o.baseAddress!.assumingMemoryBound(to: Int.self), wanted)
            }
        }
        guard found == 1 else { return nil }
        m.count = Int(wanted)
        return m
    }

    /// Whether some part of `subject` matches (RE2's `PartialMatch`), with the first copy. Allocates (the
    /// subject's bytes): for the admin server, not the request path.
    public func occurs(in subject: String) -> Bool {
        let bytes = Array(subject.utf8)
        return firstMatch(in: bytes.span, from: 0, groups: 1, reactor: 0) != nil
    }
}

/// Where a search matched (`CompiledRegex.firstMatch`): byte offsets of the whole match and of groups 1–9.
public struct RegexMatch: Sendable {
    /// (start, end) per group; -1 (SIZE_MAX from the shim) for a group that took no part. A fixed tuple: no
    /// allocation.
    fileprivate var offsets: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                              Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)
    /// How many groups (from 0) the search reported.
    fileprivate(set) var count = 0

    /// The whole match.
    public var range: Range<Int> { group(0) ?? 0..<0 }

    /// Group `n` (0: the whole match), nil when it took no part in the match, the pattern has no such group, or
    /// the search did not ask for it.
    public func group(_ n: Int) -> Range<Int>? {
        guard n >= 0, n < count else { return nil }
        // SAFETY: n < count <= TERN_RE2_GROUPS, so both words lie inside the 20-word tuple.
        let (start, end) = unsafe withUnsafeBytes(of: offsets) { b in
            unsafe (b.load(fromByteOffset: 16 * n, as: Int.self), b.load(fromByteOffset: 16 * n + 8, as: Int.self))
        }
        guard start >= 0, end >= start else { return nil }
        return start..<end
    }
}
