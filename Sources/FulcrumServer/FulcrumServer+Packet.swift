import FulcrumAdmin
import FulcrumConfig
import FulcrumCore
import FulcrumPacket
import Logging

/// The packet plane inside the server: one worker per `virtual_services:` entry, forwarding to the same
/// `Pool` objects the proxy uses (same health checks, same selector, snapshots read once per batch), so a
/// pool change made by a reload, the admin API or a health check reaches the workers without a restart.
/// A changed virtual service definition (anything but its pool's contents) restarts that one worker.
///
/// Owned by the `FulcrumServer` actor (only touched from it). Workers are OS threads; stopping one joins it
/// (at most one poll interval, 100 ms).
final class PacketPlane {
    struct Running {
        var config: VirtualServiceConfig
        var pool: Pool
        /// Nil when the worker could not start on a reload (logged; the next reload tries again).
        var worker: (any VirtualServiceWorker)?
    }

    /// By `vip:port/protocol`, which is unique in a valid config.
    private(set) var services: [String: Running] = [:]
    /// Config order, for stable listings.
    private var order: [String] = []

    static func key(_ config: VirtualServiceConfig) -> String {
        "\(config.vip):\(config.port)/\(config.protocol.rawValue)"
    }

    /// Starts, restarts and stops workers so that they match `config`. On the first apply a worker that cannot
    /// start is an error (the server does not start); on a reload it is logged and the service stays down.
    /// `answersARP` says whether a new `dsr` or `tunnel` worker starts owning its VIP (false on an HA standby for
    /// a VRRP VIP).
    func apply(
        _ config: FulcrumConfig, pools: [String: Pool], initial: Bool, logger: Logger,
        answersARP: (VirtualServiceConfig) -> Bool = { _ in true }
    ) throws {
        let wanted = Dictionary(config.virtualServices.map { (Self.key($0), $0) }) { first, _ in first }
        for (key, running) in services where wanted[key] == nil {
            running.worker?.stop()
            services[key] = nil
            logger.info("virtual service stopped", metadata: ["virtual_service": .string(key)])
        }
        var natIndex = 0
        // TAP names of tunnel workers that keep running through this apply: a (re)started one takes a free name.
        var tapNamesInUse = Set(
            services.compactMap { key, running -> String? in
                guard wanted[key] == running.config, pools[running.config.pool] === running.pool else { return nil }
                return (running.worker as? TunnelVirtualService)?.device?.name
            })
        for vs in config.virtualServices {
            let key = Self.key(vs)
            // A NAT service without `interface` gets the next free default TUN name (fnat0, fnat1, ...).
            var tunName = vs.forwarding == .nat ? (vs.interface ?? "fnat\(natIndex)") : nil
            if vs.forwarding == .nat && vs.interface == nil { natIndex += 1 }
            guard let pool = pools[vs.pool] else { continue }
            if let existing = services[key], existing.config == vs, existing.pool === pool,
                existing.worker != nil
            {
                continue
            }
            if vs.forwarding == .tunnel {
                // A tunnel's TAP device for its whole frames: the lowest free of fvx0, fvx1, ... (VXLAN) or
                // fip0, fip1, ... (IPIP).
                let prefix = vs.encapsulation == .vxlan ? "fvx" : "fip"
                let name = (0...).lazy.map { "\(prefix)\($0)" }.first { !tapNamesInUse.contains($0) } ?? "\(prefix)0"
                tapNamesInUse.insert(name)
                tunName = name
            }
            // Stopped and released first: a NAT restart reopens the same TUN name, which the old fd still holds.
            services[key]?.worker?.stop()
            services[key] = nil
            if pool.settings.algorithm != .maglev {
                logger.warning(
                    """
                    virtual service pool does not use maglev: flows are pinned, but another balancer node (or this \
                    one after a restart) may pick a different backend for the same flow
                    """,
                    metadata: ["virtual_service": .string(key), "pool": .string(vs.pool)])
            }
            do {
                let worker = try Self.makeWorker(vs, pool: pool, tunName: tunName, answersARP: answersARP(vs))
                try worker.start()
                services[key] = Running(config: vs, pool: pool, worker: worker)
                var device = tunName ?? vs.interface ?? ""
                if let tunnel = worker as? TunnelVirtualService, let reason = tunnel.fallbackReason {
                    logger.warning(
                        "tunnel super-frames are split in software (about 10x slower in bulk): \(reason)",
                        metadata: ["virtual_service": .string(key), "forwarding": .string(Self.modeName(vs))])
                }
                if let tunnel = worker as? TunnelVirtualService {
                    // Which output the tunnel got: whole GSO frames into the TAP, or the software split.
                    device =
                        tunnel.device.map {
                            let how = tunnel.encapsulationProgram == nil ? "tunnel GSO" : "IPIP GSO, tcx program"
                            return "\(vs.interface ?? "") -> \($0.name) (\(how))"
                        }
                        ?? "\(vs.interface ?? "") -> raw socket (software segmentation)"
                }
                logger.info(
                    "virtual service running",
                    metadata: [
                        "virtual_service": .string(key), "forwarding": .string(Self.modeName(vs)),
                        "pool": .string(vs.pool), "device": .string(device),
                    ])
            } catch {
                if initial {
                    stopAll()
                    throw error
                }
                services[key] = Running(config: vs, pool: pool, worker: nil)
                logger.error(
                    "virtual service could not start", metadata: ["virtual_service": .string(key), "error": "\(error)"])
            }
        }
        order = config.virtualServices.map(Self.key)
    }

