// The CORS filter (VirtualService `corsPolicy`), as Envoy's runs it under Istio: after the fault filter, before the
// router, on routes that forward (Envoy's filter passes over redirect and directResponse routes). Per request:
//
//   no Origin (absent, or only empty values)            → nothing
//   Origin allowed, not a preflight                     → upstream; its response gets access-control-allow-origin
//                                                          (the request's origin, never "*"), -allow-credentials:
//                                                          true and -expose-headers, in place of the upstream's own
//   Origin not allowed, not a preflight                 → upstream, the response unchanged
//   preflight (OPTIONS, an Origin and a non-empty
//   Access-Control-Request-Method), origin allowed      → answered here, 200: -allow-origin, -allow-credentials,
//                                                          -allow-methods, -allow-headers, -max-age, -expose-headers;
//                                                          nothing goes upstream
//   preflight, origin not allowed                       → FORWARD (Istio's default): upstream, unchanged;
//                                                          IGNORE: answered here as above, without -allow-origin and
//                                                          -expose-headers
//
// As Envoy: the method is compared case-sensitively (RFC 9110 §9.1; Fetch normalises the case of six methods in the
// browser, so its preflights always say OPTIONS); an Origin sent in several fields is their values joined with ","
// (as Envoy keeps that header), matched and echoed as such; no Vary is added; a local reply of the router to an
// allowed origin (503, 504) carries the response fields too, a fault's abort does not (that filter runs first).
import TernConfig
import TernCore
import TernHTTP
import TernIO
import TernTelemetry

/// Field text the filter writes more than once.
enum CORSField {
    static let allowOrigin: StaticString = "access-control-allow-origin: "
}

extension HTTPProxy {
    /// Runs the route's CORS policy on a request routed to forwarding entry `entry` of `table`: true when the
    /// filter took it (a preflight it answers, after the route's fault when there is one), false when it goes on
    /// to the router (its response's CORS fields composed in `Exchange.cors` when the origin is allowed).
    func applyCORS(_ x: XID, _ head: HTTP1Head, _ table: RouteTable, _ match: RouteMatch, entry: Int,
                   _ reactor: Reactor<Backend>) -> Bool {
        let forwarding = table.forwarding
        let policy = Int(forwarding.entries[entry].cors)
        let facts = forwarding.cors[policy]
        let held = exchanges[x].request.held
        // The response's lines, composed before the origin is known to be allowed: the origin is matched where it
        // is written, whole even when it came in several fields.
        var valueEnd = 0
        // (In a small buffer only, held as long as the exchange: an Origin too long for it, far past any real
        // origin's length, is not honoured, rather than pinning a large buffer no memory budget counts.)
        guard var lines = bytes.compose(smallOnly: true, { w in
            w.append(CORSField.allowOrigin)
            appendJoined(head, held, bytes.names.origin, &w)
            valueEnd = w.count
            w.append("\r\n")
            if facts.allowCredentials { w.append("access-control-allow-credentials: true\r\n") }
            if !facts.exposeHeaders.isEmpty {
                w.append("access-control-expose-headers: ")
                w.append(forwarding.bytes, facts.exposeHeaders)
                w.append("\r\n")
            }
        }) else {
            metrics?.reactor.add(ReactorWord.corsOriginInvalid, 1)
            return false
        }
        let origin = CORSField.allowOrigin.utf8CodeUnitCount..<valueEnd
        if origin.isEmpty {
            dropHeld(&lines, reactor)
            return false
        }
        let allowed = bytes.allowsOrigin(lines, value: origin, forwarding, policy, reactor: reactorIndex)
        if allowed {
            metrics?.reactor.add(ReactorWord.corsOriginValid, 1)
            exchanges[x].cors = lines
        } else {
            metrics?.reactor.add(ReactorWord.corsOriginInvalid, 1)
            dropHeld(&lines, reactor)
        }
        guard head.method == .options, hasValue(head, held, bytes.names.accessControlRequestMethod),
              allowed || !facts.forwardsUnmatchedPreflights else { return false }
        // Answered here, from the table the request was routed with (kept until the exchange ends: a fault delay
        // may come first).
        exchanges[x].routed = RoutedRoute(table: routedTables.started(), match: match, entry: Int32(entry))
        exchanges[x].corsPreflight = true
        let fault = forwarding.entries[entry].fault
        if !fault.isEmpty {
            exchanges[x].fault = fault
            if injectFault(x, reactor) { return true }
        }
        answerPreflight(x, reactor)
        return true
    }

