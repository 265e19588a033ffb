import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumProxy
import NIOCore

/// The admin API's view of the running server: pools, listeners and run-time pool changes.
/// Changes apply at once through the pools (a new snapshot; no reload, no dropped connection).
/// They are not written anywhere yet (`persistsChanges` is false): a restart or reload forgets them.
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

    public var persistsChanges: Bool { false }

    public func addBackend(pool name: String, spec: BackendSpec, healthy: Bool?) throws(AdminError) -> ChangeResult {
        let pool = try existingPool(name)
        return try change(name) { () throws(PoolError) in
            try pool.add(spec, healthy: healthy, now: MonotonicClock.now())
        }
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
        events += try change(name) { () throws(PoolError) in try pool.remove(endpoint, now: MonotonicClock.now()).1 }
            .events
        return ChangeResult(persisted: persistsChanges, events: events)
    }

    public func setWeight(pool name: String, endpoint: Endpoint, weight: Int) throws(AdminError) -> ChangeResult {
        let pool = try existingPool(name)
        return try change(name) { () throws(PoolError) in
            try pool.setWeight(endpoint, to: weight, now: MonotonicClock.now())
        }
    }

    public func setAdminState(
        pool name: String, endpoint: Endpoint, state: AdminState
    ) throws(AdminError)
        -> ChangeResult
    {
        let pool = try existingPool(name)
        return try change(name) { () throws(PoolError) in
            try pool.setAdmin(endpoint, to: state, now: MonotonicClock.now())
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
