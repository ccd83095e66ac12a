import CTernYAML

/// Reads YAML text into `YAMLNode` trees with libyaml's event parser (not Yams: it pulls full Foundation into the
/// sidecar). Anchors and aliases are resolved; tags are ignored; marks give each node its line.
///
/// Every walk of a tree recurses once per level and follows every alias, and so does releasing it: the reader
/// refuses what would make those unbounded, aliases that expand past `YAMLExpansion`'s limits and nesting deeper
/// than `maximumDepth`, with the line of the alias or collection that crossed the limit.
public enum YAMLReader {
    /// Lists and maps nested deeper than this are refused, an alias counting as the depth of what it names. Istio
    /// resources nest about 15 deep; 40,000 levels (an 80 KB file) overflowed the 8 MiB main-thread stack while
    /// the tree was released, and libyaml's time grows with the square of the depth.
    public static let maximumDepth = 1_000

    /// Every document in `text`; `file` is only used in the result and in errors.
    public static func documents(_ text: String, file: String) throws(YAMLError) -> [YAMLDocument] {
        var expansion = YAMLExpansion()
        return try documents(text, file: file, expansion: &expansion)
    }

    /// Every document in `text`, counting what its aliases expand to in `expansion`, which one load carries from
    /// file to file so that the limits hold for the configuration as a whole.
    public static func documents(_ text: String, file: String,
                                 expansion: inout YAMLExpansion) throws(YAMLError) -> [YAMLDocument] {
        var bytes = Array(text.utf8)
        if bytes.isEmpty { return [] }
        // An unquoted IPv6 address ending in `::` inside a flow list (`addresses: [2001:db8::]`) is a plain scalar to
        // Go's YAML parser, which Istio users write for, and an error to libyaml (a `:` before `]` or `,` ends a
        // plain scalar there). Each such scalar libyaml stops at is quoted and the text read again; quoting adds no
        // line, so every line number stays the one written.
        let start = expansion
        for _ in 0..<64 {
            var attempt = start
            switch parse(&bytes, file: file, expansion: &attempt) {
            case .success(let documents):
                expansion = attempt
                return documents
            case .failure(let failure):
                guard let quote = failure.ipv6Scalar else { throw failure.error }
                bytes.insert(UInt8(ascii: "\""), at: quote.upperBound)
                bytes.insert(UInt8(ascii: "\""), at: quote.lowerBound)
            }
        }
        throw YAMLError(file: file, line: 1, message: "YAML: too many unquoted IPv6 addresses in flow lists; quote them")
    }

    struct Failure: Error {
        var error: YAMLError
        /// The byte range of an unquoted IPv6 address libyaml stopped in, to be quoted.
        var ipv6Scalar: Range<Int>?
    }

