import TernConfig
import TernIO

extension Endpoint {
    /// The address to connect to; nil for an endpoint still named by a host (DNS, not answered yet) or not an
    /// IP literal at all (`unix://`, not supported). Parsed when a table is bound, never per connection.
    var socketAddress: SocketAddress? {
        guard !needsResolution else { return nil }
        return SocketAddress(parsing: address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)")
    }
}
