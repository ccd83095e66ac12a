import Histogram

/// HdrHistogram's interval log, format version 1.3, as HistogramLogWriter writes it and HistogramLogReader,
/// HistogramLogProcessor and the online plotters read it: comment lines, a legend, then one line per interval
///
///     Tag=corrected,0.000,10.000,12.345,HISTFAAAA…
///
/// (tag, start seconds after StartTime, length in seconds, the interval's maximum divided by `maxValueUnitRatio`,
/// and the histogram in HdrHistogram's V2 compressed encoding, base64). The values are microseconds, so a ratio
/// of 1,000 shows the maximum in milliseconds.
public enum HistogramLog {
    public struct Interval {
        var tag: String?
        var startSeconds: Double
        var lengthSeconds: Double
        var histogram: Histogram<UInt64>

        public init(tag: String?, startSeconds: Double, lengthSeconds: Double, histogram: Histogram<UInt64>) {
            self.tag = tag
            self.startSeconds = startSeconds
            self.lengthSeconds = lengthSeconds
            self.histogram = histogram
        }
    }

    static let maxValueUnitRatio = 1000.0

    public static func document(startEpochSeconds: Double, intervals: [Interval]) -> String {
        header(startEpochSeconds: startEpochSeconds) + intervals.map(line).joined()
    }

    /// The comment lines and the legend.
    public static func header(startEpochSeconds: Double) -> String {
        var out = "#[Histogram log format version 1.3]\n"
        out += "#[StartTime: \(RunReport.number(startEpochSeconds)) (seconds since epoch), \(iso8601(epochSeconds: startEpochSeconds))]\n"
        out += "#[Latency in microseconds; written by tern-load]\n"
        return out + "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"
    }

    /// One interval's line.
    public static func line(_ i: Interval) -> String {
        var out = i.tag.map { "Tag=\($0)," } ?? ""
        let maxValue = i.histogram.totalCount == 0 ? 0 : Double(i.histogram.max) / maxValueUnitRatio
        out += "\(RunReport.number(i.startSeconds)),\(RunReport.number(i.lengthSeconds)),\(RunReport.number(maxValue)),"
        return out + base64(compressedEncoding(i.histogram)) + "\n"
    }

    // MARK: - V2 encoding (AbstractHistogram.encodeIntoByteBuffer and encodeIntoCompressedByteBuffer)

    static let v2Cookie: UInt32 = 0x1c84_9303 | 0x10
    static let v2CompressedCookie: UInt32 = 0x1c84_9304 | 0x10

    /// The uncompressed V2 encoding: a 40-byte big-endian header (cookie, payload length, normalizing index
    /// offset, significant digits, lowest discernible value, highest trackable value, integer-to-double ratio),
    /// then the counts array up to the maximum's index as ZigZag LEB128 varints, a run of zeros written as its
    /// negated length.
    static func encoding(_ h: Histogram<UInt64>) -> [UInt8] {
        var payload: [UInt8] = []
        if h.totalCount > 0 {
            let layout = CountsLayout(h)
            var counts = [UInt64](repeating: 0, count: layout.index(of: h.max) + 1)
            for v in h.recordedValues() { counts[layout.index(of: v.value)] += UInt64(v.count) }
            var i = 0
            while i < counts.count {
                if counts[i] == 0 {
                    var zeros = 1
                    while i + zeros < counts.count && counts[i + zeros] == 0 { zeros += 1 }
                    i += zeros
                    zigZag(zeros > 1 ? -Int64(zeros) : 0, into: &payload)
                } else {
                    zigZag(Int64(counts[i]), into: &payload)
                    i += 1
                }
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(40 + payload.count)
        bigEndian(v2Cookie, into: &out)
        bigEndian(UInt32(payload.count), into: &out)
        bigEndian(UInt32(0), into: &out)
        bigEndian(UInt32(h.numberOfSignificantValueDigits.rawValue), into: &out)
        bigEndian(h.lowestDiscernibleValue, into: &out)
        bigEndian(h.highestTrackableValue, into: &out)
        bigEndian((1.0).bitPattern, into: &out)
        return out + payload
    }

    /// The compressed V2 encoding: cookie, compressed length, then the uncompressed encoding DEFLATEd in a zlib
    /// stream (what java.util.zip.Deflater writes).
    static func compressedEncoding(_ h: Histogram<UInt64>) -> [UInt8] {
        let deflated = Zlib.compress(encoding(h))
        var out: [UInt8] = []
        bigEndian(v2CompressedCookie, into: &out)
        bigEndian(UInt32(deflated.count), into: &out)
        return out + deflated
    }

    /// Where HdrHistogram keeps a value's count: buckets of `subBucketHalfCount` slots, each twice as wide as the
    /// last, after a first bucket of twice as many (AbstractHistogram.countsArrayIndex).
    struct CountsLayout {
        let unitMagnitude: Int
        let subBucketHalfCountMagnitude: Int
        let subBucketMask: UInt64
        let leadingZeroCountBase: Int

        init(_ h: Histogram<UInt64>) {
            unitMagnitude = 63 - h.lowestDiscernibleValue.leadingZeroBitCount
            var largestSingleUnit: UInt64 = 2
            for _ in 0..<h.numberOfSignificantValueDigits.rawValue { largestSingleUnit *= 10 }
            // ceil(log2(largestSingleUnit))
            let subBucketCountMagnitude = 64 - (largestSingleUnit - 1).leadingZeroBitCount
            subBucketHalfCountMagnitude = max(subBucketCountMagnitude, 1) - 1
            subBucketMask = (UInt64(1) << subBucketCountMagnitude - 1) << unitMagnitude
            leadingZeroCountBase = 64 - unitMagnitude - subBucketCountMagnitude
        }

        func index(of value: UInt64) -> Int {
            let bucket = leadingZeroCountBase - (value | subBucketMask).leadingZeroBitCount
            let subBucket = Int(value >> (bucket + unitMagnitude))
            return ((bucket + 1) << subBucketHalfCountMagnitude) + subBucket - (1 << subBucketHalfCountMagnitude)
        }
    }

    /// ZigZagEncoding.putLong: LEB128 of the zigzagged value, at most 9 bytes (the ninth carries 8 bits).
    static func zigZag(_ value: Int64, into out: inout [UInt8]) {
        var v = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        for _ in 0..<8 {
            if v >> 7 == 0 {
                out.append(UInt8(v))
                return
            }
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(truncatingIfNeeded: v))
    }

    static func bigEndian<T: FixedWidthInteger>(_ value: T, into out: inout [UInt8]) {
        var shift = T.bitWidth - 8
        while shift >= 0 {
            out.append(UInt8(truncatingIfNeeded: value >> shift))
            shift -= 8
        }
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let b0 = UInt32(bytes[i]), b1 = n > 1 ? UInt32(bytes[i + 1]) : 0, b2 = n > 2 ? UInt32(bytes[i + 2]) : 0
            let triple = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(triple >> 18 & 63)])
            out.append(alphabet[Int(triple >> 12 & 63)])
            out.append(n > 1 ? alphabet[Int(triple >> 6 & 63)] : UInt8(ascii: "="))
            out.append(n > 2 ? alphabet[Int(triple & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `2026-11-29T05:00:00Z` (UTC; days to civil date after Howard Hinnant's algorithm).
    static func iso8601(epochSeconds: Double) -> String {
        let total = Int64(epochSeconds.rounded(.down))
        let days = total >= 0 ? total / 86_400 : (total - 86_399) / 86_400
        let secs = total - days * 86_400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(year)-\(two(month))-\(two(day))T\(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60))Z"
    }
}