    /// The bytes of the IPv6 address in plain style that starts at `start` when libyaml stopped at a `:` in it
    /// (`at`), or nil: hexadecimal digits, colons and dots, with at least two colons, up to a flow indicator,
    /// a space or the end.
    static func ipv6Scalar(_ bytes: [UInt8], start: Int, at: Int) -> Range<Int>? {
        guard start >= 0, start <= at, at < bytes.count else { return nil }
        var end = start
        var colons = 0
        while end < bytes.count {
            let b = bytes[end]
            if b == UInt8(ascii: ":") {
                colons += 1
            } else if !(b == UInt8(ascii: ".") || (b >= 48 && b <= 57) || (b | 0x20 >= 97 && b | 0x20 <= 102)) {
                break
            }
            end += 1
        }
        guard end > at, colons >= 2, end - start <= 45 else { return nil }
        if end < bytes.count, ![UInt8(ascii: "]"), UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: " "),
                                UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t")].contains(bytes[end]) {
            return nil
        }
        return start..<end
    }

    /// The offset in UTF-8 `bytes` of the character at index `character`.
    static func byteOffset(_ bytes: [UInt8], character: Int) -> Int {
        var seen = -1
        for (i, b) in bytes.enumerated() where b & 0xC0 != 0x80 {
            seen += 1
            if seen == character { return i }
        }
        return bytes.count
    }

    private static func parse(_ bytes: inout [UInt8], file: String,
                              expansion: inout YAMLExpansion) -> Result<[YAMLDocument], Failure> {
        // SAFETY: the parser struct lives on this frame until yaml_parser_delete below; it is zeroed here and
        // initialised by libyaml before any other use.
        var parser = unsafe yaml_parser_t()
        guard unsafe yaml_parser_initialize(&parser) == 1 else {
            return .failure(Failure(error: YAMLError(file: file, line: 1, message: "cannot initialise the YAML parser")))
        }
        // SAFETY: deletes what yaml_parser_initialize set up, once.
        defer { unsafe yaml_parser_delete(&parser) }
        var builder = Builder(file: file, expansion: expansion)
        defer { expansion = builder.expansion }
        var ipv6: Range<Int>? = nil
        let scanned = bytes
        let result: Result<Void, YAMLError> = unsafe bytes.withUnsafeMutableBufferPointer { buffer in
            // SAFETY: `buffer` stays valid for the whole closure, which is the whole parse; libyaml only reads it.
            unsafe yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            while true {
                // SAFETY: parser and event live on this frame; every event is deleted after use (defer below), and
                // on failure libyaml leaves the event empty.
                var event = unsafe yaml_event_t()
                if unsafe yaml_parser_parse(&parser, &event) != 1 {
                    // SAFETY: on failure `problem` and `context` are NULL or static C strings of libyaml's, copied here.
                    let line = Int(unsafe parser.problem_mark.line) + 1
                    let problem = unsafe parser.problem.map { unsafe String(cString: $0) } ?? "syntax error"
                    var context = ""
                    if let c = unsafe parser.context { context = " " + (unsafe String(cString: c)) }
                    if problem == "found unexpected ':'" && context == " while scanning a plain scalar" {
                        // SAFETY: plain integer fields of the marks libyaml set with the error.
                        // libyaml's mark index counts characters, not bytes.
                        ipv6 = Self.ipv6Scalar(scanned, start: Self.byteOffset(scanned, character: Int(unsafe parser.context_mark.index)),
                                               at: Self.byteOffset(scanned, character: Int(unsafe parser.problem_mark.index)))
                    }
                    return .failure(YAMLError(file: file, line: line, message: "YAML: \(problem)\(context)"))
                }
                // SAFETY: the event was filled by a successful yaml_parser_parse; it is deleted once, after its
                // strings were copied into Swift values.
                defer { unsafe yaml_event_delete(&event) }
                // SAFETY: reading plain fields of the event; the union member read matches event.type below.
                let line = Int(unsafe event.start_mark.line) + 1
                switch unsafe event.type {
                case YAML_STREAM_END_EVENT:
                    return .success(())
                case YAML_DOCUMENT_START_EVENT:
                    builder.startDocument()
                case YAML_DOCUMENT_END_EVENT:
                    builder.endDocument()
                case YAML_SCALAR_EVENT:
                    // SAFETY: the scalar member for this event type.
                    let s = unsafe event.data.scalar
                    // SAFETY: libyaml owns `value` (length bytes) until yaml_event_delete, after this copy.
                    let value = unsafe String(
                        decoding: UnsafeBufferPointer(start: s.value, count: Int(s.length)), as: UTF8.self)
                    // SAFETY: `anchor` is NULL or a NUL-terminated string owned by the event, copied at once.
                    let style: YAMLNode.ScalarStyle = unsafe s.style == YAML_PLAIN_SCALAR_STYLE ? .plain : .quoted
                    let anchor = unsafe s.anchor.map { unsafe String(cString: $0) }
                    builder.expansion.scalar(bytes: value.utf8.count)
                    let size = YAMLExpansion.Size(nodes: 1, bytes: value.utf8.count)
                    if let e = builder.add(YAMLNode(.scalar(value, style), line: line), anchor: anchor,
                                           size: size, height: 0) {
                        return .failure(e)
                    }
                case YAML_SEQUENCE_START_EVENT:
                    // SAFETY: the sequence_start member for this event type; its anchor copied at once.
                    let anchor = unsafe event.data.sequence_start.anchor.map { unsafe String(cString: $0) }
                    if let e = builder.open(mapping: false, line: line, anchor: anchor) { return .failure(e) }
                case YAML_MAPPING_START_EVENT:
                    // SAFETY: the mapping_start member for this event type; its anchor copied at once.
                    let anchor = unsafe event.data.mapping_start.anchor.map { unsafe String(cString: $0) }
                    if let e = builder.open(mapping: true, line: line, anchor: anchor) { return .failure(e) }
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    if let e = builder.close() { return .failure(e) }
                case YAML_ALIAS_EVENT:
                    // SAFETY: the alias member for this event type; its anchor copied at once.
                    let name = unsafe event.data.alias.anchor.map { unsafe String(cString: $0) } ?? ""
                    if let e = builder.alias(name, line: line) { return .failure(e) }
                default:
                    break
                }
            }
        }
        if case .failure(let e) = result { return .failure(Failure(error: e, ipv6Scalar: ipv6)) }
        return .success(builder.documents)
    }
}

