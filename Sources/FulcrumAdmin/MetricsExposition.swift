import Foundation
import FulcrumCore
import Synchronization

/// `GET /metrics`: the Prometheus text exposition (format 0.0.4) of every pool, backend and listener.
///
/// The data-path counters are FulcrumCore's per-backend atomics (created once per backend, updated
/// lock-free by every data plane); a scrape reads them, so serving metrics costs the data path
/// nothing. Latency buckets come from each backend's `LatencyHistogram`, folded onto fixed `le` bounds.
public enum MetricsExposition {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// When this process started serving metrics (first use), seconds since the epoch.
    static let startTime = Date().timeIntervalSince1970

    /// Bounds of the latency histogram, in seconds.
    static let latencyBounds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    public static func render(pools: [Pool], listeners: [ListenerStatus]) -> String {
        var out = Exposition()
        out.family("fulcrum_build_info", "gauge", "Build information.")
        out.sample("fulcrum_build_info", ["version": FulcrumBuild.version], 1)
        out.family("fulcrum_start_time_seconds", "gauge", "When this Fulcrum process started, in Unix time.")
        out.sample("fulcrum_start_time_seconds", [:], startTime)

        let snapshots = pools.map { ($0, $0.snapshot()) }
        out.family(
            "fulcrum_pool_no_backend_available_total", "counter",
            "Requests or connections turned away: no backend available.")
        for (pool, _) in snapshots {
            out.sample("fulcrum_pool_no_backend_available_total", ["pool": pool.name], Double(pool.noBackendAvailable))
        }
        out.family("fulcrum_pool_using_backups", "gauge", "1 when no primary backend is up and backups serve.")
        for (pool, snapshot) in snapshots {
            out.sample("fulcrum_pool_using_backups", ["pool": pool.name], snapshot.usingBackups ? 1 : 0)
        }

        let members = snapshots.flatMap { pool, snapshot in snapshot.members.map { (pool.name, $0) } }
        func perBackend(_ name: String, _ type: String, _ help: String, _ value: (MemberStatus) -> Double) {
            out.family(name, type, help)
            for (pool, member) in members {
                out.sample(name, ["pool": pool, "backend": member.endpoint.description], value(member))
            }
        }
        perBackend("fulcrum_backend_up", "gauge", "1 when the backend takes new traffic.") { $0.state == .up ? 1 : 0 }
        out.family("fulcrum_backend_state", "gauge", "The backend's state: 1 for the current one.")
        for (pool, member) in members {
            for state in BackendState.allCases {
                out.sample(
                    "fulcrum_backend_state",
                    ["pool": pool, "backend": member.endpoint.description, "state": state.rawValue],
                    member.state == state ? 1 : 0)
            }
        }
        perBackend("fulcrum_backend_weight", "gauge", "Configured weight.") { Double($0.weight) }
        perBackend("fulcrum_backend_effective_weight", "gauge", "Weight in use (lower during slow start).") {
            Double($0.effectiveWeight) / Double(WeightScale.factor)
        }
        perBackend("fulcrum_backend_active_connections", "gauge", "Connections in use.") {
            Double($0.backend.stats.active)
        }
        perBackend("fulcrum_backend_connections_total", "counter", "Connections (or HTTP exchanges) opened.") {
            Double($0.backend.stats.totalConnections.load(ordering: .relaxed))
        }
        perBackend("fulcrum_backend_connect_errors_total", "counter", "Failed connection attempts.") {
            Double($0.backend.stats.connectErrors.load(ordering: .relaxed))
        }
        perBackend(
            "fulcrum_backend_sent_bytes_total", "counter",
            "Bytes relayed to the backend (TCP payload, HTTP request bodies)."
        ) { Double($0.backend.stats.bytesSent.load(ordering: .relaxed)) }
        perBackend(
            "fulcrum_backend_received_bytes_total", "counter",
            "Bytes relayed from the backend (TCP payload, HTTP response bodies)."
        ) { Double($0.backend.stats.bytesReceived.load(ordering: .relaxed)) }
        perBackend("fulcrum_backend_failures_total", "counter", "Failed requests and connections.") {
            Double($0.backend.stats.failures.load(ordering: .relaxed))
        }
        out.family("fulcrum_backend_requests_total", "counter", "HTTP requests by status class (none: no response).")
        let classes = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"]
        for (pool, member) in members {
            for (index, count) in member.backend.stats.responseCounts.enumerated() {
                out.sample(
                    "fulcrum_backend_requests_total",
                    ["pool": pool, "backend": member.endpoint.description, "code": classes[index]], Double(count))
            }
        }
        out.family("fulcrum_backend_latency_seconds", "histogram", "Request latency (request sent to response head).")
        for (pool, member) in members {
            let histogram = member.backend.stats.latency
            let buckets = histogram.snapshot()
            var labels = ["pool": pool, "backend": member.endpoint.description]
            var cumulative: UInt64 = 0
            var next = 0
            for bound in latencyBounds {
                // A bucket counts toward `le` once its whole range lies below the bound.
                while next < buckets.count
                    && Double(LatencyHistogram.upperBoundNanos(ofBucket: next)) / 1e9 <= bound
                {
                    cumulative += buckets[next]
                    next += 1
                }
                labels["le"] = format(bound)
                out.sample("fulcrum_backend_latency_seconds_bucket", labels, Double(cumulative))
            }
            let total = buckets.reduce(0, +)
            labels["le"] = "+Inf"
            out.sample("fulcrum_backend_latency_seconds_bucket", labels, Double(total))
            labels["le"] = nil
            out.sample("fulcrum_backend_latency_seconds_sum", labels, Double(histogram.sumNanos) / 1e9)
            out.sample("fulcrum_backend_latency_seconds_count", labels, Double(total))
        }

        out.family("fulcrum_listener_accepted_connections_total", "counter", "Client connections accepted.")
        for listener in listeners {
            out.sample(
                "fulcrum_listener_accepted_connections_total", ["listener": listener.name],
                Double(listener.acceptedConnections))
        }
        out.family("fulcrum_listener_active_connections", "gauge", "Client connections open now.")
        for listener in listeners {
            out.sample(
                "fulcrum_listener_active_connections", ["listener": listener.name], Double(listener.activeConnections))
        }
        return out.text
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// Accumulates the exposition text.
    struct Exposition {
        var text = ""

        mutating func family(_ name: String, _ type: String, _ help: String) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }

        mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
            text += name
            if !labels.isEmpty {
                // Sorted so that the output is stable; `le` last, as Prometheus clients write it.
                let keys = labels.keys.sorted { ($0 == "le" ? 1 : 0, $0) < ($1 == "le" ? 1 : 0, $1) }
                text += "{" + keys.map { "\($0)=\"\(escape(labels[$0]!))\"" }.joined(separator: ",") + "}"
            }
            text += " \(MetricsExposition.format(value))\n"
        }

        /// Label values escape backslash, double quote and newline.
        func escape(_ value: String) -> String {
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
    }
}
