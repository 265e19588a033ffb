import FulcrumCore
import Synchronization

/// How pools, backends and listeners look in the API's answers.
extension AdminAPI {
    static func poolJSON(_ pool: Pool) -> JSONValue {
        let snapshot = pool.snapshot()
        let now = now()
        return .object([
            ("name", .string(pool.name)),
            ("algorithm", .string(snapshot.algorithm.rawValue)),
            ("version", .int(Int(clamping: snapshot.version))),
            ("using_backups", .bool(snapshot.usingBackups)),
            ("no_backend_available", .int(Int(clamping: pool.noBackendAvailable))),
            ("backends", .array(snapshot.members.map { backendJSON($0, now: now) })),
        ])
    }

    static func backendJSON(_ member: MemberStatus, now: UInt64) -> JSONValue {
        let stats = member.backend.stats
        let lastCheck: JSONValue
        if let probe = member.lastProbe {
            lastCheck = .object([
                ("success", .bool(probe.success)),
                ("detail", .string(probe.detail)),
                ("age_ms", .int(Int(clamping: (now >= probe.at ? now - probe.at : 0) / 1_000_000))),
            ])
        } else {
            lastCheck = .null
        }
        return .object([
            ("address", .string(member.endpoint.description)),
            ("state", .string(member.state.rawValue)),
            ("admin", .string(member.admin.rawValue)),
            ("weight", .int(member.weight)),
            ("effective_weight", .double(Double(member.effectiveWeight) / Double(WeightScale.factor))),
            ("backup", .bool(member.backup)),
            ("active_connections", .int(stats.active)),
            ("requests", .int(Int(clamping: stats.totalRequests.load(ordering: .relaxed)))),
            ("errors", .int(Int(clamping: stats.failures.load(ordering: .relaxed)))),
            ("bytes_sent", .int(Int(clamping: stats.bytesSent.load(ordering: .relaxed)))),
            ("bytes_received", .int(Int(clamping: stats.bytesReceived.load(ordering: .relaxed)))),
            ("latency_p50_ms", milliseconds(stats.latency.quantile(0.5))),
            ("latency_p99_ms", milliseconds(stats.latency.quantile(0.99))),
            ("last_check", lastCheck),
        ])
    }

    static func listenerJSON(_ listener: ListenerStatus) -> JSONValue {
        .object([
            ("name", .string(listener.name)),
            ("bind", .string(listener.bind)),
            ("mode", .string(listener.mode)),
            ("pool", .string(listener.pool)),
            ("accepted_connections", .int(Int(clamping: listener.acceptedConnections))),
            ("active_connections", .int(listener.activeConnections)),
        ])
    }

    private static func milliseconds(_ nanos: UInt64?) -> JSONValue {
        guard let nanos else { return .null }
        return .double(Double(nanos) / 1_000_000)
    }
}

extension AdminAPI {
    /// `GET /api/v1/cluster`: this node's store and the live nodes.
    static func clusterJSON(_ view: ClusterView) -> JSONValue {
        let nodes = view.nodes.map { node -> JSONValue in
            .object([
                ("id", .string(node.id)),
                ("admin_address", node.adminAddress.map(JSONValue.string) ?? .null),
                ("config_revision", .int(Int(clamping: node.configRevision))),
                ("health", .string(node.health)),
                ("store_connected", .bool(node.storeConnected)),
            ])
        }
        let rejections = view.rejections.map { rejection -> JSONValue in
            .object([
                ("key", .string(rejection.key)),
                ("mod_revision", .int(Int(clamping: rejection.modRevision))),
                ("problems", .array(rejection.problems.map(JSONValue.string))),
            ])
        }
        return .object([
            ("node", .string(view.node)),
            (
                "store",
                .object([
                    ("type", .string(view.store)),
                    ("prefix", .string(view.prefix)),
                    ("connected", .bool(view.connected)),
                    ("revision", .int(Int(clamping: view.revision))),
                    ("applied_revision", .int(Int(clamping: view.appliedRevision))),
                    ("last_error", view.lastError.map(JSONValue.string) ?? .null),
                    ("rejections", .array(rejections)),
                    ("rejected_total", .int(view.rejectedTotal)),
                    ("disconnects_total", .int(view.disconnectsTotal)),
                    ("write_conflicts", .int(view.writeConflicts)),
                    ("registered", .bool(view.registered)),
                ])
            ),
            ("nodes", .array(nodes)),
            ("nodes_error", view.nodesError.map(JSONValue.string) ?? .null),
        ])
    }
}
