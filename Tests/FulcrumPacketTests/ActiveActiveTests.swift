import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 7's active-active tier, end to end in namespaces: a router with a multipath route for the VIP over
/// three balancer namespaces, each running `fulcrum run` as a cluster node that reads one shared configuration
/// (a DSR virtual service, Maglev pool of three backends) from an etcd the test starts on the router. A client
/// behind the router opens many flows; the router's kernel spreads them by 5-tuple
/// (`fib_multipath_hash_policy=1`). Needs root and `etcd` in PATH; skipped loudly otherwise.
@Suite(.serialized) struct ActiveActiveTests {
    static let etcd: URL? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("etcd") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()
    static let canRun = isRoot && etcd != nil

    /// Every flow reaches the backend Maglev picks for its 5-tuple whichever node handles it: the backend seen
    /// through the multipath route equals the one seen through each node alone. Removing one node from the route
    /// keeps long-lived connections of every node intact, including the ones the router moved to another node.
    @Test(.enabled(if: canRun, "needs root and etcd in PATH: active-active ECMP test SKIPPED"))
    func flowsKeepTheirBackendWhicheverNodeHandlesThem() throws {
        let tier = try ActiveActiveTier()
        defer { tier.stop() }
        let lab = tier.lab
        let ports = Array(44000..<44060)

        // Pass 1, over the multipath route: per flow the backend that answered and the node that forwarded it.
        let placed = try tier.placeFlows(ports)
        let perNode = Dictionary(grouping: ports) { placed[$0]?.node ?? "none" }.mapValues(\.count)
        print("active-active: flows per node \(perNode.sorted { $0.key < $1.key })")
        #expect(placed.count == ports.count, "every flow answered by exactly one node: \(placed.count)")
        #expect(Set(perNode.keys) == Set(tier.nodes.map(\.name)), "all three nodes carried flows: \(perNode)")

        // Passes 2–4: the same 5-tuples through each node alone give the same backends (Maglev on every node).
        var mismatches: [String] = []
        for node in tier.nodes {
            try tier.route(via: [node])
            let alone = try lab.requestsFromPorts(ports)
            for port in ports where alone[port] != placed[port]?.backend {
                mismatches.append("\(port): \(placed[port]?.backend ?? "-") vs \(alone[port] ?? "-") via \(node.name)")
            }
        }
        print("active-active: \(ports.count) flows checked through each of 3 nodes, \(mismatches.count) mismatches")
        #expect(mismatches.isEmpty, "\(mismatches)")

        // Long-lived downloads, three per node, opened over the three-way route.
        try tier.route(via: tier.nodes)
        var downloads: [(port: Int, node: String)] = []
        for node in tier.nodes {
            let own = ports.filter { placed[$0]?.node == node.name }.prefix(3)
            try #require(own.count >= 2, "too few flows on \(node.name) for downloads: \(perNode)")
            downloads += own.map { (port: $0, node: node.name) }
        }
        let running = try downloads.map { try lab.startDownload(localPort: $0.port, rate: "1500k") }
        defer { for process in running where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let established = waitUntil(seconds: 5) {
            lab.backends.reduce(0) { $0 + lab.establishedPorts(on: $1.0).count } >= downloads.count
        }
        #expect(established, "every download connected")

        // Remove node 3 from the route while they run.
        let removed = tier.nodes[2]
        try tier.route(via: Array(tier.nodes.prefix(2)))
        let removedPacketsAtRemoval = try tier.counters(of: removed).packetsIn
        let stillRunning = running.filter(\.isRunning).count
        #expect(stillRunning == downloads.count, "the downloads outlive the route change: \(stillRunning)")
        for process in running { process.waitUntilExit() }
        let removedPacketsLater = try tier.counters(of: removed).packetsIn - removedPacketsAtRemoval
        var broken: [String] = []
        for download in downloads {
            let output = lab.downloadOutput(localPort: download.port)
            if !output.hasPrefix(lab.bigFileSHA256) { broken.append("\(download.port) on \(download.node)") }
        }

        // Pass 5, over the two-way route: where every flow goes now (the downloads' 5-tuples included, so this
        // is where their packets went after the removal), and that its backend did not change.
        let replaced = try tier.placeFlows(ports)
        let moved = ports.filter { replaced[$0] != nil && replaced[$0]?.node != placed[$0]?.node }
        let changedBackend = ports.filter { replaced[$0] != nil && replaced[$0]?.backend != placed[$0]?.backend }
        let rerouted = downloads.filter { moved.contains($0.port) }
        print(
            "active-active: removed \(removed.name); \(ports.count) flows checked, \(moved.count) moved node "
                + "(\(perNode[removed.name] ?? 0) were on \(removed.name)), \(changedBackend.count) changed backend; "
                + "\(downloads.count) long-lived downloads, \(rerouted.count) re-routed mid-transfer, "
                + "\(removedPacketsLater) packets reached \(removed.name) after its removal; "
                + "broken flows \(broken.count)")
        // Packets already in flight when the route changed may still arrive; thousands would mean it still carries.
        #expect(removedPacketsLater <= 20, "\(removed.name) still got \(removedPacketsLater) packets")
        #expect(
            rerouted.count >= downloads.filter { $0.node == removed.name }.count,
            "the removed node's downloads continued elsewhere: \(rerouted)")
        #expect(replaced.count == ports.count, "every flow answered after the removal: \(replaced.count)")
        #expect(replaced.values.allSatisfy { $0.node != removed.name }, "nothing goes through \(removed.name)")
        #expect(changedBackend.isEmpty, "re-routed flows keep their backend: \(changedBackend)")
        #expect(broken.isEmpty, "broken long-lived flows: \(broken)")
    }
}