    /// Answers the exchange's preflight: 200, no body, the fields `writePreflightFields` writes.
    func answerPreflight(_ x: XID, _ reactor: Reactor<Backend>) {
        let head = requestParsers.parsers[Int(exchanges[x].request.parser)].head
        exchanges[x].report.status = 200
        respondFromRoute(x, head, RouteResponse(status: 200, preflight: true), port: hostPort(head, x) ?? 80, reactor)
        if exchanges.isCurrent(x) { exchanges[x].report.answeredBy = .corsResponse }
    }

    /// The fields of a preflight's answer, in the order Envoy's filter sets them: the origin (when allowed),
    /// credentials, methods and headers (the request's own with "*"), max-age, then the exposed headers (when
    /// allowed). `held`: the request head's bytes.
    func writePreflightFields(_ x: XID, _ head: HTTP1Head, _ held: Held, _ w: inout ResponseWriter) {
        guard let routes, let routed = exchanges[x].routed else { return }
        let forwarding = routedTables.table(routed.table, routes).forwarding
        let facts = forwarding.cors[Int(forwarding.entries[Int(routed.entry)].cors)]
        let allowed = exchanges[x].cors.holdsStorage
        if allowed {
            w.append(CORSField.allowOrigin)
            appendJoined(head, held, bytes.names.origin, &w)
            w.append("\r\n")
        }
        if facts.allowCredentials { w.append("access-control-allow-credentials: true\r\n") }
        writeAllowed("access-control-allow-methods: ", echoing: facts.echoesMethod, bytes.names.accessControlRequestMethod,
                     else: facts.allowMethods, forwarding, head, held, &w)
        writeAllowed("access-control-allow-headers: ", echoing: facts.echoesHeaders, bytes.names.accessControlRequestHeaders,
                     else: facts.allowHeaders, forwarding, head, held, &w)
        if !facts.maxAge.isEmpty {
            w.append("access-control-max-age: ")
            w.append(forwarding.bytes, facts.maxAge)
            w.append("\r\n")
        }
        if allowed && !facts.exposeHeaders.isEmpty {
            w.append("access-control-expose-headers: ")
            w.append(forwarding.bytes, facts.exposeHeaders)
            w.append("\r\n")
        }
    }

    /// A preflight answer's list of allowed methods or headers: with "*", the request's own (`requested`; an empty
    /// list when the preflight names none, as Envoy sends it), else the policy's `list` (none when it is empty).
    private func writeAllowed(_ field: StaticString, echoing: Bool, _ requested: [UInt8], else list: Range<Int>,
                              _ forwarding: Forwarding, _ head: HTTP1Head, _ held: Held, _ w: inout ResponseWriter) {
        guard echoing || !list.isEmpty else { return }
        w.append(field)
        if echoing {
            appendJoined(head, held, requested, &w)
        } else {
            w.append(forwarding.bytes, list)
        }
        w.append("\r\n")
    }

    /// The non-empty values of the held head's fields named `name`, joined with "," (how Envoy keeps a header it
    /// reads once: Origin, Access-Control-Request-Method and -Headers).
    func appendJoined(_ head: HTTP1Head, _ held: Held, _ name: [UInt8], _ w: inout ResponseWriter) {
        var first = true
        bytes.forEachValue(head, held: held, named: name) { value in
            if !first { w.append(",") }
            first = false
            bytes.copy(value, from: held, into: &w)
        }
    }

    func hasValue(_ head: HTTP1Head, _ held: Held, _ name: [UInt8]) -> Bool {
        var found = false
        bytes.forEachValue(head, held: held, named: name) { _ in found = true }
        return found
    }
}
