import FulcrumPacket
import Synchronization

/// A mirrored flow's identity: its virtual service and client-side 5-tuple.
public struct MirroredFlowID: Sendable, Hashable {
    public var service: String
    public var key: FlowKey

    public init(service: String, key: FlowKey) {
        self.service = service
        self.key = key
    }
}

extension MirroredFlow {
    public var id: MirroredFlowID { MirroredFlowID(service: service, key: key) }
}

/// The standby's side of mirroring, pure: authenticates and orders messages and keeps the mirrored table.
///
/// A message is applied only if its MAC is valid and its (epoch, sequence) is above the last accepted one,
/// so a forged or replayed message changes nothing; each refusal is counted. A snapshot arrives in parts and
/// replaces the table when its last part arrives (a standby never serves half a snapshot).
public struct MirrorReceiver: Sendable {
    public struct Counters: Sendable, Equatable {
        public var accepted: UInt64 = 0
        /// The MAC did not verify (wrong key, forged or corrupted message).
        public var unauthenticated: UInt64 = 0
        /// Authenticated but not decodable.
        public var malformed: UInt64 = 0
        /// An (epoch, sequence) not above the last accepted: a replay or a stale sender.
        public var replayed: UInt64 = 0
        public var snapshotsInstalled: UInt64 = 0
        public init() {}
    }

    /// What an accepted message changed, for the sink that installs entries into the packet plane.
    public enum Change: Sendable, Equatable {
        case replaced([MirroredFlow])
        case updated(upserts: [MirroredFlow], removals: [MirroredFlowRemoval])
        /// A snapshot part was stored; nothing changes until the last part.
        case pending
    }

    public let key: MirrorKey
    /// Hard bound on mirrored flows: upserts beyond it are dropped (and counted).
    public let capacity: Int
    public private(set) var counters = Counters()
    public private(set) var overCapacity: UInt64 = 0
    public private(set) var table: [MirroredFlowID: MirroredFlow] = [:]
    private var last: (epoch: UInt64, sequence: UInt64)?
    private var pendingSnapshot: [MirroredFlowID: MirroredFlow]?

    public init(key: MirrorKey, capacity: Int = 1 << 20) {
        self.key = key
        self.capacity = capacity
    }

    /// Authenticates, orders and applies one frame; nil when it was refused.
    public mutating func receive(_ frame: [UInt8]) -> Change? {
        let message: MirrorMessage
        do {
            message = try MirrorMessage.decode(frame, key: key)
        } catch .badMAC {
            counters.unauthenticated += 1
            return nil
        } catch {
            counters.malformed += 1
            return nil
        }
        if let last, (message.epoch, message.sequence) <= (last.epoch, last.sequence) {
            counters.replayed += 1
            return nil
        }
        if let last, message.epoch != last.epoch { pendingSnapshot = nil }  // a new run of the sender
        last = (message.epoch, message.sequence)
        counters.accepted += 1
        switch message.body {
        case .snapshot(let flows, let isLast):
            var parts = pendingSnapshot ?? [:]
            for flow in flows where parts.count < capacity || parts[flow.id] != nil { parts[flow.id] = flow }
            overCapacity += UInt64(flows.count) - UInt64(min(flows.count, capacity))
            guard isLast else {
                pendingSnapshot = parts
                return .pending
            }
            pendingSnapshot = nil
            table = parts
            counters.snapshotsInstalled += 1
            return .replaced(Array(parts.values))
        case .update(let upserts, let removals):
            for removal in removals { table[MirroredFlowID(service: removal.service, key: removal.key)] = nil }
            var applied: [MirroredFlow] = []
            for flow in upserts {
                if table.count >= capacity && table[flow.id] == nil {
                    overCapacity += 1
                    continue
                }
                table[flow.id] = flow
                applied.append(flow)
            }
            return .updated(upserts: applied, removals: removals)
        }
    }
}

/// The active's bounded queue of flow changes, filled by the packet plane and drained by the mirror's sender.
///
/// `record` never waits: it takes the lock only if it is free, and when the lock is busy or the queue is full
/// the change is dropped and the next send is a full snapshot instead (the standby then converges anyway).
/// Changes to the same flow coalesce, so a busy flow costs one entry per batch.
public final class MirrorOutbox: Sendable {
    private struct Queue {
        var order: [MirroredFlowID] = []
        var pending: [MirroredFlowID: MirroredFlow?] = [:]
        var needsSnapshot = true
        var dropped: UInt64 = 0
    }

    public let capacity: Int
    private let queue = Mutex(Queue())

    public init(capacity: Int = 65536) {
        self.capacity = capacity
    }

    /// A flow was created or changed state (nil `flow` with an `id`: it ended).
    public func record(_ id: MirroredFlowID, _ flow: MirroredFlow?) {
        let recorded = queue.withLockIfAvailable { queue -> Bool in
            if queue.pending[id] == nil {
                guard queue.order.count < capacity else {
                    // Full: forget the queue and resend everything; the oldest changes are the ones lost.
                    queue.order.removeAll(keepingCapacity: true)
                    queue.pending.removeAll(keepingCapacity: true)
                    queue.needsSnapshot = true
                    queue.dropped += 1
                    return true
                }
                queue.order.append(id)
            }
            queue.pending[id] = .some(flow)
            return true
        }
        if recorded == nil {
            queue.withLock {
                $0.needsSnapshot = true
                $0.dropped += 1
            }
        }
    }

    public func upsert(_ flow: MirroredFlow) { record(flow.id, flow) }
    public func remove(_ id: MirroredFlowID) { record(id, nil) }

    /// Asks for a full snapshot on the next send (a standby connected).
    public func requestSnapshot() { queue.withLock { $0.needsSnapshot = true } }

    /// Changes dropped because the queue was full or busy.
    public var dropped: UInt64 { queue.withLock { $0.dropped } }

    /// What the sender should send next: a snapshot, or up to `limit` changes in arrival order.
    public enum Next: Sendable, Equatable {
        case snapshot
        case changes(upserts: [MirroredFlow], removals: [MirroredFlowRemoval])
    }

    public func take(limit: Int) -> Next {
        queue.withLock { queue in
            if queue.needsSnapshot {
                queue.needsSnapshot = false
                queue.order.removeAll(keepingCapacity: true)
                queue.pending.removeAll(keepingCapacity: true)
                return .snapshot
            }
            var upserts: [MirroredFlow] = []
            var removals: [MirroredFlowRemoval] = []
            let taken = queue.order.prefix(limit)
            for id in taken {
                if let change = queue.pending.removeValue(forKey: id) {
                    if let flow = change {
                        upserts.append(flow)
                    } else {
                        removals.append(MirroredFlowRemoval(service: id.service, key: id.key))
                    }
                }
            }
            queue.order.removeFirst(taken.count)
            return .changes(upserts: upserts, removals: removals)
        }
    }
}
