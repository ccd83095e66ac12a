import CTernZlib
import Histogram
import Testing
@testable import TernLoadCore

/// HdrHistogram's V2 encoding and log format, byte for byte (AbstractHistogram.encodeIntoByteBuffer,
/// ZigZagEncoding, HistogramLogWriter).
@Suite struct HistogramLogTests {
    func histogram(_ values: [(UInt64, UInt64)]) -> Histogram<UInt64> {
        var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: LatencyRecorder.highestMicroseconds,
                                  numberOfSignificantValueDigits: .three)
        for (v, n) in values { _ = h.record(v, count: n) }
        return h
    }

    @Test func zigZagLEB128() {
        func enc(_ v: Int64) -> [UInt8] {
            var out: [UInt8] = []
            HistogramLog.zigZag(v, into: &out)
            return out
        }
        #expect(enc(0) == [0])
        #expect(enc(-1) == [1])
        #expect(enc(1) == [2])
        #expect(enc(63) == [126])
        #expect(enc(64) == [0x80, 0x01])
        #expect(enc(-3) == [5])
        #expect(enc(Int64.max) == [0xFE] + [UInt8](repeating: 0xFF, count: 8))
    }

    @Test func base64MatchesRFC4648() {
        #expect(HistogramLog.base64([]) == "")
        #expect(HistogramLog.base64(Array("f".utf8)) == "Zg==")
        #expect(HistogramLog.base64(Array("fo".utf8)) == "Zm8=")
        #expect(HistogramLog.base64(Array("foobar".utf8)) == "Zm9vYmFy")
        // The compressed cookie is why every log entry starts with "HISTF".
        #expect(HistogramLog.base64([0x1c, 0x84, 0x93, 0x14]).hasPrefix("HISTF"))
    }

    @Test func countsLayoutMatchesTheHistogramsBuckets() {
        let h = histogram([])
        let layout = HistogramLog.CountsLayout(h)
        #expect(layout.index(of: 0) == 0)
        #expect(layout.index(of: 1000) == 1000)
        #expect(layout.index(of: 2047) == 2047)
        #expect(layout.index(of: 2048) == 2048)
        #expect(layout.index(of: 2049) == 2048)  // bucket 1 counts in twos
        #expect(layout.index(of: 4096) == 3072)
        for v: UInt64 in [1, 999, 2048, 5000, 123_456, 9_999_999, 3_600_000_000] {
            #expect(layout.index(of: h.lowestEquivalentForValue(v)) == layout.index(of: h.highestEquivalentForValue(v)))
            #expect(layout.index(of: h.nextNonEquivalentForValue(v)) == layout.index(of: v) + 1)
        }
    }

    @Test func encodesTheV2HeaderAndCountsExactly() {
        // counts[0...3] = [0, 2, 0, 1]: single zeros are written as 0, not as a run.
        let bytes = HistogramLog.encoding(histogram([(1, 2), (3, 1)]))
        let header: [UInt8] = [0x1c, 0x84, 0x93, 0x13, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 3,
                               0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xd6, 0x93, 0xa4, 0x00,
                               0x3f, 0xf0, 0, 0, 0, 0, 0, 0]
        #expect(bytes == header + [0, 4, 0, 2])
        // A run of zeros is its negated length: 10 at index 10 follows ten empty slots.
        let run = HistogramLog.encoding(histogram([(10, 1)]))
        #expect(Array(run[40...]) == [19, 2])
    }

    @Test func compressedEncodingInflatesBackToTheEncoding() {
        let h = histogram([(100, 5), (2_500, 3), (1_000_000, 1)])
        let compressed = HistogramLog.compressedEncoding(h)
        #expect(Array(compressed[0..<4]) == [0x1c, 0x84, 0x93, 0x14])
        let length = Int(compressed[4]) << 24 | Int(compressed[5]) << 16 | Int(compressed[6]) << 8 | Int(compressed[7])
        #expect(length == compressed.count - 8)
        let plain = HistogramLog.encoding(h)
        var out = [UInt8](repeating: 0, count: plain.count + 16)
        var outLength = uLong(out.count)
        let deflated = Array(compressed[8...])
        let rc = out.withUnsafeMutableBufferPointer { o in
            deflated.withUnsafeBufferPointer { i in uncompress(o.baseAddress, &outLength, i.baseAddress, uLong(i.count)) }
        }
        #expect(rc == Z_OK)
        #expect(Array(out[0..<Int(outLength)]) == plain)
    }

    @Test func writesTheLogFormat() {
        let h = histogram([(1_500, 1)])
        let doc = HistogramLog.document(startEpochSeconds: 1_764_392_400.25, intervals: [
            .init(tag: "corrected", startSeconds: 1, lengthSeconds: 10, histogram: h),
        ])
        let lines = doc.split(separator: "\n").map(String.init)
        #expect(lines[0] == "#[Histogram log format version 1.3]")
        #expect(lines[1] == "#[StartTime: 1764392400.250 (seconds since epoch), 2025-11-29T05:00:00Z]")
        #expect(lines[3] == "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")
        #expect(lines[4].hasPrefix("Tag=corrected,1.000,10.000,1.500,HISTF"))
        #expect(HistogramLog.iso8601(epochSeconds: 951_782_400) == "2000-02-29T00:00:00Z")
        #expect(HistogramLog.iso8601(epochSeconds: 0) == "1970-01-01T00:00:00Z")
    }
}
