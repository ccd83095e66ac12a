import Testing
import TernCore

@Suite struct SlabTests {
    @Test func insertLookupRemove() {
        let slab = Slab<Int>(capacity: 4)
        let a = slab.insert(10)!
        let b = slab.insert(20)!
        #expect(slab[a] == 10)
        #expect(slab[b] == 20)
        slab[a] += 1
        #expect(slab[a] == 11)
        #expect(slab.count == 2)
        slab.remove(a)
        #expect(!slab.isCurrent(a))
        #expect(slab.count == 1)
    }

    @Test func reusedSlotHasANewGeneration() {
        let slab = Slab<String>(capacity: 1)
        let first = slab.insert("first")!
        slab.remove(first)
        let second = slab.insert("second")!
        #expect(second.index == first.index)
        #expect(second.generation != first.generation)
        // A token issued for the first occupant is stale now.
        #expect(!slab.isCurrent(first))
        #expect(slab.isCurrent(second))
        #expect(slab.id(at: first.index) == second)
    }

    @Test func fullSlabRefusesAndRecovers() {
        let slab = Slab<Int>(capacity: 2)
        let a = slab.insert(1)!
        _ = slab.insert(2)!
        #expect(slab.insert(3) == nil)
        slab.remove(a)
        #expect(slab.insert(4) != nil)
    }

    @Test func generationWrapsWithin22Bits() {
        // The token keeps 22 bits of generation (TernIO's Token.generationMask): a slot reused 2^22 times
        // comes back to generation 0 instead of growing past what a token can carry.
        let slab = Slab<Int>(capacity: 1)
        var last = slab.insert(0)!
        var wrapped = false
        for _ in 0..<(1 << 22) {
            slab.remove(last)
            last = slab.insert(0)!
            #expect(last.generation <= 0x3F_FFFF)
            if last.generation == 0 { wrapped = true }
        }
        #expect(wrapped)
    }

    @Test func forEachVisitsLiveSlotsOnly() {
        let slab = Slab<Int>(capacity: 8)
        let ids = (0..<5).map { slab.insert($0)! }
        slab.remove(ids[1])
        slab.remove(ids[3])
        var seen: [Int] = []
        slab.forEachID { seen.append(slab[$0]) }
        #expect(seen.sorted() == [0, 2, 4])
    }
}
