/// What a configuration's YAML stands for once its aliases are followed, counted while it is read, and the bound
/// that keeps it proportional to what was written.
///
/// `YAMLReader` shares an anchored node with every alias to it (the tree is a value tree, copied on write), so
/// reading costs what was written; but every walk of the tree (decoding, validation, /config_dump's JSON) visits
/// an aliased node once per alias. Ten levels of nine aliases each (the "billion laughs") are 1 KB of text and
/// 3.5 billion nodes to walk. Go's yaml.v3, which Kubernetes' API server reads YAML with, refuses such a document
/// as "excessive aliasing" when alias expansion outgrows the nodes it decoded; Tern does the same, over every file
/// of one load (so neither many small documents nor many files add up to a large expansion), at each alias:
///
///     expanded nodes         ≤ max(10 × nodes written,        100,000)
///     expanded scalar bytes  ≤ max(10 × scalar bytes written, 1 MiB)
///
/// A node written is a scalar, a list, a map or an alias (`*name` counts as one); the expanded count is what a walk
/// visits, an alias counting as every node of what it names (aliases inside that included). Scalar bytes bound
/// what /config_dump renders, which the node count alone does not: an alias to a long string is one node. The
/// counts are of the text, never of time or memory, so a document is accepted or refused the same on any machine.
public struct YAMLExpansion: Sendable, Equatable {
    /// How many times what was written its expansion may be.
    public static let ratio = 10
    /// Expanded nodes allowed whatever was written: far above what aliases in an Istio configuration expand to
    /// (a ports list or a header match reused a few times), far below what would slow a walk (a few ms each).
    public static let minimumNodeLimit = 100_000
    /// Expanded scalar bytes allowed whatever was written (/config_dump renders them about one to one).
    public static let minimumByteLimit = 1 << 20

    public private(set) var writtenNodes = 0
    public private(set) var expandedNodes = 0
    public private(set) var writtenBytes = 0
    public private(set) var expandedBytes = 0

    public init() {}

    public var nodeLimit: Int { max(Self.ratio * writtenNodes, Self.minimumNodeLimit) }
    public var byteLimit: Int { max(Self.ratio * writtenBytes, Self.minimumByteLimit) }

    /// The size of a node as a walk sees it: what `expandedNodes` and `expandedBytes` grew by while it was read.
    public struct Size: Sendable, Equatable {
        public var nodes: Int
        public var bytes: Int
    }

    /// The expanded size so far; a collection's size is the difference between this at its end and at its start.
    var size: Size { Size(nodes: expandedNodes, bytes: expandedBytes) }

    mutating func scalar(bytes: Int) {
        writtenNodes += 1
        expandedNodes += 1
        writtenBytes += bytes
        expandedBytes += bytes
    }

    mutating func collection() {
        writtenNodes += 1
        expandedNodes += 1
    }

    /// Counts an alias to a node of `size`; the refusal's text when the configuration now expands past a limit.
    /// Checked at every alias, so the counts never exceed the limits by more than one anchored node's size and
    /// cannot overflow.
    mutating func alias(_ size: Size) -> String? {
        writtenNodes += 1
        expandedNodes += size.nodes
        expandedBytes += size.bytes
        if expandedNodes > nodeLimit {
            return "excessive aliasing: this alias expands the configuration to \(expandedNodes) nodes, more than "
                + "\(nodeLimit) (\(Self.ratio) × the \(writtenNodes) written, at least \(Self.minimumNodeLimit))"
        }
        if expandedBytes > byteLimit {
            return "excessive aliasing: this alias expands the configuration to \(expandedBytes) bytes of scalars, "
                + "more than \(byteLimit) (\(Self.ratio) × the \(writtenBytes) written, at least \(Self.minimumByteLimit))"
        }
        return nil
    }
}
