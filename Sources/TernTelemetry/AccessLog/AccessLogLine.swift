// One access-log line composed from a record and a capture slot, in either format (AccessLogFormat.swift has
// the rules). Runs on the reactor that finished the request: it writes into a fixed LineBuffer byte by byte,
// with no String building, no array growth and no existential, so it allocates nothing.

/// Renders access-log lines.
public enum AccessLogLine {
    /// The line for `record` and the request captured in `slot` of `capture` (nil: no request fields), with
    /// its newline (tests and tools; allocates). Nil when the line exceeds `limit` bytes.
    public static func render(_ format: AccessLogFormat, _ record: AccessLogRecord, capture: RequestCapture? = nil,
                              slot: Int = 0, limit: Int = 64 * 1024) -> String?
    {
        var line = LineBuffer(capacity: limit)
        write(format, record, capture, slot, into: &line)
        if line.overflowed { return nil }
        return String(decoding: line.bytes, as: UTF8.self)
    }

    /// `micros` since the epoch as Envoy's %START_TIME%: RFC 3339 in UTC with milliseconds
    /// (`2016-04-15T20:17:00.310Z`), truncated to the millisecond (allocates; tests).
    public static func startTime(_ micros: UInt64) -> String {
        var line = LineBuffer(capacity: 64)
        writeTime(micros, &line)
        return String(decoding: line.bytes, as: UTF8.self)
    }

    static func write(_ format: AccessLogFormat, _ r: borrowing AccessLogRecord, _ capture: RequestCapture?, _ slot: Int,
                      into line: inout LineBuffer)
    {
        switch format {
        case .json: json(r, capture, slot, &line)
        case .text: text(r, capture, slot, &line)
        }
    }

    // MARK: JSON (Istio's keys, in the order Istio lists them)

    private static func json(_ r: borrowing AccessLogRecord, _ capture: RequestCapture?, _ slot: Int, _ line: inout LineBuffer) {
        let http = r.protocol != .tcp
        // TCP lines carry no request fields: a slot reused from an HTTP request must not leak into them.
        let request = http ? capture : nil
        line.append("{\"start_time\":\"")
        writeTime(r.startMicros, &line)
        line.append("\",\"route_name\":")
        jsonString(r.routeName, &line)
        line.append(",\"method\":")
        jsonCaptured(request, slot, .method, &line)
        line.append(",\"path\":")
        jsonCaptured(request, slot, .path, &line)
        line.append(",\"protocol\":")
        if http {
            line.append("\"")
            line.append(r.protocol.name)
            line.append("\"")
        } else {
            line.append("null")
        }
        line.append(",\"response_code\":")
        line.appendDecimal(UInt64(clamping: r.responseCode))
        line.append(",\"response_flags\":\"")
        r.flags.write { line.append($0) }
        line.append("\",\"response_code_details\":")
        jsonString(r.responseCodeDetails, &line)
        line.append(",\"connection_termination_details\":")
        jsonString(r.connectionTerminationDetails, &line)
        line.append(",\"bytes_received\":")
        line.appendDecimal(r.bytesReceived)
        line.append(",\"bytes_sent\":")
        line.appendDecimal(r.bytesSent)
        line.append(",\"duration\":")
        line.appendDecimal(r.durationMicros / 1000)
        line.append(",\"upstream_service_time\":")
        if let t = r.upstreamServiceMicros { line.appendDecimal(t / 1000) } else { line.append("null") }
        line.append(",\"x_forwarded_for\":")
        jsonCaptured(request, slot, .forwardedFor, &line)
        line.append(",\"user_agent\":")
        jsonCaptured(request, slot, .userAgent, &line)
        line.append(",\"request_id\":")
        jsonCaptured(request, slot, .requestID, &line)
        line.append(",\"authority\":")
        jsonCaptured(request, slot, .authority, &line)
        line.append(",\"upstream_host\":")
        jsonString(r.upstreamHost, &line)
        line.append(",\"upstream_cluster\":")
        jsonString(r.upstreamCluster, &line)
        line.append(",\"upstream_local_address\":")
        jsonString(r.upstreamLocalAddress, &line)
        line.append(",\"downstream_local_address\":")
        jsonCaptured(capture, slot, .downstreamLocal, &line)
        line.append(",\"downstream_remote_address\":")
        jsonCaptured(capture, slot, .downstreamRemote, &line)
        line.append(",\"requested_server_name\":")
        if r.requestedServerName.isEmpty { jsonCaptured(capture, slot, .serverName, &line) } else { jsonString(r.requestedServerName, &line) }
        line.append(",\"downstream_tls_version\":")
        jsonCaptured(capture, slot, .tlsVersion, &line)
        line.append(",\"downstream_tls_cipher\":")
        jsonCaptured(capture, slot, .tlsCipher, &line)
        line.append(",\"upstream_transport_failure_reason\":")
        jsonString(r.upstreamTransportFailureReason, &line)
        line.append(",\"grpc_status\":")
        if r.grpcStatus >= 0 { line.appendDecimal(UInt64(r.grpcStatus)) } else { line.append("null") }
        line.append(",\"grpc_message\":")
        if r.grpcMessage.isEmpty {
            line.append("null")
        } else {
            line.append(UInt8(ascii: "\""))
            var e = ValueEscaper(.json)
            for i in 0..<r.grpcMessage.count { e.put(r.grpcMessage[i], &line) }
            e.finish(&line)
            line.append(UInt8(ascii: "\""))
        }
        line.append("}\n")
    }

