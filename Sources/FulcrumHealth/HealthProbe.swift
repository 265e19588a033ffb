import FulcrumConfig
import FulcrumCore
import NIOCore

/// One active check of one backend (TCP connect, HTTP GET). A probe never throws: every failure,
/// including a timeout, is a failed outcome with a detail an operator can read.
public protocol HealthProbe: Sendable {
    /// Checks `target` (the backend's address, with the check's port override already applied).
    /// Returns within the probe's timeout plus scheduling slack, and at once when the task is cancelled.
    func check(_ target: Endpoint) async -> ProbeOutcome
}

/// What one probe found: success or not, and why ("ok", "connect refused", "status 503").
public struct ProbeOutcome: Sendable, Equatable, CustomStringConvertible {
    public var success: Bool
    public var detail: String

    public init(success: Bool, detail: String) {
        self.success = success
        self.detail = detail
    }

    public static func passed(_ detail: String = "ok") -> ProbeOutcome {
        ProbeOutcome(success: true, detail: detail)
    }

    public static func failed(_ detail: String) -> ProbeOutcome {
        ProbeOutcome(success: false, detail: detail)
    }

    public var description: String { "\(success ? "passed" : "failed"): \(detail)" }
}

extension HealthCheckConfig {
    /// The probe this configuration asks for, on `eventLoopGroup`.
    public func makeProbe(eventLoopGroup: any EventLoopGroup) -> any HealthProbe {
        switch type {
        case .tcp:
            return TCPProbe(eventLoopGroup: eventLoopGroup, timeout: timeout)
        case .http:
            return HTTPProbe(
                eventLoopGroup: eventLoopGroup, timeout: timeout, path: path, host: host,
                expectStatus: expectStatus, expectBody: expectBody)
        }
    }
}
