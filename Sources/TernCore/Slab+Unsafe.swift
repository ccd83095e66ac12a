/// A fixed-capacity store of `Element` values addressed by slot index and generation.
///
/// Reactors keep connection state here (anchors.md §4 rule 5): a completion token carries the slot and the
/// generation it was issued for, and `isCurrent` tells a late completion for a slot that has since been
/// freed and reused (stale: drop it) from a live one. Storage is reserved once at creation and pages are
/// touched only as slots are first used, so a large capacity costs address space, not resident memory.
/// Single-threaded: owned by one reactor.
@safe public final class Slab<Element> {
    /// Slot and generation. The generation uses the low 22 bits (the token format has room for 22: TernIO's `Token.generationMask`).
    public struct ID: Equatable, Hashable, Sendable {
        public var index: UInt32
        public var generation: UInt32
        @inlinable public init(index: UInt32, generation: UInt32) {
            self.index = index
            self.generation = generation
        }
    }

    public let capacity: Int
    // Inlinable hot paths (specialised in the reactor handlers' modules, so a slot access is a few loads, not
    // a generic call): the storage is visible to them.
    public var count: Int { live }
    @usableFromInline let elements: UnsafeMutablePointer<Element>
    @usableFromInline let generations: UnsafeMutablePointer<UInt32>
    @usableFromInline let occupied: UnsafeMutablePointer<Bool>
    @usableFromInline let freeList: UnsafeMutablePointer<UInt32>
    /// The slab's counters (live elements, free-list length, slots never used) in memory of their own rather
    /// than stored properties: every slot access checks `neverUsed`, and a stored `var` of a class is read under
    /// a dynamic exclusivity check (swift_beginAccess, about 40 instructions), several per request.
    @usableFromInline let counters: UnsafeMutablePointer<Int>
    @inlinable var live: Int {
        get { unsafe counters[0] }
        set { unsafe counters[0] = newValue }
    }
    @inlinable var freeCount: Int {
        get { unsafe counters[1] }
        set { unsafe counters[1] = newValue }
    }
    /// Slots at and above this index were never used: their metadata is still uninitialised memory.
    @inlinable var neverUsed: UInt32 {
        get { UInt32(truncatingIfNeeded: unsafe counters[2]) }
        set { unsafe counters[2] = Int(newValue) }
    }

    public init(capacity: Int) {
        precondition(capacity > 0 && capacity <= Int(UInt32.max), "slab capacity out of range")
        self.capacity = capacity
        // SAFETY: the slab owns these five allocations until deinit; every access below checks the index
        // against `neverUsed` (≤ capacity) or comes from an ID this slab handed out.
        unsafe elements = UnsafeMutablePointer<Element>.allocate(capacity: capacity)
        unsafe generations = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        unsafe occupied = UnsafeMutablePointer<Bool>.allocate(capacity: capacity)
        unsafe freeList = UnsafeMutablePointer<UInt32>.allocate(capacity: capacity)
        unsafe counters = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        unsafe counters.initialize(repeating: 0, count: 3)
    }

    deinit {
        for i in 0..<Int(neverUsed) where unsafe occupied[i] {
            // SAFETY: occupied slots below neverUsed hold an initialised element.
            unsafe (elements + i).deinitialize(count: 1)
        }
        unsafe elements.deallocate()
        unsafe generations.deallocate()
        unsafe occupied.deallocate()
        unsafe freeList.deallocate()
        unsafe counters.deallocate()
    }

    /// Stores `element` in a free slot; nil when the slab is full.
    @inlinable
    public func insert(_ element: Element) -> ID? {
        let index: UInt32
        if freeCount > 0 {
            freeCount -= 1
            // SAFETY: freeCount < capacity entries were written by remove().
            unsafe index = freeList[freeCount]
        } else if Int(neverUsed) < capacity {
            index = neverUsed
            neverUsed += 1
            // SAFETY: index < capacity; first use of this slot initialises its metadata.
            unsafe (generations + Int(index)).initialize(to: 0)
            unsafe (occupied + Int(index)).initialize(to: false)
        } else {
            return nil
        }
        // SAFETY: index < neverUsed ≤ capacity and the slot is free, so its element memory is uninitialised.
        unsafe (elements + Int(index)).initialize(to: element)
        unsafe occupied[Int(index)] = true
        live += 1
        return ID(index: index, generation: unsafe generations[Int(index)])
    }

    /// Frees the slot and advances its generation, so tokens issued for it become stale.
    @inlinable
    public func remove(_ id: ID) {
        precondition(isCurrent(id), "removing a slot that is not live")
        let i = Int(id.index)
        // SAFETY: isCurrent checked the index is below neverUsed and the slot holds an element.
        unsafe (elements + i).deinitialize(count: 1)
        unsafe occupied[i] = false
        unsafe generations[i] = (unsafe generations[i] &+ 1) & 0x3F_FFFF
        unsafe freeList[freeCount] = id.index
        freeCount += 1
        live -= 1
    }

    /// True when `id` names a live element (its slot is occupied and its generation matches).
    @inlinable
    public func isCurrent(_ id: ID) -> Bool {
        guard id.index < neverUsed else { return false }
        // SAFETY: index < neverUsed, so the metadata is initialised.
        return unsafe (occupied[Int(id.index)] && generations[Int(id.index)] == id.generation)
    }

    /// The ID of the live element at `index`, or nil when that slot is free.
    @inlinable
    public func id(at index: UInt32) -> ID? {
        guard index < neverUsed, unsafe occupied[Int(index)] else { return nil }
        // SAFETY: index < neverUsed, so the metadata is initialised.
        return ID(index: index, generation: unsafe generations[Int(index)])
    }

    /// The live element for `id`. Precondition: `isCurrent(id)`.
    @inlinable
    public subscript(id: ID) -> Element {
        _read {
            precondition(isCurrent(id), "stale slab ID")
            // SAFETY: checked live just above.
            yield unsafe elements[Int(id.index)]
        }
        _modify {
            precondition(isCurrent(id), "stale slab ID")
            // SAFETY: checked live just above.
            yield unsafe &elements[Int(id.index)]
        }
    }

    /// Calls `body` for every live slot (shutdown paths only).
    public func forEachID(_ body: (ID) -> Void) {
        for i in 0..<neverUsed where unsafe occupied[Int(i)] {
            body(ID(index: i, generation: unsafe generations[Int(i)]))
        }
    }
}
