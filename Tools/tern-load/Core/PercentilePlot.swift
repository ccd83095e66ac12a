import Glibc
import Histogram

/// An SVG of latency by percentile, as HdrHistogram's plotter draws it: the x axis is logarithmic in
/// 1 / (1 − percentile), so 90%, 99%, 99.9% and 99.99% are evenly spaced and the tail gets the room;
/// the y axis is latency in milliseconds. One curve per series (two for --compare).
public enum PercentilePlot {
    static let width = 800.0, height = 480.0
    static let left = 70.0, right = 20.0, top = 30.0, bottom = 50.0
    static let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    /// Up to 99.999%: x runs over log10(1/(1-p)) from 0 to 5.
    static let decades = 5.0

    public static func svg(series: [(name: String, histogram: Histogram<UInt64>)], title: String) -> String {
        let plotW = width - left - right, plotH = height - top - bottom
        var maxMs = 0.001
        for s in series where s.histogram.totalCount > 0 { maxMs = Swift.max(maxMs, Double(s.histogram.max) / 1000) }
        maxMs *= 1.05
        func x(_ percentile: Double) -> Double {
            let tail = Swift.max(1 - percentile / 100, 1e-5)
            return left + Swift.min(-log10(tail), decades) / decades * plotW
        }
        func y(_ ms: Double) -> Double { top + plotH - ms / maxMs * plotH }

        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="20" font-family="sans-serif" font-size="14">\(escape(title))</text>

        """
        // Axes and grid.
        out += line(left, top + plotH, left + plotW, top + plotH, "#000") + line(left, top, left, top + plotH, "#000")
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].enumerated() {
            let gx = left + Double(i) / decades * plotW
            out += line(gx, top, gx, top + plotH, "#ddd")
            out += text(gx, top + plotH + 18, label, anchor: "middle")
        }
        for i in 0...4 {
            let ms = maxMs * Double(i) / 4
            out += line(left, y(ms), left + plotW, y(ms), "#eee")
            out += text(left - 6, y(ms) + 4, format(ms), anchor: "end")
        }
        out += text(left + plotW / 2, height - 10, "percentile", anchor: "middle")
        out += "<text x=\"16\" y=\"\(top + plotH / 2)\" font-family=\"sans-serif\" font-size=\"12\" transform=\"rotate(-90 16 \(top + plotH / 2))\" text-anchor=\"middle\">latency (ms)</text>\n"

        for (i, s) in series.enumerated() where s.histogram.totalCount > 0 {
            var points: [String] = []
            var p = 0.0
            while p <= 99.999 {
                let ms = Double(s.histogram.valueAtPercentile(p)) / 1000
                points.append("\(format(x(p))),\(format(y(ms)))")
                // 20 points per decade of the tail.
                let tail = 1 - p / 100
                p = (1 - tail * pow10(-0.05)) * 100
            }
            let colour = colours[i % colours.count]
            out += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
            out += "<rect x=\"\(format(left + 10))\" y=\"\(format(top + 8 + Double(i) * 18))\" width=\"12\" height=\"12\" fill=\"\(colour)\"/>\n"
            out += text(left + 28, top + 18 + Double(i) * 18, s.name, anchor: "start")
        }
        return out + "</svg>\n"
    }

    private static func pow10(_ e: Double) -> Double { Glibc.pow(10, e) }
    private static func log10(_ v: Double) -> Double { Glibc.log10(v) }

    private static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ colour: String) -> String {
        "<line x1=\"\(format(x1))\" y1=\"\(format(y1))\" x2=\"\(format(x2))\" y2=\"\(format(y2))\" stroke=\"\(colour)\"/>\n"
    }

    private static func text(_ x: Double, _ y: Double, _ s: String, anchor: String) -> String {
        "<text x=\"\(format(x))\" y=\"\(format(y))\" font-family=\"sans-serif\" font-size=\"11\" text-anchor=\"\(anchor)\">\(escape(s))</text>\n"
    }

    static func format(_ v: Double) -> String { RunReport.number(v) }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
