import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumHA
import FulcrumPacket
import Glibc
import Logging
import Synchronization

/// Why `ha:` cannot run, found at start (the process refuses to start rather than run without its pair).
public struct HAConfigurationError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// The server's Active/Standby part: the VRRP router for `ha.vrrp`, and its tracking of the server's own
/// health.
///
/// Tracking fails — and the router advertises `priority − track_weight` — while a configured listener is not
/// bound or a pool that a listener or virtual service uses has no backend available. Pools report every change
/// through `Pool.addObserver`; the server calls `watch` after each (re)load with what it now serves.
final class HighAvailability: Sendable {
    let vrrp: VRRPService
    let config: VRRPConfig
    /// The VRRP VIPs (`ha.vrrp.vips` addresses).
    let vrrpVIPs: Set<IPAddress>
    /// Mirroring (`ha.mirror`): sends while this node is master, receives into `mirrored` otherwise.
    let mirror: MirrorService?
    /// The packet plane's mirroring ports, which the mirror streams from (master) and installs into (standby).
    let flows = PacketPlaneFlowMirror()
    private let watched = Mutex(Watched())
    /// The `dsr` and `tunnel` services whose VIP is a VRRP VIP: only the master answers ARP for (and forwards
    /// to) it.
    let vipOwners: VIPOwners

    private struct Watched {
        /// Pools a listener or virtual service uses, by name.
        var pools: [String: Pool] = [:]
        var unboundListeners: [String] = []
        var reasons: [String] = []
    }

    init(
        config: VRRPConfig, mirror mirrorConfig: MirrorConfig?, virtualServices: [VirtualServiceConfig] = [],
        logger: Logger
    ) throws(HAConfigurationError) {
        var settings = Self.settings(for: config)
        // A `dsr` or `tunnel` VIP that is a VRRP VIP is owned in the packet plane: the kernel must not hold it
        // (it would answer ARP and take the frames itself). The other VRRP VIPs go on the kernel as usual.
        let vrrpVIPs = Set(config.vips.map(\.address))
        let ownedVIPs = Set(virtualServices.filter { Self.ownsVIPInPacketPlane($0) }.map(\.vip))
        for i in settings.virtualAddresses.indices where ownedVIPs.contains(settings.virtualAddresses[i].address) {
            settings.virtualAddresses[i].onKernel = false
        }
        do {
            try settings.validate()
        } catch {
            throw HAConfigurationError(message: "ha.vrrp: \(error)")
        }
        guard if_nametoindex(config.interface) > 0 else {
            throw HAConfigurationError(message: "ha.vrrp.interface: no interface named '\(config.interface)'")
        }
        self.config = config
        let owners = VIPOwners()
        vipOwners = owners
        self.vrrpVIPs = vrrpVIPs
        let vrrp = VRRPService(settings: settings, logger: logger) { owners.setMaster($0 == .master) }
        self.vrrp = vrrp
        if let mirrorConfig {
            let key: MirrorKey
            do {
                key = try MirrorKey(contentsOf: mirrorConfig.keyFile)
            } catch {
                throw HAConfigurationError(message: "ha.mirror.key_file: \(error)")
            }
            var mirrorLogger = logger
            mirrorLogger[metadataKey: "component"] = "mirror"
            // The packet plane's flows are mirrored; the proxy keeps no affinity table (consistent hashing
            // recomputes the same backend on the peer, see docs/ha.md).
            mirror = MirrorService(
                settings: .init(listen: mirrorConfig.listen, peers: mirrorConfig.peers, key: key),
                source: flows, sink: flows, logger: mirrorLogger,
                isActive: { vrrp.status.state == .master })
        } else {
            mirror = nil
        }
    }

    /// `ha.vrrp` as the router's settings. Both default `track_weight` to 50; the addresses go on the kernel
    /// (the proxy binds them) unless `init` marks them as served by the packet plane (`onKernel: false`).
    static func settings(for config: VRRPConfig) -> VRRPInstanceSettings {
        VRRPInstanceSettings(
            interface: config.interface, virtualRouterId: config.virtualRouterId, priority: config.priority,
            advertInterval: config.advertInterval,
            virtualAddresses: config.vips.map {
                VRRPVirtualAddress(address: $0.address, prefixLength: $0.prefixLength)
            },
            preempt: config.preempt, preemptDelay: config.preemptDelay, unicastPeers: config.unicastPeers,
            trackWeight: config.trackWeight, notify: config.notify)
    }

    /// Whether `vs`'s worker answers ARP for its VIP itself (`dsr`, `tunnel`) instead of the kernel.
    static func ownsVIPInPacketPlane(_ vs: VirtualServiceConfig) -> Bool {
        vs.forwarding == .dsr || vs.forwarding == .tunnel
    }

