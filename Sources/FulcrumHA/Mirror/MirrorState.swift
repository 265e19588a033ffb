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
        /// A whole snapshot arrived: install `flows`, and remove `stale` (mirrored before, absent from it).
        case replaced([MirroredFlow], stale: [MirroredFlowRemoval])
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
            let stale = table.keys.filter { parts[$0] == nil }.map {
                MirroredFlowRemoval(service: $0.service, key: $0.key)
            }
            table = parts
            counters.snapshotsInstalled += 1
            return .replaced(Array(parts.values), stale: stale)
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