/// Assembles nodes from events: a stack of open collections (their items kept apart so appending stays
/// amortised O(1)), each mapping remembering a pending key. Each anchored node is kept with its expanded size and
/// height, which its aliases add where they are used.
private struct Builder {
    struct Frame {
        var isMapping: Bool
        var line: Int
        var anchor: String?
        /// The expansion's size when the collection opened, itself counted.
        var start: YAMLExpansion.Size
        /// Levels of collections below this one, through aliases too.
        var height = 0
        var items: [YAMLNode] = []
        var pairs: [(key: YAMLNode, value: YAMLNode)] = []
        var pendingKey: YAMLNode?
    }

    struct Anchored {
        var node: YAMLNode
        var size: YAMLExpansion.Size
        /// Levels of collections, the node itself included (0 for a scalar).
        var height: Int
    }

    let file: String
    var expansion: YAMLExpansion
    var documents: [YAMLDocument] = []
    var stack: [Frame] = []
    var root: YAMLNode?
    var anchors: [String: Anchored] = [:]

    init(file: String, expansion: YAMLExpansion) {
        self.file = file
        self.expansion = expansion
    }

    mutating func startDocument() {
        root = nil
        anchors = [:]
    }

    mutating func endDocument() {
        if let root { documents.append(YAMLDocument(file: file, root: root)) }
        root = nil
    }

    mutating func open(mapping: Bool, line: Int, anchor: String?) -> YAMLError? {
        guard stack.count < YAMLReader.maximumDepth else {
            return YAMLError(file: file, line: line,
                             message: "YAML: lists and maps nested more than \(YAMLReader.maximumDepth) deep")
        }
        let before = expansion.size
        expansion.collection()
        stack.append(Frame(isMapping: mapping, line: line, anchor: anchor, start: before))
        return nil
    }

    mutating func close() -> YAMLError? {
        guard let top = stack.popLast() else { return nil }
        let node = YAMLNode(top.isMapping ? .mapping(top.pairs) : .sequence(top.items), line: top.line)
        let now = expansion.size
        let size = YAMLExpansion.Size(nodes: now.nodes - top.start.nodes, bytes: now.bytes - top.start.bytes)
        return add(node, anchor: top.anchor, size: size, height: top.height + 1)
    }

    mutating func alias(_ name: String, line: Int) -> YAMLError? {
        guard let anchored = anchors[name] else {
            return YAMLError(file: file, line: line, message: "YAML: unknown anchor *\(name)")
        }
        if let message = expansion.alias(anchored.size) {
            return YAMLError(file: file, line: line, message: "YAML: " + message)
        }
        guard stack.count + anchored.height <= YAMLReader.maximumDepth else {
            return YAMLError(file: file, line: line,
                             message: "YAML: lists and maps nested more than \(YAMLReader.maximumDepth) deep (through *\(name))")
        }
        var node = anchored.node
        node.line = line
        return add(node, anchor: nil, size: anchored.size, height: anchored.height)
    }

    mutating func add(_ node: YAMLNode, anchor: String?, size: YAMLExpansion.Size, height: Int) -> YAMLError? {
        if let anchor { anchors[anchor] = Anchored(node: node, size: size, height: height) }
        guard !stack.isEmpty else {
            root = node
            return nil
        }
        let i = stack.count - 1
        stack[i].height = max(stack[i].height, height)
        if !stack[i].isMapping {
            stack[i].items.append(node)
        } else if let key = stack[i].pendingKey {
            stack[i].pairs.append((key, node))
            stack[i].pendingKey = nil
        } else {
            guard node.scalar != nil else {
                return YAMLError(file: file, line: node.line, message: "YAML: mapping keys must be scalars")
            }
            stack[i].pendingKey = node
        }
        return nil
    }
}
