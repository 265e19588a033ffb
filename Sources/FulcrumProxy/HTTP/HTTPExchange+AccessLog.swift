import FulcrumConfig
import FulcrumCore
import NIOCore
import NIOHTTP1

extension HTTPExchange {
    /// Adds the body bytes relayed since the last call to the backend's counters (called when the
    /// request leaves a backend, so a retried request's bytes are not counted twice).
    func accountBytes(to backend: Backend) {
        backend.stats.recordBytes(
            sent: requestBytes - accountedRequestBytes, received: responseBytes - accountedResponseBytes)
        accountedRequestBytes = requestBytes
        accountedResponseBytes = responseBytes
    }

    /// Hands this exchange's access-log record to the route's log, once; nothing when the log is off.
    func logAccess(_ route: ListenerRoute, client: SocketAddress?, outcome: AccessLogRecord.Outcome) {
        guard let accessLog = route.accessLog, !accessLogged else { return }
        accessLogged = true
        let now = MonotonicClock.now()
        let status = localStatus ?? responseStatus
        accessLog.record(
            AccessLogRecord(
                kind: .http, time: AccessLogRecord.wallClockNow(), listener: route.config.name, client: client,
                backend: backend?.name, method: method.rawValue, uri: uri,
                version: "HTTP/\(version.major).\(version.minor)",
                status: status.map { Int($0.code) }, bytesIn: UInt64(requestBytes), bytesOut: UInt64(responseBytes),
                durationNanos: now &- key.now, firstByteNanos: responseStatus == nil ? nil : latencyNanos,
                retries: tried.count, outcome: outcome))
    }
}
