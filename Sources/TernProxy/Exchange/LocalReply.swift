import TernConfig
import TernHTTP
import TernTelemetry

/// The responses Tern writes itself, with the bodies and response flags Envoy users know
/// (../shared/reference/istio.md: response flags). The client connection stays open after a 5xx answering a
/// request that was read to its end (as Envoy keeps it); otherwise the reply says "connection: close" and the
/// connection closes, since the rest of the request is unread.
enum LocalReply: Int, CaseIterable {
    case badRequest, uriTooLong, headersTooLarge, notImplemented, versionNotSupported
    case requestHeaderTimeout, streamTimeoutRequest, streamTimeoutResponse
    case connectFailure, connectionTermination, overflow, upstreamTimeout, badGateway
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM, or above its GOAWAY's last stream id): Envoy's
    /// `remote_refused_stream_reset`, flag UR.
    case remoteRefusedStream
    /// Routing from Istio configuration: no virtual host or route matched (NR), the destination names a host
    /// no ServiceEntry declares (NC), no endpoint to send to (UH), a route action this build does not apply.
    case routeNotFound, clusterNotFound, noHealthyUpstream, unsupportedRoute
    /// HTTP/1.0 without `--accept-http-10` (Envoy's `accept_http_10: false`, Istio's default): 426; with it, an
    /// HTTP/1.0 request without Host: 400.
    case upgradeRequired, missingHost
    /// A request head that needs more memory than its reactor has left for heads in progress
    /// (`--max-head-memory-mb`): 503 with Envoy's overload-manager flag OM.
    case overloaded
    /// A route's own response (directResponse, redirect), composed per request; `wire` is not used for it.
    case routeResponse
    /// A route's fault filter aborted the request (FI), with the status it names, composed per request as a
    /// route's response is.
    case faultAbort
    /// A route's CORS filter answered a preflight (200, composed per request).
    case corsResponse
    /// An AuthorizationPolicy denied the request (Envoy's RBAC filter: 403 "RBAC: access denied", no flag).
    case accessDenied
    /// `--outbound-traffic-policy REGISTRY_ONLY`: a request for a host no service of the configuration names, on a
    /// redirected connection (Istio's BlackHole): 502, flag NR.
    case registryOnly

    var status: Int {
        switch self {
        case .badRequest: 400
        case .uriTooLong: 414
        case .headersTooLarge: 431
        case .notImplemented: 501
        case .versionNotSupported: 505
        case .requestHeaderTimeout, .streamTimeoutRequest: 408
        case .connectFailure, .connectionTermination, .overflow, .overloaded, .remoteRefusedStream: 503
        case .upstreamTimeout, .streamTimeoutResponse: 504
        case .badGateway, .registryOnly: 502
        case .routeNotFound: 404
        case .clusterNotFound, .noHealthyUpstream: 503
        case .unsupportedRoute: 501
        case .upgradeRequired: 426
        case .missingHost: 400
        case .routeResponse, .faultAbort, .corsResponse: 200
        case .accessDenied: 403
        }
    }

    var reason: String {
        switch status {
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 408: "Request Timeout"
        case 414: "URI Too Long"
        case 426: "Upgrade Required"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "HTTP Version Not Supported"
        }
    }

    /// Envoy's local reply bodies where Envoy has one.
    var body: String {
        switch self {
        case .connectFailure: "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        case .connectionTermination: "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        case .remoteRefusedStream: "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
        case .overflow: "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        case .upstreamTimeout: "upstream request timeout"
        case .streamTimeoutRequest, .streamTimeoutResponse: "stream timeout"
        case .requestHeaderTimeout: "request header timeout"
        case .badGateway: "upstream sent a malformed response"
        case .routeNotFound, .registryOnly: ""
        case .clusterNotFound: "cluster not found"
        case .noHealthyUpstream: "no healthy upstream"
        case .unsupportedRoute: "route action not supported yet"
        case .upgradeRequired: ""
        case .missingHost: "missing host header"
        case .overloaded: "overloaded"
        case .faultAbort: "fault filter abort"
        case .accessDenied: "RBAC: access denied"
        default: reason
        }
    }

    /// Envoy's response flag, for the access log (issue 6).
    var flag: String {
        switch self {
        case .connectFailure: "UF"
        case .connectionTermination: "UC"
        case .remoteRefusedStream: "UR"
        case .overflow: "UO"
        case .upstreamTimeout: "UT"
        case .streamTimeoutRequest, .streamTimeoutResponse: "SI"
        case .badGateway: "UPE"
        case .requestHeaderTimeout: "DPE"
        case .routeNotFound, .registryOnly: "NR"
        case .clusterNotFound: "NC"
        case .noHealthyUpstream: "UH"
        case .overloaded: "OM"
        case .faultAbort: "FI"
        default: "DPE"
        }
    }

