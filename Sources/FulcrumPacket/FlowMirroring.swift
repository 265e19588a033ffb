import FulcrumCore
import Synchronization

/// One flow as an HA standby needs it to keep serving it after a takeover: the client's 5-tuple, the backend it
/// is pinned to and, for NAT, the SNAT source port (so the backend's replies still match).
public struct FlowRecord: Sendable, Hashable {
    /// Client → VIP (the key the active node looks the flow up by).
    public var key: FlowKey
    public var backend: Endpoint
    /// NAT only: the source port the backend sees (the SNAT address is the virtual service's).
    public var snatPort: UInt16?
    /// TCP state as the active node saw it (`datagram` for UDP).
    public var state: FlowState
    /// Nanoseconds since the flow's last packet on the active node: the standby keeps the remaining timeout.
    public var ageNanos: UInt64

    public init(key: FlowKey, backend: Endpoint, snatPort: UInt16? = nil, state: FlowState, ageNanos: UInt64) {
        self.key = key
        self.backend = backend
        self.snatPort = snatPort
        self.state = state
        self.ageNanos = ageNanos
    }
}

/// Flow changes since the last drain of a `FlowChangeFeed`.
public struct FlowChanges: Sendable, Equatable {
    public var added: [FlowRecord] = []
    public var removed: [FlowKey] = []
    /// Changes were dropped because the feed was full: take `snapshotFlows()` and start over from it.
    public var resyncNeeded = false

    public init(added: [FlowRecord] = [], removed: [FlowKey] = [], resyncNeeded: Bool = false) {
        self.added = added
        self.removed = removed
        self.resyncNeeded = resyncNeeded
    }

    public var isEmpty: Bool { added.isEmpty && removed.isEmpty }
}

/// The bounded change feed between a packet worker and the HA mirror channel. The worker publishes once per
/// batch; when the consumer falls behind and `capacity` changes are pending, the new ones are dropped and
/// `resyncNeeded` is set (the worker never waits for the consumer: it holds the lock only to append).
public final class FlowChangeFeed: Sendable {
    public let capacity: Int
    private let pending = Mutex(FlowChanges())

    public init(capacity: Int = 65536) {
        self.capacity = max(1, capacity)
    }

    /// Appends a batch (worker side). Returns false when it was dropped.
    @discardableResult
    public func publish(_ changes: FlowChanges) -> Bool {
        guard !changes.isEmpty else { return true }
        return pending.withLock { p in
            guard p.added.count + p.removed.count + changes.added.count + changes.removed.count <= capacity else {
                p.resyncNeeded = true
                return false
            }
            p.added += changes.added
            p.removed += changes.removed
            return true
        }
    }

    /// Takes everything pending (consumer side) and clears the resync flag.
    public func drain() -> FlowChanges {
        pending.withLock { p in
            defer { p = FlowChanges() }
            return p
        }
    }

    /// Forgets pending changes (a snapshot taken now supersedes them).
    func reset() {
        pending.withLock { $0 = FlowChanges() }
    }
}

/// A processor's flow table seen as records, on the worker thread (not thread-safe).
public protocol FlowMirroring: AnyObject {
    /// Every live flow.
    func flowRecords(now: UInt64) -> [FlowRecord]
    /// Adds flows mirrored from the active node, pinned to their backend (looked up in `snapshot`, which
    /// includes backends that are down). Returns how many could not be installed (unknown backend, SNAT port
    /// in use or outside the range, flow already present).
    func installMirrored(_ records: [FlowRecord], snapshot: PoolSnapshot, now: UInt64) -> Int
    /// Removes mirrored flows that ended on the active node.
    func removeMirrored(_ keys: [FlowKey], now: UInt64)
    /// Starts recording inserted and removed flows into `log`.
    func recordChanges(into log: FlowChangeLog)
}

/// Changes a worker collects during one batch (worker thread only), then hands to its `FlowChangeFeed`.
public final class FlowChangeLog {
    public private(set) var changes = FlowChanges()
    /// Off while installing mirrored flows: the standby does not echo them back.
    var enabled = true

    public init() {}

    func added(_ record: FlowRecord) {
        if enabled { changes.added.append(record) }
    }

    func removed(_ key: FlowKey) {
        if enabled { changes.removed.append(key) }
    }