    /// Whether a `dsr` or `tunnel` worker for `vs` starts owning its VIP: not a VRRP VIP, or this node is master.
    func answersARP(for vs: VirtualServiceConfig) -> Bool {
        !(Self.ownsVIPInPacketPlane(vs) && vrrpVIPs.contains(vs.vip)) || vipOwners.isMaster
    }

    /// The running `dsr`/`tunnel` services on VRRP VIPs after a (re)load; they follow the router's state from now on.
    func setVIPOwners(_ services: [any VIPOwningService]) {
        vipOwners.setServices(services)
    }

    /// What the server serves after a (re)load; re-evaluates tracking.
    func watch(pools: [String: Pool], unboundListeners: [String]) {
        watched.withLock {
            $0.pools = pools
            $0.unboundListeners = unboundListeners.sorted()
        }
        evaluate()
    }

    /// Called by every pool's observer: only pools still watched count (an observer cannot be removed).
    func poolChanged(_ pool: Pool) {
        let relevant = watched.withLock { $0.pools[pool.name] === pool }
        if relevant { evaluate() }
    }

    private func evaluate() {
        let failing = watched.withLock { watched in
            var reasons = watched.unboundListeners.map { "listener \($0) is not bound" }
            for (name, pool) in watched.pools.sorted(by: { $0.key < $1.key })
            where pool.snapshot().candidates.isEmpty {
                reasons.append("pool \(name) has no backend available")
            }
            watched.reasons = reasons
            return !reasons.isEmpty
        }
        vrrp.setTracking(failing: failing)
    }

    var status: HAStatus {
        let s = vrrp.status
        let reasons = watched.withLock { $0.reasons }
        return HAStatus(
            state: s.state.rawValue, virtualRouterId: config.virtualRouterId, interface: config.interface,
            configuredPriority: config.priority, effectivePriority: s.effectivePriority,
            trackingFailing: s.trackingFailing, trackingReasons: reasons, primaryAddress: s.primaryAddress?.description,
            masterAddress: s.masterAddress?.description, virtualAddresses: config.vips.map(\.description),
            transitions: s.transitions, advertsSent: s.advertsSent, advertsReceived: s.advertsReceived,
            drops: VRRPDropReason.allCases.map { (reason: $0.rawValue, count: s.drops[$0]) },
            systemErrors: s.systemErrors, mirror: mirrorCounters)
    }

    private var mirrorCounters: [(name: String, value: UInt64)] {
        guard let c = mirror?.counters else { return [] }
        return [
            ("messages_sent_total", c.messagesSent), ("flows_sent_total", c.flowsSent),
            ("snapshots_sent_total", c.snapshotsSent), ("send_failures_total", c.sendFailures),
            ("connected_peers", c.connectedPeers), ("unknown_peers_total", c.unknownPeers),
            ("refused_connections_total", c.refusedConnections), ("bad_frames_total", c.badFrames),
            ("accepted_total", c.received.accepted),
            ("unauthenticated_total", c.received.unauthenticated), ("malformed_total", c.received.malformed),
            ("replayed_total", c.received.replayed), ("snapshots_installed_total", c.received.snapshotsInstalled),
            ("mirrored_flows", c.mirroredFlows), ("resyncs_total", c.resyncs),
            ("install_rejected_total", flows.rejected),
        ]
    }
}

extension FulcrumServer {
    /// The pair's state for the admin API and `/metrics`; nil without `ha.vrrp`.
    public var haStatus: HAStatus? {
        highAvailability?.status
    }

    /// The VRRP router, when `ha.vrrp` is configured (tests read its status).
    public var vrrpService: VRRPService? { highAvailability?.vrrp }

    /// Tells tracking what the server serves now: pools used by a listener or virtual service, and
    /// listeners that are configured but not bound.
    func updateHATracking(config: FulcrumConfig, pools: [String: Pool], unboundListeners: [String]) {
        guard let highAvailability else { return }
        highAvailability.flows.setPorts(flowMirrors())
        highAvailability.setVIPOwners(
            packetPlane.services.values.compactMap { running in
                guard HighAvailability.ownsVIPInPacketPlane(running.config),
                    highAvailability.vrrpVIPs.contains(running.config.vip)
                else { return nil }
                return running.worker as? any VIPOwningService
            })
        let used = Set(config.listeners.map(\.pool) + config.virtualServices.map(\.pool))
        highAvailability.watch(pools: pools.filter { used.contains($0.key) }, unboundListeners: unboundListeners)
    }