/// The tier: namespaces `sw` (the segment's bridge), `rt` (router, etcd), `cli`, `lb1..3`, `be1..3`.
/// Segment 10.200.0.0/24: router .1, balancers .2–.4, backends .11–.13; client 10.200.1.10 behind the router.
/// Built on `NamespaceLab` for its helpers (commands, backends, client scripts) and its teardown.
final class ActiveActiveTier {
    struct Node {
        let name: String
        let address: String
        let namespace: String
    }

    struct Counters {
        var packetsIn: Int
        var flowsCreated: Int
    }

    let lab: NamespaceLab
    let nodes: [Node]
    private var router: String { "\(lab.prefix)-rt" }
    private var processes: [Process] = []
    private let vip = "10.200.0.100"
    private var etcdURL: String { "http://10.200.0.1:2379" }

    init() throws {
        let serial = RunningMode.labsCreated.add(1, ordering: .relaxed).newValue
        let prefix = "faa\(getpid() % 100_000)x\(serial)"
        lab = NamespaceLab(prefix: prefix)
        nodes = (1...3).map { Node(name: "lb\($0)", address: "10.200.0.\($0 + 1)", namespace: "\(prefix)-lb\($0)") }
        do {
            try setUp()
        } catch {
            for node in nodes { print("\(node.name) log:\n\(log(of: node))") }
            stop()
            throw error
        }
    }

    private var logDirectory: URL { lab.workDirectory }
    private func log(of node: Node) -> String {
        (try? String(contentsOf: logDirectory.appendingPathComponent("\(node.name).log"), encoding: .utf8)) ?? ""
    }