    /// The flag as metrics and the access log carry it (a route's own response and an unsupported route
    /// action carry none).
    var responseFlags: ResponseFlags {
        switch self {
        case .routeResponse, .corsResponse, .unsupportedRoute, .upgradeRequired, .accessDenied: []
        default: ResponseFlags(name: flag) ?? []
        }
    }

    /// Envoy's %RESPONSE_CODE_DETAILS% for the reply (the access log).
    var details: String {
        switch self {
        case .badRequest, .uriTooLong, .notImplemented, .versionNotSupported: "http1.codec_error"
        case .headersTooLarge: "http1.headers_too_large"
        case .requestHeaderTimeout: "request_header_timeout"
        case .streamTimeoutRequest, .streamTimeoutResponse: "stream_idle_timeout"
        case .connectFailure: "upstream_reset_before_response_started{connection_failure}"
        case .connectionTermination: "upstream_reset_before_response_started{connection_termination}"
        case .remoteRefusedStream: "upstream_reset_before_response_started{remote_refused_stream_reset}"
        case .overflow: "upstream_reset_before_response_started{overflow}"
        case .upstreamTimeout: "upstream_response_timeout"
        case .badGateway: "upstream_reset_before_response_started{protocol_error}"
        case .routeNotFound, .registryOnly: "route_not_found"
        case .clusterNotFound: "cluster_not_found"
        case .noHealthyUpstream: "no_healthy_upstream"
        case .unsupportedRoute: "route_action_not_supported"
        case .upgradeRequired: "low_version"
        case .missingHost: "missing_host_header"
        case .overloaded: "overload"
        case .routeResponse: "direct_response"
        case .faultAbort: "fault_filter_abort"
        case .corsResponse: "cors_response"
        case .accessDenied: "rbac_access_denied"
        }
    }

    /// Envoy's details when the failure came after the response had started (the client connection is reset
    /// then, no reply sent): an upstream reset is `upstream_reset_after_response_started{…}`.
    var detailsAfterResponseStarted: String {
        let before = "upstream_reset_before_response_started"
        let d = details
        return d.hasPrefix(before) ? "upstream_reset_after_response_started" + d.dropFirst(before.count) : d
    }

    /// The whole response on the wire. A request a circuit breaker refused carries `x-envoy-overloaded: true`, as
    /// Envoy marks it (so that a client sidecar does not retry it).
    func wire(close: Bool) -> String {
        "HTTP/1.1 \(status) \(reason)\r\ncontent-length: \(body.utf8.count)\r\ncontent-type: text/plain\r\n"
            + (self == .overflow ? "x-envoy-overloaded: true\r\n" : "")
            + (close ? "connection: close\r\n" : "") + "\r\n\(body)"
    }

    /// Reason phrases for statuses a route may answer with (TernHTTP's `HTTPReason`).
    static func reasonPhrase(_ status: Int) -> StaticString { HTTPReason.phrase(status) }

    /// The answer to a request head Tern refused.
    static func refusing(_ error: HTTPParseError) -> LocalReply {
        switch error.status {
        case 414: .uriTooLong
        case 431: .headersTooLarge
        case 501: .notImplemented
        case 505: .versionNotSupported
        default: .badRequest
        }
    }
}

/// A response a route makes itself (Istio's `directResponse` and `redirect`, a CORS preflight's answer),
/// protocol-neutral: its status, the fields it carries and its body. The codec of the connection it answers writes it
/// (HTTP/1.1: `HTTPProxy.respondFromRoute`).
struct RouteResponse {
    var status: Int
    /// A `directResponse`: its body goes with `content-type: text/plain` unless the route's fields set one.
    var direct = false
    var body: [UInt8] = []
    /// A redirect's target, written as the Location field from the request unless the route's fields set one,
    /// and the length of the path prefix the route matched (`prefixRewrite` replaces it).
    var redirect: HTTPRedirect? = nil
    var matchedPrefix = 1
    /// The route's response header operations: Envoy applies them to the route's own responses too (never to
    /// framing fields: validation refuses changing those).
    var fields = HeaderOperations()
    /// A CORS preflight the route's policy answers: its fields are the policy's (`HTTPProxy.writePreflightFields`).
    var preflight = false
}
