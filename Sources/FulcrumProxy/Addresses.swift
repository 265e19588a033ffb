import FulcrumCore
import NIOCore

/// The monotonic "now" every module passes to FulcrumCore: nanoseconds since boot.
public enum MonotonicClock {
    @inlinable
    public static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
}

extension TimeAmount {
    /// A config `Duration` as NIO's time amount.
    public init(_ duration: Duration) {
        self = .nanoseconds(Int64(clamping: duration.nanoseconds))
    }
}

extension Endpoint {
    /// The NIO socket address of this endpoint (no name resolution: it is already an IP).
    public func socketAddress() throws -> SocketAddress {
        try SocketAddress(ipAddress: address.description, port: Int(port))
    }
}

extension IPAddress {
    /// The IP of a NIO socket address; nil for Unix sockets. Reads the sockaddr bytes directly
    /// (sin_addr at offset 4, sin6_addr at offset 8) to avoid formatting and re-parsing text.
    public init?(_ socketAddress: SocketAddress?) {
        guard let socketAddress else { return nil }
        switch socketAddress {
        case .v4:
            let raw = socketAddress.withSockAddr { pointer, size in
                UnsafeRawBufferPointer(start: pointer, count: size).loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            }
            self = .v4(UInt32(bigEndian: raw))
        case .v6:
            let (hiRaw, loRaw) = socketAddress.withSockAddr { pointer, size in
                let bytes = UnsafeRawBufferPointer(start: pointer, count: size)
                return (
                    bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                    bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
                )
            }
            let hi = UInt64(bigEndian: hiRaw)
            let lo = UInt64(bigEndian: loRaw)
            // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; hash it as the IPv4 it is.
            if hi == 0 && lo >> 32 == 0xFFFF {
                self = .v4(UInt32(truncatingIfNeeded: lo))
            } else {
                self = .v6(hi, lo)
            }
        case .unixDomainSocket:
            return nil
        }
    }
}
