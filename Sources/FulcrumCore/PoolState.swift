import Synchronization

/// The control-plane state of one pool: members with their health, ejection and admin state.
/// Pure and single-threaded (`Pool` wraps it in a mutex); every mutation takes the time and returns
/// the events it caused; `makeSnapshot` turns it into what the data planes read.
public struct PoolState: Sendable {
    struct Member: Sendable {
        let backend: Backend
        var spec: BackendSpec
        var admin: AdminState = .enabled
        var health: HealthTracker
        var outlier = OutlierRecord()
        /// When the member last became eligible for traffic after being out; drives slow start.
        var rampSince: UInt64?
    }

    public let name: String
    public private(set) var settings: PoolSettings
    private(set) var members: [Member] = []
    private let load = PoolLoad()
    private var usedBackups = false

    public init(name: String, settings: PoolSettings, backends: [BackendSpec], now: UInt64) throws(PoolError) {
        self.name = name
        self.settings = settings
        for spec in backends {
            // Backends from the config start up (as in HAProxy); runtime additions prove themselves first.
            _ = try add(spec, healthy: true, now: now, ramp: false)
        }
    }

    public var count: Int { members.count }

    public func backend(_ endpoint: Endpoint) -> Backend? {
        members.first { $0.spec.endpoint == endpoint }?.backend
    }

    // MARK: Membership (scale-out / scale-in)

    /// Adds a backend. With active checks configured it starts down unless `healthy` says otherwise,
    /// and receives traffic once it passes `rise` checks.
    public mutating func add(_ spec: BackendSpec, healthy: Bool? = nil, now: UInt64) throws(PoolError) -> [PoolEvent] {
        try add(spec, healthy: healthy, now: now, ramp: true)
    }

    private mutating func add(
        _ spec: BackendSpec, healthy: Bool?, now: UInt64, ramp: Bool
    ) throws(PoolError)
        -> [PoolEvent]
    {
        guard BackendSpec.weightRange.contains(spec.weight) else { throw .invalidWeight(spec.weight) }
        guard backend(spec.endpoint) == nil else { throw .duplicateBackend(spec.endpoint) }
        let startsHealthy = settings.health == nil ? true : (healthy ?? false)
        let member = Member(
            backend: Backend(endpoint: spec.endpoint, poolLoad: load), spec: spec,
            health: HealthTracker(healthy: startsHealthy, now: now),
            rampSince: ramp && startsHealthy ? now : nil)
        members.append(member)
        return [.added(spec.endpoint)] + backupTransition(now: now)
    }

    /// Removes a backend from rotation and membership; its established connections are the data
    /// plane's to drain (it keeps the returned `Backend`).
    public mutating func remove(_ endpoint: Endpoint, now: UInt64) throws(PoolError) -> (Backend, [PoolEvent]) {
        guard let index = members.firstIndex(where: { $0.spec.endpoint == endpoint }) else {
            throw .unknownBackend(endpoint)
        }
        let removed = members.remove(at: index)
        return (removed.backend, [.removed(endpoint)] + backupTransition(now: now))
    }

    public mutating func setWeight(_ endpoint: Endpoint, to weight: Int, now: UInt64) throws(PoolError) -> [PoolEvent] {
        guard BackendSpec.weightRange.contains(weight) else { throw .invalidWeight(weight) }
        let index = try indexOf(endpoint)
        guard members[index].spec.weight != weight else { return [] }
        members[index].spec.weight = weight
        return [.weightChanged(endpoint, weight)]
    }

    public mutating func setAdmin(
        _ endpoint: Endpoint, to admin: AdminState, now: UInt64
    ) throws(PoolError)
        -> [PoolEvent]
    {
        let index = try indexOf(endpoint)
        guard members[index].admin != admin else { return [] }
        let wasEligible = isEligible(members[index], now: now)
        members[index].admin = admin
        markRamp(index, wasEligible: wasEligible, now: now)
        return [.adminChanged(endpoint, admin)] + backupTransition(now: now)
    }

    /// Applies a reloaded configuration: members that stay keep their health, counters and
    /// connections; new ones are added (as up, like at start); missing ones are removed.
    public mutating func reconfigure(
        settings: PoolSettings, backends: [BackendSpec], now: UInt64
    ) throws(PoolError)
        -> (removed: [Backend], events: [PoolEvent])
    {
        var seen = Set<Endpoint>()
        for spec in backends {
            guard BackendSpec.weightRange.contains(spec.weight) else { throw .invalidWeight(spec.weight) }
            guard seen.insert(spec.endpoint).inserted else { throw .duplicateBackend(spec.endpoint) }
        }
        self.settings = settings
        var events: [PoolEvent] = []
        var removed: [Backend] = []
        for member in members where !seen.contains(member.spec.endpoint) {
            let (backend, more) = try remove(member.spec.endpoint, now: now)
            removed.append(backend)
            events += more
        }
        for spec in backends {
            if let index = members.firstIndex(where: { $0.spec.endpoint == spec.endpoint }) {
                if members[index].spec != spec {
                    members[index].spec = spec
                    events.append(.weightChanged(spec.endpoint, spec.weight))
                }
            } else {
                events += try add(spec, healthy: true, now: now, ramp: false)
            }
        }
        if settings.health == nil {
            for index in members.indices where !members[index].health.isHealthy {
                members[index].health = HealthTracker(healthy: true, now: now)
            }
        }
        return (removed, events + backupTransition(now: now))
    }

    // MARK: Health (active checks) and outliers (live traffic)

