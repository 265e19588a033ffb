import FulcrumConfig
import FulcrumCore
import NIOCore

/// The PROXY protocol header (HAProxy's `proxy-protocol.txt`) a TCP listener sends a backend before any
/// client byte, so the backend learns the client's address: version 1 is text, version 2 binary.
///
/// Both versions say TCP4 when both addresses are IPv4, TCP6 when either is IPv6 (an IPv4 address is
/// then written as `::ffff:a.b.c.d`), and "unknown" when an address is missing (the backend then uses
/// the connection's own addresses).
public struct ProxyProtocolHeader: Sendable, Equatable {
    /// The client, as the proxy saw it.
    public var source: Endpoint?
    /// The address the client connected to (the listener's address).
    public var destination: Endpoint?

    public init(source: Endpoint?, destination: Endpoint?) {
        self.source = source
        self.destination = destination
    }

    /// From a client channel's `remoteAddress` and `localAddress`; Unix sockets become "unknown".
    public init(source: SocketAddress?, destination: SocketAddress?) {
        self.init(source: Self.endpoint(source), destination: Self.endpoint(destination))
    }

    /// The header in the listener's configured version; empty for `.none`.
    public func encoded(_ version: ListenerConfig.ProxyProtocol) -> [UInt8] {
        switch version {
        case .none: return []
        case .v1: return encodedV1()
        case .v2: return encodedV2()
        }
    }

    /// The two addresses in one family, or nil when either is unknown.
    var addresses: (source: Endpoint, destination: Endpoint, isIPv4: Bool)? {
        guard let source, let destination else { return nil }
        if source.address.isIPv4 && destination.address.isIPv4 {
            return (source, destination, true)
        }
        return (Self.asIPv6(source), Self.asIPv6(destination), false)
    }

    private static func asIPv6(_ endpoint: Endpoint) -> Endpoint {
        guard case .v4(let address) = endpoint.address else { return endpoint }
        return Endpoint(address: .v6(0, 0xFFFF_0000_0000 | UInt64(address)), port: endpoint.port)
    }

    private static func endpoint(_ address: SocketAddress?) -> Endpoint? {
        guard let ip = IPAddress(address), let port = address?.port, let port = UInt16(exactly: port) else {
            return nil
        }
        return Endpoint(address: ip, port: port)
    }
}
