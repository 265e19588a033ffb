import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import NIOCore
import Prometheus

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

    public func addBackend(pool name: String, spec: BackendSpec, healthy: Bool?) throws(AdminError) -> ChangeResult {
        let pool = try existingPool(name)
        let result = try change(name) { () throws(PoolError) in
            try pool.add(spec, healthy: healthy, now: MonotonicClock.now())
        }
        try persist { $0.recordAdd(pool: name, spec) }
        return result
    }

    public func removeBackend(
        pool name: String, endpoint: Endpoint, force: Bool, drainTimeout: Duration
    )
        async throws(AdminError) -> ChangeResult
    {
        let pool = try existingPool(name)
        var events: [PoolEvent] = []
        if !force {
            events += try change(name) { () throws(PoolError) in
                try pool.setAdmin(endpoint, to: .draining, now: MonotonicClock.now())
            }.events
            // Established connections finish (bounded by the drain timeout) before the backend goes.
            if let backend = pool.snapshot().member(endpoint)?.backend {
                let deadline = ContinuousClock.now + drainTimeout
                while backend.stats.active > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
        }
        var removed: Backend?
        events += try change(name) { () throws(PoolError) in
            let (backend, events) = try pool.remove(endpoint, now: MonotonicClock.now())
            removed = backend
            return events
        }.events
        // What is still open now (forced, or past the drain timeout, or idle pooled HTTP connections)
        // is closed: the backend is out of the pool.
        removed?.connections.closeAll()
        try persist { $0.recordRemove(pool: name, endpoint) }
        return ChangeResult(persisted: persistsChanges, events: events)
    }

    public func setWeight(pool name: String, endpoint: Endpoint, weight: Int) throws(AdminError) -> ChangeResult {
        let pool = try existingPool(name)
        let result = try change(name) { () throws(PoolError) in
            try pool.setWeight(endpoint, to: weight, now: MonotonicClock.now())
        }
        try persist { $0.recordWeight(pool: name, endpoint, weight) }
        return result
    }

    public func setAdminState(
        pool name: String, endpoint: Endpoint, state: AdminState
    ) throws(AdminError)
        -> ChangeResult
    {
        let pool = try existingPool(name)
        let result = try change(name) { () throws(PoolError) in
            try pool.setAdmin(endpoint, to: state, now: MonotonicClock.now())
        }
        try persist { $0.recordAdmin(pool: name, endpoint, state) }
        return result
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

    private func existingPool(_ name: String) throws(AdminError) -> Pool {
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
