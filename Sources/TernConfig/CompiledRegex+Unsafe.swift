import CTernPCRE2

/// A regex in RE2 syntax compiled once per RouteTable with PCRE2 (JIT when available), matching whole strings
/// as Envoy's safe_regex does. PCRE2 accepts a superset of RE2; patterns are not restricted further.
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

    public static func compile(_ pattern: String, caseless: Bool) -> Result<CompiledRegex, CompileError> {
        var bytes = Array(pattern.utf8)
        var message = [CChar](repeating: 0, count: 256)
        var offset = 0
        let capacity = message.count
        // SAFETY: the pattern and message buffers outlive the call; the shim writes at most `capacity` bytes.
        let code = unsafe bytes.withUnsafeMutableBufferPointer { p in
            unsafe message.withUnsafeMutableBufferPointer { m in
                unsafe tern_regex_compile(p.baseAddress, p.count, caseless ? 1 : 0, m.baseAddress, capacity, &offset)
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
}
