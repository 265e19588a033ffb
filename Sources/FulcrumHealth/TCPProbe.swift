import FulcrumCore
import NIOCore

/// Passes when a TCP connection to the target opens within the timeout; the connection is closed
/// at once. Details: "ok", "connect refused", "timed out after 1s".
public struct TCPProbe: HealthProbe {
    public let eventLoopGroup: any EventLoopGroup
    public let timeout: Duration

    public init(eventLoopGroup: any EventLoopGroup, timeout: Duration) {
        self.eventLoopGroup = eventLoopGroup
        self.timeout = timeout
    }

    public func check(_ target: Endpoint) async -> ProbeOutcome {
        await ProbeAttempt.run(group: eventLoopGroup, target: target, timeout: timeout)
    }
}
