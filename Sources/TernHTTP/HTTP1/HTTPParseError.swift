/// Why a message head or chunked body was refused, and the status a server answers with (RFC 9110 §15).
///
/// Thrown with typed `throws(HTTPParseError)` so the request path never boxes an error. For a request, the proxy
/// answers `status` and closes the connection; for a response it answers 502 downstream (the upstream framed the
/// message badly) and keeps `reason` for the access log.
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        // Line structure (RFC 9112 §2.2).
        case bareCR, bareLF, emptyStartLine
        // Request-line and status-line (RFC 9112 §3, §4).
        case malformedRequestLine, invalidMethod, invalidTarget, targetFormMismatch, malformedVersion
        case unsupportedVersion, malformedStatusLine, invalidReason
        // Field lines (RFC 9112 §5, RFC 9110 §5).
        case obsoleteLineFolding, whitespaceBeforeColon, invalidFieldName, invalidFieldValue, missingColon
        case missingHost, multipleHost, invalidHost, invalidConnection
        // Framing (RFC 9112 §6, RFC 9110 §8.6).
        case invalidContentLength, conflictingContentLength, contentLengthWithTransferEncoding
        case transferEncodingInHTTP10, chunkedNotFinal, chunkedTwice, invalidTransferEncoding
        case unknownTransferCoding
        // Chunked bodies (RFC 9112 §7.1).
        case invalidChunkSize, chunkSizeOverflow, invalidChunkExtension, missingChunkCRLF, invalidTrailer
        // Limits (Envoy-like defaults, HTTP1Parser.Limits).
        case uriTooLong, headTooLarge, tooManyFields, chunkLineTooLong, trailersTooLarge
    }

    public var reason: Reason

    public init(_ reason: Reason) { self.reason = reason }

    /// The status to answer a request with: 400, 414, 431, 501 or 505.
    public var status: Int {
        switch reason {
        case .uriTooLong: 414
        case .headTooLarge, .tooManyFields, .trailersTooLarge: 431
        case .unknownTransferCoding: 501
        case .unsupportedVersion: 505
        default: 400
        }
    }

    public var description: String { "HTTP parse error \(status): \(reason)" }
}
