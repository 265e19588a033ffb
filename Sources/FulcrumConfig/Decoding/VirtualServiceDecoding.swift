import FulcrumCore
import Yams

extension VirtualServiceConfig {
    static let keys = [
        "name", "vip", "port", "protocol", "forwarding", "encapsulation", "interface", "pool", "snat", "vxlan",
        "source_address",
    ]

    private struct Identity: Hashable {
        var vip: IPAddress
        var port: UInt16
        var transport: TransportProtocol
    }

    static func decodeAll(
        _ items: [Node], at path: YAMLPath, pools: PoolCatalog, context: DecodingContext
    )
        -> [VirtualServiceConfig]
    {
        var services: [VirtualServiceConfig] = []
        var names = UniquenessTracker<String>()
        var identities = UniquenessTracker<Identity>()
        for (index, item) in items.enumerated() {
            let itemPath = path.index(index)
            guard let map = context.mapping(item, at: itemPath, keys: keys) else { continue }

            let name = map.string("name")
            if let name, let nameNode = map.value("name"), let first = names.claim(name, at: itemPath) {
                context.report(
                    itemPath.key("name"), at: nameNode, "duplicate virtual service name '\(name)' (also \(first))")
            }
            let vip = map.required("vip").flatMap {
                context.ipv4Address($0, at: itemPath.key("vip"), v6Message: "IPv6 VIPs are not supported yet")
            }
            let port = map.requiredInt("port", in: 1...65535).map { UInt16($0) }
            let transport: TransportProtocol? =
                map.value("protocol") == nil ? .tcp : map.choice("protocol", noun: "protocol")
            let forwarding: Forwarding? = map.requiredChoice("forwarding", noun: "forwarding mode")

            var encapsulation: Encapsulation?
            if forwarding == .tunnel {
                encapsulation = map.requiredChoice("encapsulation", noun: "encapsulation")
            } else if forwarding != nil {
                map.reject("encapsulation", "only valid with forwarding tunnel")
            }

            let interface = map.string("interface")
            if let forwarding, forwarding != .nat, interface == nil, map.value("interface") == nil {
                context.report(
                    itemPath.key("interface"), map.node.mark, "required for forwarding \(forwarding.rawValue)")
            }

            let poolName = map.required("pool").flatMap { pools.check($0, at: itemPath.key("pool"), context: context) }

            var snat: SNATConfig?
            if forwarding == .nat {
                if let node = map.required("snat") {
                    snat = SNATConfig.decode(node, at: itemPath.key("snat"), context: context)
                }
            } else if forwarding != nil {
                map.reject("snat", "only valid with forwarding nat")
            }

            var vxlan: VXLANConfig?
            if encapsulation == .vxlan {
                vxlan = VXLANConfig()
                if let node = map.value("vxlan") {
                    vxlan = VXLANConfig.decode(node, at: itemPath.key("vxlan"), context: context)
                }
            } else if forwarding != nil && (forwarding != .tunnel || encapsulation != nil) {
                map.reject("vxlan", "only valid with encapsulation vxlan")
            }

            var sourceAddress: IPAddress?
            if forwarding == .tunnel {
                sourceAddress = map.value("source_address").flatMap {
                    context.ipv4Address(
                        $0, at: itemPath.key("source_address"), v6Message: "the tunnel's outer packets are IPv4")
                }
            } else if forwarding != nil {
                map.reject("source_address", "only valid with forwarding tunnel")
            }

            // DSR and tunnel hand the client's packet over unchanged: the backend sees the VIP's port.
            if let forwarding, forwarding != .nat, let port, let poolName, let pool = pools.pools[poolName],
                let poolNode = map.value("pool"),
                let mismatch = pool.backends.firstIndex(where: { $0.address.port != port })
            {
                context.report(
                    itemPath.key("pool"), at: poolNode,
                    "forwarding \(forwarding.rawValue) cannot change the destination port, so backends must listen "
                        + "on port \(port); pool '\(poolName)' has \(pool.backends[mismatch].address)")
            }

            if let vip, let port, let transport, let vipNode = map.value("vip"),
                let first = identities.claim(Identity(vip: vip, port: port, transport: transport), at: itemPath)
            {
                context.report(
                    itemPath.key("vip"), at: vipNode,
                    "duplicate virtual service \(vip):\(port)/\(transport.rawValue) (also \(first))")
            }

            guard let vip, let port, let transport, let forwarding, let poolName else { continue }
            if forwarding == .tunnel && encapsulation == nil { continue }
            if forwarding == .nat && snat == nil { continue }
            if forwarding != .nat && interface == nil { continue }
            services.append(
                VirtualServiceConfig(
                    name: name, vip: vip, port: port, protocol: transport, forwarding: forwarding,
                    encapsulation: encapsulation, interface: interface, pool: poolName, snat: snat, vxlan: vxlan,
                    sourceAddress: sourceAddress))
        }
        return services
    }
}

extension SNATConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> SNATConfig? {
        guard let map = context.mapping(node, at: path, keys: ["address", "ports"]) else { return nil }
        let address = map.required("address").flatMap {
            context.ipv4Address($0, at: path.key("address"), v6Message: "IPv6 SNAT addresses are not supported yet")
        }
        var ports: ClosedRange<UInt16> = 20000...60000
        if let portsNode = map.value("ports") {
            ports = portRange(portsNode, at: path.key("ports"), context: context) ?? ports
        }
        return address.map { SNATConfig(address: $0, ports: ports) }
    }

    /// `"20000-60000"`, both ends within 1...65535.
    private static func portRange(_ node: Node, at path: YAMLPath, context: DecodingContext) -> ClosedRange<UInt16>? {
        let usage = "expected a port range such as 20000-60000"
        guard case .scalar(let scalar) = node else {
            context.report(path, at: node, "\(usage), found \(node.foundDescription)")
            return nil
        }
        let parts = scalar.string.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, case .value(let low) = parseInteger(String(parts[0])),
            case .value(let high) = parseInteger(String(parts[1]))
        else {
            context.report(path, at: node, "\(usage), found \(node.foundDescription)")
            return nil
        }
        guard (1...65535).contains(low), (1...65535).contains(high) else {
            context.report(path, at: node, "ports must be within 1-65535")
            return nil
        }
        guard low <= high else {
            context.report(path, at: node, "the range must be written low-high, e.g. 20000-60000")
            return nil
        }
        return UInt16(low)...UInt16(high)
    }
}

extension VXLANConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> VXLANConfig? {
        guard let map = context.mapping(node, at: path, keys: ["vni", "port", "inner_mac"]) else { return nil }
        var vxlan = VXLANConfig()
        vxlan.vni = UInt32(map.int("vni", in: 1...16_777_215, default: 42))
        vxlan.port = map.port("port") ?? vxlan.port
        if let macNode = map.value("inner_mac") {
            if let text = context.string(macNode, at: path.key("inner_mac")) {
                if let mac = parseMAC(text) {
                    vxlan.innerMAC = mac
                } else {
                    context.report(
                        path.key("inner_mac"), at: macNode,
                        "expected a unicast MAC address such as 02:00:00:0a:a0:01, found '\(text)'")
                }
            }
        }
        return vxlan
    }

    /// Six hex pairs separated by `:`; the group bit must be clear (the inner frame goes to one device).
    static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        guard bytes[0] & 1 == 0 else { return nil }
        return bytes
    }
}