    /// Runs the router until graceful shutdown or cancellation; its stop sends priority 0 and removes the
    /// addresses, which the server's `run` awaits before it drains the listeners.
    nonisolated func runHighAvailability(_ highAvailability: HighAvailability, logger: Logger) async {
        await withDiscardingTaskGroup { parts in
            parts.addTask {
                do {
                    try await highAvailability.vrrp.run()
                } catch {
                    logger.critical(
                        "VRRP stopped on an error: this node no longer takes part in the pair",
                        metadata: ["error": "\(error)"])
                }
            }
            if let mirror = highAvailability.mirror {
                parts.addTask {
                    do {
                        try await mirror.run()
                    } catch {
                        logger.critical("mirroring stopped on an error", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}

/// The mirror's view of the packet plane: every running virtual service's `FlowMirrorPort`, by
/// `vip:port/protocol`. As the source (master) it drains their change feeds and takes their snapshots; as the
/// sink (standby) it hands mirrored flows to the matching service's workers, which install them between
/// batches — so on takeover the new master's workers already hold the entries. Flows of a service this node
/// does not run are dropped (the receiver still keeps them, bounded, until the next snapshot).
final class PacketPlaneFlowMirror: MirrorFlowSource, MirrorFlowSink {
    private struct Ports {
        var byService: [String: FlowMirrorPort] = [:]
        var publishing = false
    }
    private let ports = Mutex(Ports())

    /// The services now running (after each (re)load); a new port publishes if the others do.
    func setPorts(_ list: [(virtualService: String, mirror: FlowMirrorPort)]) {
        ports.withLock { ports in
            ports.byService = Dictionary(list.map { ($0.virtualService, $0.mirror) }, uniquingKeysWith: { $1 })
            for port in ports.byService.values { port.isEnabled = ports.publishing }
        }
    }

    private var current: [String: FlowMirrorPort] { ports.withLock { $0.byService } }

    /// Mirrored flows the workers refused (unknown backend, SNAT port taken, already present).
    var rejected: UInt64 { current.values.reduce(0) { $0 + $1.rejected } }

    func setPublishing(_ on: Bool) {
        ports.withLock { ports in
            ports.publishing = on
            for port in ports.byService.values { port.isEnabled = on }
        }
    }

    func snapshotFlows() -> [MirroredFlow] {
        var out: [MirroredFlow] = []
        for (service, port) in current.sorted(by: { $0.key < $1.key }) {
            // A worker that does not answer (stopping) contributes nothing; its flows end with it.
            for record in port.snapshotFlows() ?? [] { out.append(MirroredFlow(service: service, record: record)) }
        }
        return out
    }

    func drainChanges() -> MirrorFlowChanges {
        var changes = MirrorFlowChanges()
        for (service, port) in current.sorted(by: { $0.key < $1.key }) {
            let drained = port.feed.drain()
            changes.resyncNeeded = changes.resyncNeeded || drained.resyncNeeded
            changes.upserts += drained.added.map { MirroredFlow(service: service, record: $0) }
            changes.removals += drained.removed.map { MirroredFlowRemoval(service: service, key: $0) }
        }
        return changes
    }

    func apply(_ change: MirrorReceiver.Change) {
        let ports = current
        func remove(_ removals: [MirroredFlowRemoval]) {
            for (service, group) in Dictionary(grouping: removals, by: \.service) {
                ports[service]?.removeMirrored(group.map(\.key))
            }
        }
        func install(_ flows: [MirroredFlow]) {
            for (service, group) in Dictionary(grouping: flows, by: \.service) {
                ports[service]?.installMirrored(group.map(\.record))
            }
        }
        switch change {
        case .replaced(let flows, let stale):
            remove(stale)
            install(flows)
        case .updated(let upserts, let removals):
            remove(removals)
            install(upserts)
        case .pending:
            break
        }
    }
}

/// The `dsr` and `tunnel` services whose VIP moves with the VRRP state: `answersARP` follows "this node is master", set on
/// each transition (from the router's thread) and on each (re)load (new workers). It keeps the state the
/// transitions reported, under the same lock as the list, so a reload racing a transition cannot leave a
/// worker with the other state (the router's `status` is updated only after its callback).
final class VIPOwners: Sendable {
    private struct State {
        var services: [any VIPOwningService] = []
        var master = false
    }
    private let state = Mutex(State())

    /// The last reported state: master or not (not before the first transition).
    var isMaster: Bool { state.withLock { $0.master } }

    func setMaster(_ master: Bool) {
        state.withLock { state in
            state.master = master
            for service in state.services { service.answersARP = master }
        }
    }

    func setServices(_ services: [any VIPOwningService]) {
        state.withLock { state in
            state.services = services
            for service in services { service.answersARP = state.master }
        }
    }
}
