import FulcrumCore
import Metrics

/// Control-plane events counted through swift-metrics: pool events (health, ejections, operator
/// changes), config reloads, admin writes and dropped access-log lines. These happen a few times a
/// second at most, so they go through the metrics API (whatever backend the composition root
/// bootstrapped: Prometheus in `fulcrum run`); the data-path counters stay FulcrumCore atomics that
/// `/metrics` reads at scrape time. Before a bootstrap, swift-metrics discards them.
public enum ControlPlaneMetrics {
    /// Counts each event under its pool and kind (`added`, `removed`, `up`, `down`, `ejected`, ...).
    public static func record(_ events: [PoolEvent], pool: String) {
        for event in events {
            Counter(label: "fulcrum_pool_events_total", dimensions: [("pool", pool), ("event", kind(of: event))])
                .increment()
        }
    }

    /// One config reload (SIGHUP or API) and whether it was applied.
    public static func reload(applied: Bool) {
        Counter(label: "fulcrum_config_reloads_total", dimensions: [("result", applied ? "applied" : "rejected")])
            .increment()
    }

    /// One admin API call that may change something (POST, PATCH, DELETE, PUT), by method and status.
    public static func adminWrite(method: String, status: Int) {
        Counter(
            label: "fulcrum_admin_writes_total",
            dimensions: [("method", method.uppercased()), ("status", String(status))]
        )
        .increment()
    }

    /// Access-log lines dropped because the writer's queue was full.
    public static func accessLogDropped(_ count: UInt64) {
        Counter(label: "fulcrum_access_log_dropped_lines_total").increment(by: Int64(clamping: count))
    }

    static func kind(of event: PoolEvent) -> String {
        switch event {
        case .added: return "added"
        case .removed: return "removed"
        case .healthChanged(_, let healthy, _): return healthy ? "up" : "down"
        case .ejected: return "ejected"
        case .returned: return "returned"
        case .adminChanged(_, let state): return "admin_\(state.rawValue)"
        case .weightChanged: return "weight_changed"
        case .usingBackups(let on): return on ? "backups_on" : "backups_off"
        }
    }
}
