// The access log's two line formats (../shared/reference/istio.md §3), as Istio configures Envoy:
//
//   json  Istio's JSON keys (`accessLogEncoding: JSON`), one object per line, typed as Envoy's typed JSON
//         renders them: response_code, bytes_received, bytes_sent, duration and upstream_service_time are
//         numbers; a value that is absent (a request field not sent, an upstream never chosen, the method of a
//         TCP connection) is `null`, never "" or "-"; response_flags is "-" when no flag is set (Envoy's
//         %RESPONSE_FLAGS% always has a value). Envoy renders upstream_service_time, a response header, as a
//         string; Tern measures it itself and writes a number (null when no upstream answered).
//   text  Istio's default text line (EnvoyTextLogFormat): Envoy's default with the response-code details,
//         termination details and transport failure reason inserted after the flags and the upstream cluster,
//         addresses, SNI and route name appended; every absent value is "-".
//
// Request bytes are written so that every line stays one valid line: in JSON, `"` and `\` are escaped, control
// characters become \n, \r, \t or \u00XX, DEL becomes \u007f; in text (which Envoy writes unescaped), control
// characters and DEL become \xHH. In both, a byte that is not part of valid UTF-8 (cut sequences included: a
// captured field is truncated at its limit) is replaced by U+FFFD, so every JSON line is valid UTF-8 JSON.

/// How access-log lines are written (`--access-log-format`).
public enum AccessLogFormat: String, Sendable, CaseIterable {
    case json, text
}

/// The protocol of what a line reports (`%PROTOCOL%`). TCP connections have no method, path or protocol:
/// null in JSON, "-" in text, as Envoy writes them.
public enum AccessLogProtocol: UInt8, Sendable {
    case http10, http11, http2, tcp

    /// Envoy's spelling; empty for TCP (absent).
    public var name: StaticString {
        switch self {
        case .http10: "HTTP/1.0"
        case .http11: "HTTP/1.1"
        case .http2: "HTTP/2"
        case .tcp: ""
        }
    }
}