    /// Feeds one active check result through the rise/fall machine.
    public mutating func recordProbe(
        _ endpoint: Endpoint, success: Bool, detail: String = "", now: UInt64
    )
        -> [PoolEvent]
    {
        guard let settings = settings.health, let index = members.firstIndex(where: { $0.spec.endpoint == endpoint })
        else { return [] }
        let wasEligible = isEligible(members[index], now: now)
        members[index].backend.lastProbe = ProbeResult(success: success, at: now, detail: detail)
        guard members[index].health.record(success: success, settings: settings, at: now, detail: detail) else {
            return []
        }
        markRamp(index, wasEligible: wasEligible, now: now)
        return [.healthChanged(endpoint, healthy: success, detail: detail)] + backupTransition(now: now)
    }

    /// Called when a backend's failures-in-a-row reach the threshold (`Backend.recordOutcome`).
    /// Ejects it unless that would exceed the pool's ejection limit.
    public mutating func reportFailureStreak(_ backend: Backend, streak: Int, now: UInt64) -> [PoolEvent] {
        guard let outlier = settings.outlier, streak >= outlier.consecutiveFailures,
            let index = members.firstIndex(where: { $0.backend === backend }),
            !members[index].outlier.isEjected(at: now)
        else { return [] }
        let ejectedNow = members.filter { $0.outlier.isEjected(at: now) }.count
        guard ejectedNow < outlier.ejectionLimit(poolSize: members.count) else { return [] }
        let until = members[index].outlier.eject(at: now, settings: outlier)
        // A fresh streak must build up again after the ejection.
        backend.stats.consecutiveFailures.store(0, ordering: .relaxed)
        return [.ejected(backend.endpoint, forNanos: until - now)] + backupTransition(now: now)
    }

    /// Advances time: ends ejections whose time is up and ends finished slow starts.
    /// Returns the events and whether effective weights changed (a new snapshot is due).
    public mutating func tick(now: UInt64) -> (events: [PoolEvent], weightsChanged: Bool) {
        var events: [PoolEvent] = []
        var weightsChanged = false
        for index in members.indices {
            if members[index].outlier.expire(at: now) {
                events.append(.returned(members[index].spec.endpoint))
                markRamp(index, wasEligible: false, now: now)
            }
            if let since = members[index].rampSince {
                weightsChanged = true
                if now >= since &+ settings.slowStartNanos { members[index].rampSince = nil }
            }
        }
        return (events + backupTransition(now: now), weightsChanged)
    }

    // MARK: Snapshots

    /// The state of one member as the data planes and operators see it.
    func state(of member: Member, now: UInt64) -> BackendState {
        switch member.admin {
        case .disabled: return .disabled
        case .draining: return .draining
        case .enabled:
            if !member.health.isHealthy { return .down }
            return member.outlier.isEjected(at: now) ? .ejected : .up
        }
    }

    public func makeSnapshot(version: UInt64, now: UInt64) -> PoolSnapshot {
        let statuses = members.map { member in
            MemberStatus(
                backend: member.backend, weight: member.spec.weight, backup: member.spec.backup,
                admin: member.admin, state: state(of: member, now: now),
                effectiveWeight: effectiveWeight(member, now: now),
                stateSince: member.health.since,
                ejectedUntil: member.outlier.isEjected(at: now) ? member.outlier.ejectedUntil : nil)
        }
        let (eligible, backups) = eligibleStatuses(statuses)
        let candidates = eligible.sorted { $0.backend.name < $1.backend.name }
            .map { Candidate(backend: $0.backend, weight: $0.effectiveWeight) }
        return PoolSnapshot(
            pool: name, version: version, algorithm: settings.algorithm, members: statuses, candidates: candidates,
            usingBackups: backups,
            selector: settings.algorithm.makeSelector(candidates: candidates, options: settings.options))
    }

    // MARK: Private

    private func indexOf(_ endpoint: Endpoint) throws(PoolError) -> Int {
        guard let index = members.firstIndex(where: { $0.spec.endpoint == endpoint }) else {
            throw .unknownBackend(endpoint)
        }
        return index
    }

    private func isEligible(_ member: Member, now: UInt64) -> Bool {
        state(of: member, now: now) == .up
    }

    /// Starts slow start when a member has just become eligible.
    private mutating func markRamp(_ index: Int, wasEligible: Bool, now: UInt64) {
        let eligible = isEligible(members[index], now: now)
        if eligible && !wasEligible && settings.slowStartNanos > 0 {
            members[index].rampSince = now
        } else if !eligible {
            members[index].rampSince = nil
        }
    }

    private func effectiveWeight(_ member: Member, now: UInt64) -> Int {
        SlowStart.effectiveWeight(
            weight: member.spec.weight * WeightScale.factor, since: member.rampSince, now: now,
            window: settings.slowStartNanos)
    }

    /// Primaries that are up; the backups that are up when no primary is.
    private func eligibleStatuses(_ statuses: [MemberStatus]) -> ([MemberStatus], Bool) {
        let up = statuses.filter { $0.state == .up }
        let primaries = up.filter { !$0.backup }
        return primaries.isEmpty ? (up, !up.isEmpty) : (primaries, false)
    }

    private mutating func backupTransition(now: UInt64) -> [PoolEvent] {
        let statuses = members.map { (state: state(of: $0, now: now), backup: $0.spec.backup) }
        let up = statuses.filter { $0.state == .up }
        let backups = !up.isEmpty && up.allSatisfy(\.backup)
        guard backups != usedBackups else { return [] }
        usedBackups = backups
        return [.usingBackups(backups)]
    }
}