    private static func jsonString(_ s: String, _ line: inout LineBuffer) {
        if s.isEmpty {
            line.append("null")
            return
        }
        line.append(UInt8(ascii: "\""))
        line.appendEscaped(s, .json)
        line.append(UInt8(ascii: "\""))
    }

    private static func jsonCaptured(_ capture: RequestCapture?, _ slot: Int, _ field: CapturedField, _ line: inout LineBuffer) {
        guard let capture, capture.length(slot, field) > 0 else {
            line.append("null")
            return
        }
        line.append(UInt8(ascii: "\""))
        line.appendEscaped(capture, slot, field, .json)
        line.append(UInt8(ascii: "\""))
    }


    // MARK: Text (Istio's EnvoyTextLogFormat)

    // [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    // %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
    // %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
    // "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    // %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME%
    // %ROUTE_NAME%\n
    private static func text(_ r: borrowing AccessLogRecord, _ capture: RequestCapture?, _ slot: Int, _ line: inout LineBuffer) {
        let http = r.protocol != .tcp
        let request = http ? capture : nil
        line.append("[")
        writeTime(r.startMicros, &line)
        line.append("] \"")
        textCaptured(request, slot, .method, &line)
        line.append(" ")
        textCaptured(request, slot, .path, &line)
        line.append(" ")
        if http { line.append(r.protocol.name) } else { line.append("-") }
        line.append("\" ")
        line.appendDecimal(UInt64(clamping: r.responseCode))
        line.append(" ")
        r.flags.write { line.append($0) }
        line.append(" ")
        textString(r.responseCodeDetails, &line)
        line.append(" ")
        textString(r.connectionTerminationDetails, &line)
        line.append(" \"")
        textString(r.upstreamTransportFailureReason, &line)
        line.append("\" ")
        line.appendDecimal(r.bytesReceived)
        line.append(" ")
        line.appendDecimal(r.bytesSent)
        line.append(" ")
        line.appendDecimal(r.durationMicros / 1000)
        line.append(" ")
        if let t = r.upstreamServiceMicros { line.appendDecimal(t / 1000) } else { line.append("-") }
        line.append(" \"")
        textCaptured(request, slot, .forwardedFor, &line)
        line.append("\" \"")
        textCaptured(request, slot, .userAgent, &line)
        line.append("\" \"")
        textCaptured(request, slot, .requestID, &line)
        line.append("\" \"")
        textCaptured(request, slot, .authority, &line)
        line.append("\" \"")
        textString(r.upstreamHost, &line)
        line.append("\" ")
        textString(r.upstreamCluster, &line)
        line.append(" ")
        textString(r.upstreamLocalAddress, &line)
        line.append(" ")
        textCaptured(capture, slot, .downstreamLocal, &line)
        line.append(" ")
        textCaptured(capture, slot, .downstreamRemote, &line)
        line.append(" ")
        if r.requestedServerName.isEmpty { textCaptured(capture, slot, .serverName, &line) } else { textString(r.requestedServerName, &line) }
        line.append(" ")
        textString(r.routeName, &line)
        line.append("\n")
    }

    private static func textString(_ s: String, _ line: inout LineBuffer) {
        if s.isEmpty {
            line.append(UInt8(ascii: "-"))
            return
        }
        line.appendEscaped(s, .text)
    }

    private static func textCaptured(_ capture: RequestCapture?, _ slot: Int, _ field: CapturedField, _ line: inout LineBuffer) {
        guard let capture, capture.length(slot, field) > 0 else {
            line.append(UInt8(ascii: "-"))
            return
        }
        line.appendEscaped(capture, slot, field, .text)
    }

    // MARK: Start time

