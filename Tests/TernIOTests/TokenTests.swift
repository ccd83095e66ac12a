import Testing
@testable import TernIO

@Suite struct TokenTests {
    @Test func everyHandlerOpRoundTripsAndIsNeverInternal() {
        for op in 0...255 {
            let t = Token(op: UInt8(op), slot: 0xFFFF_FFFF, generation: Token.generationMask)
            #expect(t.op == UInt8(op))
            #expect(t.slot == 0xFFFF_FFFF)
            #expect(t.generation == Token.generationMask)
            #expect(!t.isInternal)
        }
    }

    @Test func generationIsCutToTheMaskNotIntoTheFlags() {
        let t = Token(op: 7, slot: 3, generation: 0xFFFF_FFFF)
        #expect(t.generation == Token.generationMask)
        #expect(!t.isInternal)
    }

    @Test func linkHeadsAndBackendOpsAreInternalAndTellApart() {
        let t = Token(op: 255, slot: 9, generation: 4)
        let head = t.linkHead
        #expect(head.isInternal)
        #expect(head != t)
        #expect(head.op == 255 && head.slot == 9 && head.generation == 4)
        let wake = Token.internalOp(1)
        #expect(wake.isInternal)
        #expect(wake.isInternal(1))
        #expect(!wake.isInternal(2))
        // A link head of a handler op equal to a backend kind is not that backend op.
        #expect(!Token(op: 1, slot: 0, generation: 0).linkHead.isInternal(1))
    }
}
