import FulcrumConfig
import FulcrumCore
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The NIO plumbing every probe shares: one connection to the target, bounded by the timeout as a
/// whole, closed on every path, and given up at once when the calling task is cancelled.
///
/// The outcome is a promise that the first of these completes (later completions are ignored):
/// the protocol handler, a failed connect, the deadline, or cancellation. Whichever wins, the
/// channel (if it ever connected) is closed when the promise completes.
enum ProbeAttempt {
    /// - Parameter protocolHandlers: adds the handlers that talk to the backend and complete the
    ///   outcome (they run before the connect completes); nil when an open connection is the verdict.
    static func run(
        group: any EventLoopGroup, target: Endpoint, timeout: Duration,
        protocolHandlers: (@Sendable (any Channel, EventLoopPromise<ProbeOutcome>) throws -> Void)? = nil
    ) async -> ProbeOutcome {
        let address: SocketAddress
        do {
            address = try SocketAddress(ipAddress: "\(target.address)", port: Int(target.port))
        } catch {
            return .failed("bad address \(target): \(error)")
        }
        let eventLoop = group.next()
        let outcome = eventLoop.makePromise(of: ProbeOutcome.self)
        let timeoutText = "timed out after \(formatDuration(timeout))"
        let deadline = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            outcome.succeed(.failed(timeoutText))
        }
        outcome.futureResult.whenComplete { _ in deadline.cancel() }

        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if let protocolHandlers {
            bootstrap = bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try protocolHandlers(channel, outcome) }
            }
        }
        bootstrap.connect(to: address).whenComplete { result in
            switch result {
            case .success(let channel):
                // Registered after connect so it also closes a channel that connected too late.
                outcome.futureResult.whenComplete { _ in channel.close(promise: nil) }
                if protocolHandlers == nil { outcome.succeed(.passed()) }
            case .failure(let error):
                outcome.succeed(.failed(describeConnectFailure(error, timeoutText: timeoutText)))
            }
        }

        return await withTaskCancellationHandler {
            // The promise is only ever succeeded, so this cannot throw; the fallback keeps the type honest.
            (try? await outcome.futureResult.get()) ?? .failed("probe failed")
        } onCancel: {
            outcome.succeed(.failed("cancelled"))
        }
    }

    /// Operator-facing text for a failed connect.
    static func describeConnectFailure(_ error: any Error, timeoutText: String) -> String {
        if let error = error as? ChannelError, case .connectTimeout = error {
            return timeoutText
        }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.isEmpty { return "connect failed: \(error)" }
            return describeConnectFailure(error.connectionErrors[0].error, timeoutText: timeoutText)
        }
        if let error = error as? IOError {
            return describe(errno: error.errnoCode) ?? "connect failed: \(error)"
        }
        return "connect failed: \(error)"
    }

    static func describe(errno code: CInt) -> String? {
        switch code {
        case ECONNREFUSED: return "connect refused"
        case ECONNRESET: return "connection reset"
        case ETIMEDOUT: return "connect timed out"
        case EHOSTUNREACH: return "host unreachable"
        case ENETUNREACH: return "network unreachable"
        case EADDRNOTAVAIL: return "address not available"
        default: return nil
        }
    }
}