    func stopAll() {
        for running in services.values { running.worker?.stop() }
        services = [:]
        order = []
    }

    static func modeName(_ vs: VirtualServiceConfig) -> String {
        switch vs.forwarding {
        case .nat: return "nat"
        case .dsr: return "dsr"
        case .tunnel: return "tunnel-\(vs.encapsulation?.rawValue ?? "?")"
        }
    }

    /// Builds (opens the device or sockets of) the worker for one virtual service.
    static func makeWorker(
        _ vs: VirtualServiceConfig, pool: Pool, tunName: String?, answersARP: Bool = true
    ) throws -> any VirtualServiceWorker {
        guard case .v4(let vip) = vs.vip else { throw PacketPlaneError("\(vs.vip): IPv4 only") }
        let proto = vs.protocol == .udp ? IPProtocolNumber.udp : IPProtocolNumber.tcp
        let service = VirtualServiceAddress(vip: vip, port: vs.port, proto: proto)
        switch vs.forwarding {
        case .nat:
            guard let snat = vs.snat, case .v4(let snatAddress) = snat.address else {
                throw PacketPlaneError("\(service): nat needs an IPv4 snat address")
            }
            return try NATVirtualService(
                settings: NATSettings(service: service, snatAddress: snatAddress, snatPorts: snat.ports), pool: pool,
                tunName: tunName ?? "fnat0", setUp: true)
        case .dsr:
            guard let interface = vs.interface else { throw PacketPlaneError("\(service): dsr needs an interface") }
            return try DSRVirtualService(service: service, pool: pool, interface: interface, answersARP: answersARP)
        case .tunnel:
            guard let interface = vs.interface else { throw PacketPlaneError("\(service): tunnel needs an interface") }
            let source: UInt32
            if case .v4(let configured) = vs.sourceAddress {
                source = configured
            } else if let found = InterfaceAddress.firstIPv4(of: interface) {
                source = found
            } else {
                throw PacketPlaneError(
                    "\(service): interface \(interface) has no IPv4 address for the tunnel's outer packets "
                        + "(set source_address)")
            }
            let kind: TunnelSettings.Kind
            switch vs.encapsulation {
            case .vxlan:
                let vxlan = vs.vxlan ?? VXLANConfig()
                let mac = vxlan.innerMAC.count == 6 ? vxlan.innerMAC : VXLANConfig.defaultInnerMAC
                kind = .vxlan(
                    Encapsulation.VXLAN(
                        vni: vxlan.vni, destinationPort: vxlan.port,
                        innerDestinationMAC: MACAddress(mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]),
                        innerSourceMAC: .zero))
            case .ipip, nil:
                kind = .ipip
            }
            return try TunnelVirtualService(
                settings: TunnelSettings(
                    frame: FrameServiceSettings(service: service, localMAC: .zero), kind: kind, localAddress: source),
                pool: pool, interface: interface, deviceName: tunName, answersARP: answersARP)
        }
    }

    /// What the admin API and `/metrics` show.
    var statuses: [VirtualServiceStatus] {
        order.compactMap { key in
            guard let running = services[key] else { return nil }
            let vs = running.config
            var status = VirtualServiceStatus(
                name: vs.name ?? key, vip: "\(vs.vip)", port: Int(vs.port), transport: vs.protocol.rawValue,
                forwarding: Self.modeName(vs), pool: vs.pool, running: running.worker != nil)
            if let counters = running.worker?.counters {
                status.packetsIn = counters.forwarding.packetsIn
                status.bytesIn = counters.forwarding.bytesIn
                status.packetsOut = counters.forwarding.packetsOut
                status.bytesOut = counters.forwarding.bytesOut
                for reason in DropReason.allCases where counters.drops[reason] > 0 {
                    status.drops[reason.description] = counters.drops[reason]
                }
                status.flowsActive = counters.activeFlows
                status.flowsCreated = counters.flows.created
                status.flowsExpired = counters.flows.expired
                status.flowsEvicted = counters.flows.evicted
                status.sendFailures = counters.sendFailures
            }
            return status
        }
    }
}

/// A virtual service that cannot be built from its config.
struct PacketPlaneError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension FulcrumServer {
    /// Every virtual service with its counters (admin API, `/metrics`).
    public func virtualServices() -> [VirtualServiceStatus] {
        packetPlane.statuses
    }

    /// The worker of a running virtual service (tests).
    public func virtualServiceWorker(
        vip: IPAddress, port: UInt16, protocol: VirtualServiceConfig.TransportProtocol
    )
        -> (any VirtualServiceWorker)?
    {
        packetPlane.services["\(vip):\(port)/\(`protocol`.rawValue)"]?.worker
    }
}

extension FulcrumServer {
    /// The HA mirroring port of every running virtual service, by `vip:port/protocol` (the same key on both
    /// nodes of a pair): the mirror channel drains the active node's feeds and installs on the standby's.
    public func flowMirrors() -> [(virtualService: String, mirror: FlowMirrorPort)] {
        packetPlane.services.sorted { $0.key < $1.key }.compactMap { key, running in
            running.worker.map { (key, $0.mirror) }
        }
    }
}
