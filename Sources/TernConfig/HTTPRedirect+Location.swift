// A redirect route's Location, as an Istio user gets it: Istio turns HTTPRedirect into an Envoy RedirectAction
// (istio/istio pilot/pkg/networking/core/route/route.go `ApplyRedirect`) and Envoy builds the URL from it and the
// request (envoyproxy/envoy source/common/router/config_impl.cc `RouteEntryImplBase::newUri`, `processRequestHost`,
// `rewritePathHeader`). Per request: writes through a callback, allocates nothing.

extension HTTPRedirect {
    /// Writes the Location for a request through `emit`, in pieces:
    ///
    /// - scheme: `scheme`, else the request's (`requestScheme`);
    /// - port: `port`, or with `derivePort: FROM_REQUEST_PORT` the port the request was addressed to (Istio writes
    ///   the listener's port); none when that is the scheme's default (80 for http, 443 for https: Istio clears
    ///   it), and none with `FROM_PROTOCOL_DEFAULT` or nothing set (Envoy's default);
    /// - host: `authority`, else the request's Host, whose own port Envoy drops when a port is written, or when the
    ///   scheme changes and that port is the default of the request's scheme; otherwise the Host stays as sent
    ///   (so `FROM_PROTOCOL_DEFAULT` keeps `:8080` from `Host: a:8080`, as Envoy does);
    /// - path: `uri`, with the request's query appended unless `uri` has its own; or the request path with the
    ///   first `matchedPrefix` bytes (`Route.matchedPrefixLength`; -1: all of it) replaced by `prefixRewrite`, the
    ///   query kept; or the request's path and query. A path not starting with "/" gets one.
    ///
    /// `host` is the request's Host value (nil: none), `target` its request-target (origin or absolute form),
    /// `requestPort` the port it was addressed to.
    public func writeLocation(host: Span<UInt8>?, target: Span<UInt8>, requestPort: UInt16, matchedPrefix: Int,
                              requestScheme: RequestView.Scheme = .http, _ emit: (borrowing Span<UInt8>) -> Void)
    {
        let request = requestScheme == .https ? "https" : "http"
        let scheme = self.scheme ?? request
        var redirectPort = port.map(Int.init) ?? (derivePort == .FROM_REQUEST_PORT ? Int(requestPort) : nil)
        if (redirectPort == 80 && scheme == "http") || (redirectPort == 443 && scheme == "https") { redirectPort = nil }
        let separator = Self.separator
        let punctuation = separator.span
        emit(scheme.utf8.span)
        emit(punctuation.extracting(0..<3))  // "://"
        if let authority, !authority.isEmpty {
            emit(authority.utf8.span)
        } else if let host {
            let (name, hostPort) = Self.splitPort(host)
            let defaultPort = requestScheme == .https ? 443 : 80
            let drop = hostPort != nil && (redirectPort != nil || (scheme != request && hostPort == defaultPort))
            emit(drop ? host.extracting(0..<name) : host)
        }
        if let p = redirectPort {
            emit(punctuation.extracting(0..<1))  // ":"
            Self.decimal(p, punctuation, emit)
        }
        let path = RequestView.pathExtent(of: target)
        let (pathStart, pathEnd) = (path.lowerBound, path.upperBound)
        let slash = punctuation.extracting(1..<2)
        if let uri, !uri.isEmpty {
            if uri.utf8.first != UInt8(ascii: "/") { emit(slash) }
            emit(uri.utf8.span)
            if pathEnd < target.count, target[pathEnd] == UInt8(ascii: "?"), !uri.utf8.contains(UInt8(ascii: "?")) {
                emit(target.extracting(pathEnd..<target.count))
            }
        } else if let prefixRewrite, !prefixRewrite.isEmpty {
            if prefixRewrite.utf8.first != UInt8(ascii: "/") { emit(slash) }
            emit(prefixRewrite.utf8.span)
            let from = matchedPrefix >= 0 ? min(pathStart + matchedPrefix, pathEnd) : pathEnd
            emit(target.extracting(from..<target.count))
        } else {
            if pathStart == target.count || target[pathStart] != UInt8(ascii: "/") { emit(slash) }
            emit(target.extracting(pathStart..<target.count))
        }
    }

    /// The Location as a string (allocates: for tests and tools).
    public func location(host: String?, target: String, requestPort: UInt16 = 80, matchedPrefix: Int = -1,
                         requestScheme: RequestView.Scheme = .http) -> String {
        let h = host.map { Array($0.utf8) }
        let t = Array(target.utf8)
        var out: [UInt8] = []
        let collect: (borrowing Span<UInt8>) -> Void = { piece in
            for i in 0..<piece.count { out.append(piece[i]) }
        }
        if let h {
            writeLocation(host: h.span, target: t.span, requestPort: requestPort, matchedPrefix: matchedPrefix,
                          requestScheme: requestScheme, collect)
        } else {
            writeLocation(host: nil, target: t.span, requestPort: requestPort, matchedPrefix: matchedPrefix,
                          requestScheme: requestScheme, collect)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// ":", "/", "/" and the digits, for pieces that are not in the request or the route.
    private static let separator: [UInt8] = Array("://0123456789".utf8)

    private static func decimal(_ value: Int, _ digits: Span<UInt8>, _ emit: (borrowing Span<UInt8>) -> Void) {
        var scale = 1
        while scale * 10 <= value { scale *= 10 }
        var v = value
        while scale > 0 {
            let d = v / scale
            emit(digits.extracting((3 + d)..<(4 + d)))
            v -= d * scale
            scale /= 10
        }
    }

    /// Where a Host value's name ends and its port, if it ends in ":digits" ("a:8080", "[::1]:8080").
    static func splitPort(_ host: Span<UInt8>) -> (name: Int, port: Int?) {
        var i = host.count
        var value = 0
        var scale = 1
        while i > 0 {
            let b = host[i - 1]
            if b == UInt8(ascii: ":") { return i < host.count && value <= 65535 ? (i - 1, value) : (host.count, nil) }
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9"), scale <= 10000 else { return (host.count, nil) }
            value += Int(b - UInt8(ascii: "0")) * scale
            scale *= 10
            i -= 1
        }
        return (host.count, nil)
    }
}

extension Route {
    /// How much of the request path a `rewrite.uri` or a redirect's `prefixRewrite` replaces for a request that
    /// selected this route with `match`, as Envoy: the prefix a prefix match matched; the whole path (-1) after an
    /// exact or regex match; "/" (1) when no uri condition matched (Istio gives such routes Envoy's prefix "/").
    public func matchedPrefixLength(_ match: RouteMatch) -> Int {
        guard match.matcher >= 0, Int(match.matcher) < matchers.count, let uri = matchers[Int(match.matcher)].uri else { return 1 }
        switch uri {
        case .prefix(let p), .prefixIgnoringCase(let p): return p.count
        default: return -1
        }
    }
}