    private func setUp() throws {
        let backendNamespaces = lab.backends.map { "\(lab.prefix)-\($0.0)" }
        for name in [lab.switchNamespace, router, lab.client] + nodes.map(\.namespace) + backendNamespaces {
            try lab.ip(["netns", "add", name])
            lab.namespaces.append(name)
            try lab.ip(["-n", name, "link", "set", "lo", "up"])
        }
        try FileManager.default.createDirectory(at: lab.workDirectory, withIntermediateDirectories: true)
        lab.tempDirectories.append(lab.workDirectory)
        let sw = lab.switchNamespace
        try lab.sysctl(sw, "net.bridge.bridge-nf-call-iptables=0")
        try lab.ip(["-n", sw, "link", "add", "br0", "type", "bridge"])
        try lab.ip(["-n", sw, "link", "set", "br0", "up"])
        func attach(_ ns: String, _ port: String, _ address: String, _ mac: String) throws {
            try lab.ip(["-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            try lab.ip(["-n", sw, "link", "set", port, "master", "br0", "up"])
            try lab.ip(["-n", ns, "link", "set", "eth0", "address", mac])
            try lab.ip(["-n", ns, "addr", "add", "\(address)/24", "dev", "eth0"])
            try lab.ip(["-n", ns, "link", "set", "eth0", "up"])
        }
        // Router: on the segment, and a point-to-point link to the client; it forwards and hashes on 5-tuples.
        try attach(router, "p-rt", "10.200.0.1", "02:00:00:00:00:01")
        try lab.ip(["-n", router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", lab.client])
        try lab.ip(["-n", router, "addr", "add", "10.200.1.1/24", "dev", "eth1"])
        try lab.ip(["-n", router, "link", "set", "eth1", "up"])
        try lab.ip(["-n", lab.client, "addr", "add", "10.200.1.10/24", "dev", "eth0"])
        try lab.ip(["-n", lab.client, "link", "set", "eth0", "up"])
        try lab.ip(["-n", lab.client, "route", "add", "default", "via", "10.200.1.1"])
        for setting in [
            "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1", "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            try lab.sysctl(router, setting)
        }
        // Balancers: DSR (no forwarding, the VIP is not theirs).
        for node in nodes {
            try lab.sysctl(node.namespace, "net.ipv4.ip_forward=0")
            try lab.sysctl(node.namespace, "net.ipv4.conf.all.rp_filter=0")
            let last = node.address.split(separator: ".").last.map(String.init) ?? "0"
            try attach(node.namespace, "p-\(node.name)", node.address, "02:00:00:00:00:0\(last)")
        }
        // Backends: DSR settings of docs/packet-plane.md, and the client's network through the router.
        for ((name, address, mac), ns) in zip(lab.backends, backendNamespaces) {
            try attach(ns, "p-\(name)", address, mac)
            try lab.ip(["-n", ns, "addr", "add", "\(vip)/32", "dev", "lo"])
            for interface in ["all", "eth0"] {
                try lab.sysctl(ns, "net.ipv4.conf.\(interface).arp_ignore=1")
                try lab.sysctl(ns, "net.ipv4.conf.\(interface).arp_announce=2")
            }
            try lab.ip(["-n", ns, "route", "add", "10.200.1.0/24", "via", "10.200.0.1"])
        }
        try lab.startBackends(bindAll: true)

        try startEtcd()
        let seed = lab.workDirectory.appendingPathComponent("seed.yaml")
        try """
        pools:
          web:
            algorithm: maglev
            health_check: { type: http, path: /id, interval: 500ms, timeout: 250ms, rise: 1, fall: 3, jitter: 0 }
            backends: [10.200.0.11:80, 10.200.0.12:80, 10.200.0.13:80]
        virtual_services:
          - { name: web, vip: \(vip), port: 80, pool: web, forwarding: dsr, interface: eth0 }
        """.write(to: seed, atomically: true, encoding: .utf8)
        let seeded = try lab.run(
            "/usr/sbin/ip",
            [
                "netns", "exec", router, RunningServer.binary.path, "cluster", "seed", seed.path, "--endpoints",
                etcdURL, "--prefix", "/ecmp/",
            ], timeout: 15)
        guard seeded.status == 0 else {
            throw NamespaceLab.CommandFailed(description: "fulcrum cluster seed failed: \(seeded.stdout)")
        }
        for node in nodes {
            let file = lab.workDirectory.appendingPathComponent("\(node.name).yaml")
            try """
            admin: { listen: 127.0.0.1:9900 }
            cluster: { store: etcd, endpoints: [\(etcdURL)], prefix: /ecmp/, node_name: \(node.name) }
            """.write(to: file, atomically: true, encoding: .utf8)
            processes.append(
                try spawn(
                    node.namespace, [RunningServer.binary.path, "run", "--config", file.path],
                    log: logDirectory.appendingPathComponent("\(node.name).log")))
        }
        // Ready when every node runs the shared service and sees all three backends up.
        for node in nodes {
            let ready = waitUntil(seconds: 20) {
                guard let pool = try? self.admin(node, "/api/v1/pools/web"),
                    pool.components(separatedBy: "\"state\":\"up\"").count - 1 == 3,
                    let status = try? self.virtualService(node)
                else { return false }
                return status["running"] as? Bool == true
            }
            guard ready else { throw NamespaceLab.CommandFailed(description: "\(node.name) did not become ready") }
        }
        try route(via: nodes)
    }

    private func startEtcd() throws {
        let data = lab.workDirectory.appendingPathComponent("etcd")
        let peer = "http://127.0.0.1:2380"
        processes.append(
            try spawn(
                router,
                [
                    ActiveActiveTests.etcd?.path ?? "etcd", "--name", "ecmp", "--data-dir", data.path,
                    "--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL, "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer, "--initial-cluster", "ecmp=\(peer)",
                    "--initial-cluster-state", "new", "--log-level", "warn",
                ], log: nil))
        let ready = waitUntil(seconds: 15) {
            let out = try? self.lab.run(
                "/usr/sbin/ip",
                ["netns", "exec", self.router, "curl", "-s", "--max-time", "1", "\(self.etcdURL)/health"],
                timeout: 3)
            return out?.stdout.contains("\"health\":\"true\"") == true
        }
        guard ready else { throw NamespaceLab.CommandFailed(description: "etcd did not start in the router") }
    }

    private func spawn(_ namespace: String, _ command: [String], log: URL?) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace] + command
        process.standardOutput = FileHandle.nullDevice
        if let log {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardError = try FileHandle(forWritingTo: log)
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        return process
    }

    /// The router's route for the VIP: a multipath route over `nodes` (one plain route for a single node).
    func route(via nodes: [Node]) throws {
        var arguments = ["-n", router, "route", "replace", "\(vip)/32"]
        if nodes.count == 1 {
            arguments += ["via", nodes[0].address]
        } else {
            for node in nodes { arguments += ["nexthop", "via", node.address] }
        }
        try lab.ip(arguments)
    }

    func admin(_ node: Node, _ path: String) throws -> String {
        try lab.run(
            "/usr/sbin/ip",
            ["netns", "exec", node.namespace, "curl", "-s", "--max-time", "3", "http://127.0.0.1:9900\(path)"],
            timeout: 5
        ).stdout
    }

    func virtualService(_ node: Node) throws -> [String: Any] {
        let body = try admin(node, "/api/v1/virtual_services")
        let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        let list = json?["virtual_services"] as? [[String: Any]] ?? []
        guard list.count == 1 else { throw NamespaceLab.CommandFailed(description: "\(node.name): \(body)") }
        return list[0]
    }

    func counters(of node: Node) throws -> Counters {
        let status = try virtualService(node)
        return Counters(
            packetsIn: status["packets_in"] as? Int ?? -1, flowsCreated: status["flows_created"] as? Int ?? -1)
    }

    /// One request per port, one at a time; the node that forwarded it is the one whose `packets_in` grew.
    /// A port whose request failed, or that more or fewer than one node forwarded, is left out.
    func placeFlows(_ ports: [Int]) throws -> [Int: (node: String, backend: String)] {
        var placed: [Int: (node: String, backend: String)] = [:]
        var before = try nodes.map { try counters(of: $0).packetsIn }
        for port in ports {
            let answer = try lab.requestsFromPorts([port])[port]
            let after = try nodes.map { try counters(of: $0).packetsIn }
            // A request is at least 4 packets client to backend; a straggling RST of the last one is 1.
            let carriers = nodes.indices.filter { after[$0] - before[$0] >= 3 }
            before = after
            if let answer, !answer.isEmpty, carriers.count == 1 { placed[port] = (nodes[carriers[0]].name, answer) }
        }
        return placed
    }

    func stop() {
        // SIGKILL by the PIDs we started (children of a test thread have signals blocked; see NamespaceLab).
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        lab.tearDown()
    }
}
