import FulcrumCore
import Yams

extension HAConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> HAConfig? {
        guard let map = context.mapping(node, at: path, keys: ["vrrp", "mirror"]) else { return nil }
        var ha = HAConfig()
        if let vrrp = map.value("vrrp") {
            ha.vrrp = VRRPConfig.decode(vrrp, at: path.key("vrrp"), context: context)
        }
        if let mirror = map.value("mirror") {
            ha.mirror = MirrorConfig.decode(mirror, at: path.key("mirror"), context: context)
        }
        return ha
    }
}

extension VRRPConfig {
    static let keys = [
        "interface", "virtual_router_id", "priority", "advert_interval", "vips", "preempt", "preempt_delay",
        "unicast_peers", "track_weight", "notify",
    ]

    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> VRRPConfig? {
        guard let map = context.mapping(node, at: path, keys: keys) else { return nil }
        let interface = map.requiredString("interface")
        let routerId = map.requiredInt("virtual_router_id", in: 1...255)
        let priority = map.int("priority", in: 1...255, default: 100)

        var advertInterval = Duration.seconds(1)
        if let advertNode = map.value("advert_interval"),
            let value = context.duration(
                advertNode, at: path.key("advert_interval"), minimum: .milliseconds(10),
                maximum: .milliseconds(40_950))
        {
            if value.components.attoseconds % 10_000_000_000_000_000 != 0 {
                context.report(
                    path.key("advert_interval"), at: advertNode,
                    "must be a multiple of 10ms (VRRPv3 counts centiseconds)")
            } else {
                advertInterval = value
            }
        }

        var vips: [CIDR] = []
        if let vipsNode = map.required("vips"), let items = context.list(vipsNode, at: path.key("vips")) {
            if items.isEmpty {
                context.report(path.key("vips"), at: vipsNode, "must list at least one address")
            }
            for (index, item) in items.enumerated() {
                let itemPath = path.key("vips").index(index)
                guard let text = context.string(item, at: itemPath) else { continue }
                guard let cidr = CIDR(text.trimmingSpaces) else {
                    context.report(
                        itemPath, at: item,
                        "'\(text.shortenedForMessage)' is not an address or CIDR (e.g. 192.0.2.10/24)")
                    continue
                }
                guard cidr.address.isIPv4 else {
                    context.report(itemPath, at: item, "IPv6 VIPs are not supported yet")
                    continue
                }
                vips.append(cidr)
            }
        }

        let preempt = map.bool("preempt", default: true)
        let preemptDelay = map.duration("preempt_delay", default: .zero, maximum: .seconds(3600))
        var peers: [IPAddress] = []
        for (index, item) in (map.list("unicast_peers") ?? []).enumerated() {
            let v6Message = "IPv6 peers are not supported yet (VRRP runs over IPv4)"
            if let peer = context.ipv4Address(item, at: path.key("unicast_peers").index(index), v6Message: v6Message) {
                peers.append(peer)
            }
        }
        let trackWeight = map.int("track_weight", in: 0...254, default: 50)
        let notify = map.string("notify")

        guard let interface, let routerId, !vips.isEmpty else { return nil }
        return VRRPConfig(
            interface: interface, virtualRouterId: routerId, priority: priority, advertInterval: advertInterval,
            vips: vips, preempt: preempt, preemptDelay: preemptDelay, unicastPeers: peers, trackWeight: trackWeight,
            notify: notify)
    }
}

extension MirrorConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> MirrorConfig? {
        guard let map = context.mapping(node, at: path, keys: ["listen", "peers", "key_file"]) else { return nil }
        let listen = map.requiredEndpoint("listen", allowPortZero: true)
        var peers: [Endpoint] = []
        if let peersNode = map.required("peers"), let items = context.list(peersNode, at: path.key("peers")) {
            if items.isEmpty {
                context.report(path.key("peers"), at: peersNode, "must list at least one peer")
            }
            for (index, item) in items.enumerated() {
                if let peer = context.endpoint(item, at: path.key("peers").index(index)) {
                    peers.append(peer)
                }
            }
        }
        let keyFile = map.requiredString("key_file")
        guard let listen, !peers.isEmpty, let keyFile else { return nil }
        return MirrorConfig(listen: listen, peers: peers, keyFile: keyFile)
    }
}

extension ClusterConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> ClusterConfig? {
        guard let map = context.mapping(node, at: path, keys: ["store", "endpoints", "prefix", "node_name"]) else {
            return nil
        }
        var cluster = ClusterConfig()
        let store: Store? = map.value("store") == nil ? .file : map.choice("store", noun: "store")
        cluster.store = store ?? .file
        if store == .file {
            map.reject("endpoints", "only used by store etcd")
        } else if store == .etcd, let endpointsNode = map.required("endpoints"),
            let items = context.list(endpointsNode, at: path.key("endpoints"))
        {
            if items.isEmpty {
                context.report(path.key("endpoints"), at: endpointsNode, "must list at least one etcd endpoint")
            }
            for (index, item) in items.enumerated() {
                let itemPath = path.key("endpoints").index(index)
                guard let url = context.string(item, at: itemPath) else { continue }
                if url.hasPrefix("http://") && url.count > "http://".count {
                    cluster.endpoints.append(url)
                } else {
                    context.report(
                        itemPath, at: item, "must start with http:// (e.g. http://127.0.0.1:2379)")
                }
            }
        }
        if let prefixNode = map.value("prefix"), let prefix = context.string(prefixNode, at: path.key("prefix")) {
            if prefix.hasPrefix("/") && prefix.hasSuffix("/") {
                cluster.prefix = prefix
            } else {
                context.report(path.key("prefix"), at: prefixNode, "must start and end with '/' (e.g. /fulcrum/)")
            }
        }
        cluster.nodeName = map.string("node_name")
        return cluster
    }
}

extension AdminConfig {
    static func decode(_ node: Node, at path: YAMLPath, context: DecodingContext) -> AdminConfig? {
        if node.isNullScalar { return AdminConfig() }
        guard let map = context.mapping(node, at: path, keys: ["listen", "token_file", "state_file"]) else {
            return nil
        }
        var admin = AdminConfig()
        admin.listen = map.endpoint("listen", allowPortZero: true) ?? admin.listen
        admin.tokenFile = map.string("token_file")
        admin.stateFile = map.string("state_file")
        if !admin.listen.address.isLoopback && admin.tokenFile == nil, let listenNode = map.value("listen") {
            context.report(
                path.key("listen"), at: listenNode,
                "a non-loopback address requires token_file (anyone who can reach it could change pools)")
        }
        return admin
    }
}

extension IPAddress {
    /// 127.0.0.0/8 or ::1.
    var isLoopback: Bool {
        switch self {
        case .v4(let address): return address >> 24 == 127
        case .v6(let high, let low): return high == 0 && low == 1
        }
    }
}
