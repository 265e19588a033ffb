import FulcrumCore
import FulcrumPacket
import Synchronization

/// The export/import hooks between the packet plane's flow tables and mirroring. A flow table belongs to one
/// packet worker, so the worker calls these on its own thread (between batches): the export feeds
/// `MirrorOutbox` / a `MirrorFlowSource`, the import installs what a `MirrorFlowSink` received.
public enum PacketPlaneMirroring {
    /// Every live flow of a DSR or tunnel service's table (5-tuple → backend, TCP state).
    public static func export(_ table: BackendFlows, service: String) -> [MirroredFlow] {
        var out: [MirroredFlow] = []
        out.reserveCapacity(table.flows.count)
        table.flows.forEach { key, backend, state in
            out.append(MirroredFlow(service: service, key: key, backend: backend.endpoint, state: state))
        }
        return out
    }

    /// Every live NAT mapping (client-side 5-tuple → backend, with its SNAT port).
    public static func export(_ nat: NATRewriter, service: String) -> [MirroredFlow] {
        var out: [MirroredFlow] = []
        out.reserveCapacity(nat.flows.count)
        nat.flows.forEach { key, mapping, state in
            out.append(
                MirroredFlow(
                    service: service, key: key,
                    backend: Endpoint(address: .v4(mapping.backendAddress), port: mapping.backendPort), state: state,
                    snatPort: mapping.snatPort))
        }
        return out
    }

    /// Installs mirrored flows of `service` into a DSR or tunnel table, so that after a takeover their packets
    /// keep going to the same backend even if the pool (or its Maglev table) changed meanwhile. A flow whose
    /// backend is no longer a member of the pool is skipped (its next packet picks afresh); a flow already in
    /// the table is left alone (the local entry is newer). Returns how many were installed.
    @discardableResult
    public static func install(
        _ flows: some Sequence<MirroredFlow>, service: String, into table: BackendFlows, snapshot: PoolSnapshot,
        now: UInt64
    ) -> Int {
        var backends: [Endpoint: Backend] = [:]
        for member in snapshot.members { backends[member.backend.endpoint] = member.backend }
        var installed = 0
        for flow in flows where flow.service == service {
            guard let backend = backends[flow.backend], table.flows.lookup(flow.key, now: now) == nil else { continue }
            backend.connectionOpened()
            table.flows.insert(flow.key, value: backend, state: flow.state, now: now)
            installed += 1
        }
        return installed
    }

    /// Removes ended flows of `service` from a DSR or tunnel table.
    public static func remove(
        _ removals: some Sequence<MirroredFlowRemoval>, service: String, from table: BackendFlows, now: UInt64
    ) {
        for removal in removals where removal.service == service {
            if let (slot, _) = table.flows.lookup(removal.key, now: now) { table.flows.remove(slot) }
        }
    }
}

/// The standby's copy of the active's flows, as a `MirrorFlowSink`: the packet plane reads it when this node
/// becomes master (`flows(of:)`, then `PacketPlaneMirroring.install` on each worker), so established flows
/// keep their backend after the takeover. Bounded by the receiver's capacity.
public final class MirroredFlowStore: MirrorFlowSink {
    private let table = Mutex<[MirroredFlowID: MirroredFlow]>([:])

    public init() {}

    public func apply(_ change: MirrorReceiver.Change) {
        table.withLock { table in
            switch change {
            case .replaced(let all):
                table = Dictionary(all.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
            case .updated(let upserts, let removals):
                for removal in removals { table[MirroredFlowID(service: removal.service, key: removal.key)] = nil }
                for flow in upserts { table[flow.id] = flow }
            case .pending:
                break
            }
        }
    }

    public var count: Int { table.withLock { $0.count } }

    /// The mirrored flows of one virtual service.
    public func flows(of service: String) -> [MirroredFlow] {
        table.withLock { $0.values.filter { $0.service == service } }
    }
}

/// A flow source with nothing to export: the server's mirror before a packet plane serves virtual services.
public struct NoMirroredFlows: MirrorFlowSource {
    public init() {}
    public func exportFlows() -> [MirroredFlow] { [] }
}
