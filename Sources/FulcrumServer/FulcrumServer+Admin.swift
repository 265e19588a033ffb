import FulcrumAdmin
import FulcrumCluster
import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import Logging
import NIOCore
import Prometheus
import Synchronization

/// The admin API's view of the running server: pools, listeners and run-time pool changes.
/// Changes apply at once through the pools (a new snapshot; no reload, no dropped connection) and
/// are kept in `runtime`, written to `admin.state_file` when one is configured, so a restart or reload
/// re-applies them; without one they are lost on restart (and the API says so).
extension FulcrumServer: AdminControl {
    public func pools() -> [Pool] {
        config.pools.compactMap { pool(named: $0.name) }
    }

    public func listeners() -> [ListenerStatus] {
        config.listeners.compactMap { listenerConfig in
            guard let listener = listener(named: listenerConfig.name) else { return nil }
            return ListenerStatus(
                name: listenerConfig.name, bind: "\(listener.localAddress.ipAddress ?? "?"):\(listener.port)",
                mode: listenerConfig.mode.rawValue, pool: listenerConfig.pool,
                acceptedConnections: listener.context.connections.accepted,
                activeConnections: listener.context.connections.count)
        }
    }

    public var persistsChanges: Bool { config.admin?.stateFile != nil }

    public var metricsRegistry: PrometheusCollectorRegistry? { MetricsBootstrap.registry }

    public func addBackend(
        pool name: String, spec: BackendSpec, healthy: Bool?
    ) async throws(AdminError) -> ChangeResult {
        try await poolWriter.write(.add(spec), pool: name, healthy: healthy, on: self)
    }