    /// RFC 3339 UTC with milliseconds, from the proleptic Gregorian calendar (days → civil date as in Howard
    /// Hinnant's `civil_from_days`, exact for every day since 1970).
    static func writeTime(_ micros: UInt64, _ line: inout LineBuffer) {
        let millis = micros / 1000
        let seconds = millis / 1000
        let days = seconds / 86_400
        let secondOfDay = seconds % 86_400
        // Shift the epoch to 0000-03-01, so a leap day is the last day of its year; eras are 400 years.
        let z = days + 719_468
        let era = z / 146_097
        let dayOfEra = z - era * 146_097  // [0, 146096]
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // [0, 399]
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // [0, 365], from March 1
        let mp = (5 * dayOfYear + 2) / 153  // [0, 11], March = 0
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        line.appendDecimal(year, width: 4)
        line.append(UInt8(ascii: "-"))
        line.appendDecimal(month, width: 2)
        line.append(UInt8(ascii: "-"))
        line.appendDecimal(day, width: 2)
        line.append(UInt8(ascii: "T"))
        line.appendDecimal(secondOfDay / 3600, width: 2)
        line.append(UInt8(ascii: ":"))
        line.appendDecimal(secondOfDay / 60 % 60, width: 2)
        line.append(UInt8(ascii: ":"))
        line.appendDecimal(secondOfDay % 60, width: 2)
        line.append(UInt8(ascii: "."))
        line.appendDecimal(millis % 1000, width: 3)
        line.append(UInt8(ascii: "Z"))
    }
}

/// Escapes one value's bytes as they stream in (a captured field is read one byte at a time), validating UTF-8
/// on the way (RFC 3629 §4: no overlong forms, no surrogates, nothing above U+10FFFF). A valid sequence is
/// copied as is; each maximal invalid subpart becomes one U+FFFD, as WHATWG's decoder and Python's
/// `errors="replace"` do.
struct ValueEscaper {
    enum Mode { case json, text }
    private let mode: Mode
    /// Continuation bytes still expected, the bytes of the sequence so far (first in the low byte), how many.
    private var need = 0
    private var pending: UInt32 = 0
    private var have = 0
    /// The range the next continuation byte must fall in (narrower after E0, ED, F0 and F4).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    init(_ mode: Mode) { self.mode = mode }

    /// No UTF-8 sequence is open: the next byte starts afresh.
    var idle: Bool { need == 0 }

    /// A byte written as it is in `mode`: printable ASCII, but for `"` and `\` in JSON.
    @inline(__always)
    static func plain(_ b: UInt8, _ mode: Mode) -> Bool {
        b >= 0x20 && b < 0x7F && (mode == .text || (b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\")))
    }

    mutating func put(_ b: UInt8, _ line: inout LineBuffer) {
        if need > 0 {
            if b >= low && b <= high {
                pending |= UInt32(b) << (8 * UInt32(have))
                have += 1
                need -= 1
                low = 0x80
                high = 0xBF
                if need == 0 { flushPending(&line) }
                return
            }
            // The sequence broke off: replace what came of it, then read `b` afresh.
            replacement(&line)
            reset()
        }
        switch b {
        case 0x00..<0x80: ascii(b, &line)
        case 0xC2...0xDF: start(b, need: 1, low: 0x80, high: 0xBF)
        case 0xE0: start(b, need: 2, low: 0xA0, high: 0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: start(b, need: 2, low: 0x80, high: 0xBF)
        case 0xED: start(b, need: 2, low: 0x80, high: 0x9F)
        case 0xF0: start(b, need: 3, low: 0x90, high: 0xBF)
        case 0xF1...0xF3: start(b, need: 3, low: 0x80, high: 0xBF)
        case 0xF4: start(b, need: 3, low: 0x80, high: 0x8F)
        default: replacement(&line)  // a stray continuation byte, C0, C1, F5–FF
        }
    }

    /// The value ended: a sequence left open is replaced.
    mutating func finish(_ line: inout LineBuffer) {
        if need > 0 { replacement(&line) }
        reset()
    }

    private mutating func start(_ b: UInt8, need: Int, low: UInt8, high: UInt8) {
        pending = UInt32(b)
        have = 1
        self.need = need
        self.low = low
        self.high = high
    }

    private mutating func reset() {
        need = 0
        pending = 0
        have = 0
        low = 0x80
        high = 0xBF
    }

    private mutating func flushPending(_ line: inout LineBuffer) {
        for i in 0..<have { line.append(UInt8(truncatingIfNeeded: pending >> (8 * UInt32(i)))) }
        reset()
    }

    private func replacement(_ line: inout LineBuffer) {
        line.append(0xEF)
        line.append(0xBF)
        line.append(0xBD)
    }

    private func ascii(_ b: UInt8, _ line: inout LineBuffer) {
        switch mode {
        case .json:
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                line.append(UInt8(ascii: "\\"))
                line.append(b)
            case UInt8(ascii: "\n"): line.append("\\n")
            case UInt8(ascii: "\r"): line.append("\\r")
            case UInt8(ascii: "\t"): line.append("\\t")
            case 0x00..<0x20, 0x7F:
                line.append("\\u00")
                hex(b, &line)
            default: line.append(b)
            }
        case .text:
            if b < 0x20 || b == 0x7F {
                line.append("\\x")
                hex(b, &line)
            } else {
                line.append(b)
            }
        }
    }

    private func hex(_ b: UInt8, _ line: inout LineBuffer) {
        line.append(Self.hexDigit(b >> 4))
        line.append(Self.hexDigit(b & 0xF))
    }

    private static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x61 + v - 10 }
}