    /// The changes so far; the log starts empty again.
    public func take() -> FlowChanges {
        defer { changes = FlowChanges() }
        return changes
    }
}

extension BackendFlows: FlowMirroring {
    func record(_ slot: FlowTable<Backend>.Slot, now: UInt64) -> FlowRecord {
        FlowRecord(
            key: flows.key(slot), backend: flows.value(slot).endpoint, state: flows.state(slot),
            ageNanos: now >= flows.lastSeen(slot) ? now - flows.lastSeen(slot) : 0)
    }

    public func flowRecords(now: UInt64) -> [FlowRecord] {
        var records: [FlowRecord] = []
        records.reserveCapacity(flows.count)
        flows.forEachSlot { records.append(record($0, now: now)) }
        return records
    }

    public func installMirrored(_ records: [FlowRecord], snapshot: PoolSnapshot, now: UInt64) -> Int {
        let log = changeLog
        log?.enabled = false
        defer { log?.enabled = true }
        var rejected = 0
        for record in records {
            guard let backend = snapshot.member(record.backend)?.backend, flows.lookup(record.key, now: now) == nil
            else {
                rejected += 1
                continue
            }
            backend.connectionOpened()
            flows.insert(record.key, value: backend, state: record.state, now: now &- min(record.ageNanos, now))
        }
        return rejected
    }

    public func removeMirrored(_ keys: [FlowKey], now: UInt64) {
        let log = changeLog
        log?.enabled = false
        defer { log?.enabled = true }
        for key in keys {
            if let (slot, _) = flows.lookup(key, now: now) { flows.remove(slot) }
        }
    }

    public func recordChanges(into log: FlowChangeLog) {
        changeLog = log
        flows.onInserted = { [unowned self] slot in log.added(self.record(slot, now: self.flows.lastSeen(slot))) }
        flows.onRemovedKey = { key in log.removed(key) }
    }
}

extension NATRewriter: FlowMirroring {
    func record(_ slot: FlowTable<Mapping>.Slot, now: UInt64) -> FlowRecord {
        let m = flows.value(slot)
        return FlowRecord(
            key: flows.key(slot), backend: m.backend.endpoint, snatPort: m.snatPort, state: flows.state(slot),
            ageNanos: now >= flows.lastSeen(slot) ? now - flows.lastSeen(slot) : 0)
    }

    public func flowRecords(now: UInt64) -> [FlowRecord] {
        var records: [FlowRecord] = []
        records.reserveCapacity(flows.count)
        flows.forEachSlot { records.append(record($0, now: now)) }
        return records
    }

    public func installMirrored(_ records: [FlowRecord], snapshot: PoolSnapshot, now: UInt64) -> Int {
        let log = changeLog
        log?.enabled = false
        defer { log?.enabled = true }
        var rejected = 0
        for record in records {
            guard let backend = snapshot.member(record.backend)?.backend, let backendAddress = backend.ipv4,
                let snatPort = record.snatPort, flows.lookup(record.key, now: now) == nil, claimPort(snatPort)
            else {
                rejected += 1
                continue
            }
            let mapping = Mapping(
                backend: backend, backendAddress: backendAddress, backendPort: backend.endpoint.port,
                client: record.key.source, clientPort: record.key.sourcePort, snatPort: snatPort)
            let reverse = FlowKey(
                source: backendAddress, destination: settings.snatAddress, sourcePort: mapping.backendPort,
                destinationPort: snatPort, proto: record.key.proto)
            backend.connectionOpened()
            flows.insert(
                record.key, reverseKey: reverse, value: mapping, state: record.state,
                now: now &- min(record.ageNanos, now))
        }
        return rejected
    }

    public func removeMirrored(_ keys: [FlowKey], now: UInt64) {
        let log = changeLog
        log?.enabled = false
        defer { log?.enabled = true }
        for key in keys {
            if let (slot, isReverse) = flows.lookup(key, now: now), !isReverse { flows.remove(slot) }
        }
    }

    public func recordChanges(into log: FlowChangeLog) {
        changeLog = log
        flows.onInserted = { [unowned self] slot in log.added(self.record(slot, now: self.flows.lastSeen(slot))) }
        flows.onRemovedKey = { key in log.removed(key) }
    }
}
