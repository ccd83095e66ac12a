/// Reason phrases for the status codes a proxy writes itself (RFC 9110 §15); anything else gets an empty one,
/// which RFC 9112 §4 allows (a reason phrase is never interpreted).
public enum HTTPReason {
    public static func phrase(_ status: Int) -> StaticString {
        switch status {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 206: "Partial Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 303: "See Other"
        case 304: "Not Modified"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 413: "Content Too Large"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: ""
        }
    }

    /// `phrase(status)` as bytes, for statuses 100 to 599 (made once; empty outside them).
    public static func phraseBytes(_ status: Int) -> ArraySlice<UInt8> {
        status >= 100 && status < 600 ? table[status - 100][...] : []
    }

    private static let table: [[UInt8]] = (100..<600).map { Array(String(describing: phrase($0)).utf8) }
}