    public func removeBackend(
        pool name: String, endpoint: Endpoint, force: Bool, drainTimeout: Duration
    )
        async throws(AdminError) -> ChangeResult
    {
        let writer = poolWriter
        let pool = try existingPool(name)
        guard pool.snapshot().member(endpoint) != nil else { throw .unknownBackend(pool: name, endpoint) }
        var events: [PoolEvent] = []
        if !force {
            events += try await writer.write(.state(endpoint, .draining), pool: name, healthy: nil, on: self).events
            // Established connections finish (bounded by the drain timeout) before the backend goes.
            if let backend = pool.snapshot().member(endpoint)?.backend {
                let deadline = ContinuousClock.now + drainTimeout
                while backend.stats.active > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        let backend = pool.snapshot().member(endpoint)?.backend
        let result = try await writer.write(.remove(endpoint), pool: name, healthy: nil, on: self)
        // What is still open now (forced, or past the drain timeout, or idle pooled HTTP connections)
        // is closed: the backend is out of the pool.
        if pool.snapshot().member(endpoint) == nil { backend?.connections.closeAll() }
        return ChangeResult(persisted: result.persisted, events: events + result.events)
    }

    public func setWeight(
        pool name: String, endpoint: Endpoint, weight: Int
    ) async throws(AdminError) -> ChangeResult {
        try await poolWriter.write(.weight(endpoint, weight), pool: name, healthy: nil, on: self)
    }

    public func setAdminState(
        pool name: String, endpoint: Endpoint, state: AdminState
    ) async throws(AdminError)
        -> ChangeResult
    {
        try await poolWriter.write(.state(endpoint, state), pool: name, healthy: nil, on: self)
    }

    /// Where admin changes go: this node's overlay (and state file), or the pool document in etcd.
    var poolWriter: any PoolChangeWriter {
        if let clusterNode { return SharedPoolWriter(node: clusterNode) }
        return OverlayPoolWriter()
    }

    /// Applies a change to this node's pool at once (a new snapshot) and records it in the overlay.
    func applyLocally(
        _ change: ClusterDocuments.BackendChange, pool name: String, healthy: Bool?
    ) throws(AdminError) -> ChangeResult {
        let pool = try existingPool(name)
        let now = MonotonicClock.now()
        switch change {
        case .add(let spec):
            let result = try self.change(name) { () throws(PoolError) in try pool.add(spec, healthy: healthy, now: now)
            }
            try persist { $0.recordAdd(pool: name, spec) }
            return result
        case .remove(let endpoint):
            let result = try self.change(name) { () throws(PoolError) in try pool.remove(endpoint, now: now).1 }
            try persist { $0.recordRemove(pool: name, endpoint) }
            return result
        case .weight(let endpoint, let weight):
            let result = try self.change(name) { () throws(PoolError) in
                try pool.setWeight(endpoint, to: weight, now: now)
            }
            try persist { $0.recordWeight(pool: name, endpoint, weight) }
            return result
        case .state(let endpoint, let state):
            let result = try self.change(name) { () throws(PoolError) in
                try pool.setAdmin(endpoint, to: state, now: now)
            }
            try persist { $0.recordAdmin(pool: name, endpoint, state) }
            return result
        }
    }

    /// Records an applied change in the overlay and, with a state file, writes it (atomically).
    private func persist(_ record: (inout RuntimeState) -> Void) throws(AdminError) {
        record(&runtime)
        guard let path = config.admin?.stateFile else { return }
        do {
            try runtime.save(to: path)
        } catch {
            throw .persistenceFailed("\(path): \(error)")
        }
    }

    func existingPool(_ name: String) throws(AdminError) -> Pool {
        guard let pool = pool(named: name) else { throw .unknownPool(name) }
        return pool
    }

    /// Runs a pool change and maps the core's refusal to the API's.
    private func change(_ pool: String, _ body: () throws(PoolError) -> [PoolEvent]) throws(AdminError) -> ChangeResult
    {
        do {
            return ChangeResult(persisted: persistsChanges, events: try body())
        } catch {
            switch error {
            case .duplicateBackend(let endpoint): throw .duplicateBackend(pool: pool, endpoint)
            case .unknownBackend(let endpoint): throw .unknownBackend(pool: pool, endpoint)
            case .invalidWeight(let weight): throw .invalidWeight(weight)
            }
        }
    }
}

/// Where the admin API's pool changes are kept. One small protocol so that the API has one code path:
/// on a single node the change applies at once and is kept in the overlay (``OverlayPoolWriter``); in a
/// cluster it is a compare-and-swap of the pool document in etcd that every node, this one included,
/// applies from its watch (``SharedPoolWriter``).
protocol PoolChangeWriter: Sendable {
    func write(
        _ change: ClusterDocuments.BackendChange, pool: String, healthy: Bool?, on server: isolated FulcrumServer
    ) async throws(AdminError) -> ChangeResult
}

/// A single node: the pool changes now; the overlay (and `admin.state_file`) keeps it.
struct OverlayPoolWriter: PoolChangeWriter {
    func write(
        _ change: ClusterDocuments.BackendChange, pool: String, healthy: Bool?, on server: isolated FulcrumServer
    ) async throws(AdminError) -> ChangeResult {
        try server.applyLocally(change, pool: pool, healthy: healthy)
    }
}

/// A cluster: the pool document in etcd changes (compare-and-swap, retried on conflict), then this node
/// waits until its watch applied it, so the caller reads the change back from this node at once.
/// `healthy` is not shared: a new backend starts as the pool's health checks say on every node.
struct SharedPoolWriter: PoolChangeWriter {
    let node: ClusterNode

    func write(
        _ change: ClusterDocuments.BackendChange, pool: String, healthy: Bool?, on server: isolated FulcrumServer
    ) async throws(AdminError) -> ChangeResult {
        let outcome: (revision: Int64, conflicts: Int)
        do {
            outcome = try await node.editor.apply(change, to: pool)
        } catch {
            switch error {
            case .unknownPool(let name): throw .unknownPool(name)
            case .unknownBackend(let name, let endpoint): throw .unknownBackend(pool: name, endpoint)
            case .duplicateBackend(let name, let endpoint): throw .duplicateBackend(pool: name, endpoint)
            case .rejected(let detail): throw .rejected(detail)
            case .conflict:
                node.counters.withLock { $0.writeConflicts += node.editor.maxAttempts }
                throw .conflict(error.description)
            case .unavailable(let detail): throw .storeUnavailable(detail)
            }
        }
        if outcome.conflicts > 0 { node.counters.withLock { $0.writeConflicts += outcome.conflicts } }
        if !(await server.waitUntilApplied(outcome.revision)) {
            server.logger.warning(
                "shared change written but not yet applied here", metadata: ["revision": "\(outcome.revision)"])
        }
        return ChangeResult(persisted: true, events: [])
    }
}
