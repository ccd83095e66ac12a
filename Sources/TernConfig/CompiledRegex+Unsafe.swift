import CTernPCRE2

/// A regex in RE2 syntax compiled once per RouteTable with PCRE2 (JIT when available), matching whole strings
/// as Envoy's safe_regex does, or, compiled for searching, finding matches with their groups (`firstMatch`, for
/// `RegexRewrite`). PCRE2 accepts a superset of RE2; patterns are not restricted further. Subjects are bytes (no
/// UTF-8 mode): what route matching and rewriting see are request paths and header values, ASCII in practice.
/// Owned by the table that compiled it and freed with it (on the publisher's thread, ARCHITECTURE.md §5).
@safe public final class CompiledRegex: @unchecked Sendable {
    // @unchecked Sendable: the compiled code is immutable after compile and PCRE2 allows concurrent matches on
    // one code from many threads, each with its own match block (kept per thread by the shim).
    private let code: OpaquePointer

    public struct CompileError: Error, Sendable {
        public var message: String
        public var offset: Int
    }

    // SAFETY: takes ownership of a non-NULL code from tern_regex_compile, freed in deinit.
    private init(code: OpaquePointer) { unsafe self.code = unsafe code }

    deinit {
        // SAFETY: `code` came from tern_regex_compile and is freed exactly once, here.
        unsafe tern_regex_free(code)
    }

    /// Compiles `pattern` for whole-string matching (`matches`) or, with `search`, for finding matches anywhere
    /// (`firstMatch`; `$` then matches only at the very end, as RE2's).
    public static func compile(_ pattern: String, caseless: Bool, search: Bool = false) -> Result<CompiledRegex, CompileError> {
        var bytes = Array(pattern.utf8)
        var message = [CChar](repeating: 0, count: 256)
        var offset = 0
        let capacity = message.count
        let flags = Int32(caseless ? TERN_REGEX_CASELESS : 0) | Int32(search ? TERN_REGEX_SEARCH : 0)
        // SAFETY: the pattern and message buffers outlive the call; the shim writes at most `capacity` bytes.
        let code = unsafe bytes.withUnsafeMutableBufferPointer { p in
            unsafe message.withUnsafeMutableBufferPointer { m in
                unsafe tern_regex_compile(p.baseAddress, p.count, flags, m.baseAddress, capacity, &offset)
            }
        }
        // SAFETY: NULL means failure; otherwise ownership passes to the CompiledRegex below.
        guard let code = unsafe code else {
            let text = String(decoding: message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(CompileError(message: text, offset: offset))
        }
        return unsafe .success(CompiledRegex(code: unsafe code))
    }

    /// Whether all of `subject` matches. Allocation-free after the thread's first match. A PCRE2 error (a match
    /// limit) counts as no match.
    public func matches(_ subject: Span<UInt8>) -> Bool {
        // SAFETY: the span's memory stays valid and unchanged for the call; PCRE2 only reads `count` bytes.
        let rc = unsafe subject.withUnsafeBufferPointer { b in
            unsafe tern_regex_match(code, b.baseAddress, b.count)
        }
        return rc == 1
    }

    public func matches(_ subject: String) -> Bool {
        let bytes = Array(subject.utf8)
        return matches(bytes.span)
    }

    /// The number of capturing groups in the pattern.
    public var captureCount: Int { unsafe Int(tern_regex_capture_count(code)) }

    /// The leftmost match in `subject` starting at or after byte `start`, with groups 0–9 (the bytes before
    /// `start` stay the context of `^`, `\b` and lookbehinds, as RE2 matches from a start position). Nil when
    /// nothing matches, or on a PCRE2 error (a match limit). For a regex compiled with `search`; allocation-free
    /// after the thread's first match.
    public func firstMatch(in subject: Span<UInt8>, from start: Int) -> RegexMatch? {
        var m = RegexMatch()
        let pairs = Int(TERN_REGEX_GROUPS)
        // SAFETY: the span's memory stays valid and unchanged for the call and PCRE2 only reads `count` bytes;
        // `offsets` is a tuple of 2 × TERN_REGEX_GROUPS words and the shim writes at most `pairs` pairs into it.
        let n = unsafe subject.withUnsafeBufferPointer { b in
            unsafe withUnsafeMutableBytes(of: &m.offsets) { o in
                unsafe tern_regex_search(code, b.baseAddress, b.count, start, o.baseAddress!.assumingMemoryBound(to: Int.self), pairs)
            }
        }
        guard n > 0 else { return nil }
        m.count = Int(n)
        return m
    }
}

/// Where a search matched (`CompiledRegex.firstMatch`): byte offsets of the whole match and of groups 1–9.
public struct RegexMatch: Sendable {
    /// (start, end) per group; -1 (PCRE2_UNSET) for a group that took no part. A fixed tuple: no allocation.
    fileprivate var offsets: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int,
                              Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)
    /// How many groups (from 0) the search reported.
    fileprivate(set) var count = 0

    /// The whole match.
    public var range: Range<Int> { group(0) ?? 0..<0 }

    /// Group `n` (0: the whole match), nil when it took no part in the match or the pattern has no such group.
    public func group(_ n: Int) -> Range<Int>? {
        guard n >= 0, n < count else { return nil }
        // SAFETY: n < count <= TERN_REGEX_GROUPS, so both words lie inside the 20-word tuple.
        let (start, end) = unsafe withUnsafeBytes(of: offsets) { b in
            unsafe (b.load(fromByteOffset: 16 * n, as: Int.self), b.load(fromByteOffset: 16 * n + 8, as: Int.self))
        }
        guard start >= 0, end >= start else { return nil }
        return start..<end
    }
}
