import Foundation
import FulcrumCore
import FulcrumPacket
import Testing

/// `nat` mode end to end in network namespaces: a client, the balancer and three HTTP backends on one bridge
/// (docs: ../shared/docs/NETWORK-LAB.md). Needs root; skipped loudly otherwise.
@Suite(.serialized) struct NATEndToEndTests {
    static let isRoot = geteuid() == 0

    @Test(.enabled(if: isRoot, "needs root for network namespaces: NAT end-to-end test SKIPPED"))
    func httpRequestsThroughTheVIPAreSpreadOverTheBackends() throws {
        let lab = NamespaceLab(prefix: "fpk\(getpid() % 100_000)")
        defer { lab.tearDown() }
        try lab.build()
        try lab.configureForNAT()

        let pool = try TestPackets.pool()
        let service = try NATVirtualService(
            settings: NATSettings(
                service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp),
                snatAddress: TestPackets.snat),
            pool: pool, tunName: "fnat0", networkNamespace: "/var/run/netns/\(lab.lb)")
        try service.start()
        defer { service.stop() }
        try lab.ip(["-n", lab.lb, "link", "set", "fnat0", "up"])
        try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.100/32", "dev", "fnat0"])
        try lab.ip(["-n", lab.lb, "route", "add", "10.200.0.200/32", "dev", "fnat0"])
        try lab.startBackends()

        var answers: [String: Int] = [:]
        let requests = 30
        for _ in 0..<requests {
            let out = try lab.run(
                "/usr/sbin/ip",
                ["netns", "exec", lab.client, "curl", "-s", "--max-time", "3", "http://10.200.0.100/id"],
                timeout: 5)
            answers[out.stdout.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += 1
        }
        let stats = service.statistics
        print(
            "nat e2e: answers \(answers.sorted { $0.key < $1.key }), flows \(stats.flows), drops \(stats.drops.nonZero)"
        )
        #expect(answers.values.reduce(0, +) == requests)
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")
        #expect(stats.flows.created == UInt64(requests))
        #expect(stats.forwarding.packetsIn > 0 && stats.forwarding.packetsOut > 0)
    }
}

/// `dsr` mode end to end: the balancer answers ARP for the VIP and rewrites MACs; backends answer the client
/// directly. Needs root; skipped loudly otherwise.
@Suite(.serialized) struct DSREndToEndTests {
    @Test(.enabled(if: NATEndToEndTests.isRoot, "needs root for network namespaces: DSR end-to-end test SKIPPED"))
    func httpRequestsThroughTheVIPAreSpreadOverTheBackends() throws {
        let lab = NamespaceLab(prefix: "fpd\(getpid() % 100_000)")
        defer { lab.tearDown() }
        try lab.build()
        try lab.configureForDSR()
        try lab.startBackends(bindVIP: true)

        let pool = try TestPackets.pool(port: 80)
        let service = try DSRVirtualService(
            service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp), pool: pool,
            interface: "eth0", networkNamespace: "/var/run/netns/\(lab.lb)")
        try service.start()
        defer { service.stop() }

        var answers: [String: Int] = [:]
        let requests = 30
        for _ in 0..<requests {
            let out = try lab.run(
                "/usr/sbin/ip",
                ["netns", "exec", lab.client, "curl", "-s", "--max-time", "3", "http://10.200.0.100/id"],
                timeout: 5)
            answers[out.stdout.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += 1
        }
        let stats = service.statistics
        print("dsr e2e: answers \(answers.sorted { $0.key < $1.key }), flows \(stats.flows), \(stats.forwarding)")
        #expect(answers.values.reduce(0, +) == requests)
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")
        #expect(stats.flows.created == UInt64(requests))
        #expect(stats.forwarding.arpReplies >= 1 && stats.neighbors >= 3)
        // The client learned the VIP at the balancer's MAC (the backends never answered ARP for it).
        let neighbor = try lab.run("/usr/sbin/ip", ["-n", lab.client, "neigh", "show", "10.200.0.100"])
        #expect(neighbor.stdout.contains("02:00:00:00:00:02"), "\(neighbor.stdout)")
    }
}

/// `tunnel` mode end to end, VXLAN (the backends' kernel decapsulates) and IPIP (the backends run
/// `IPIPDecapsulator`, since this kernel has no ipip module). Needs root; skipped loudly otherwise.
@Suite(.serialized) struct TunnelEndToEndTests {
    static let vxlanMAC = "02:00:00:0a:a0:01"

    @Test(
        .enabled(if: NATEndToEndTests.isRoot, "needs root for network namespaces: tunnel end-to-end test SKIPPED"),
        arguments: ["vxlan", "ipip"])
    func httpRequestsThroughTheVIPAreSpreadOverTheBackends(encapsulation: String) throws {
        let lab = NamespaceLab(prefix: "fp\(encapsulation.prefix(1))\(getpid() % 100_000)")
        defer { lab.tearDown() }
        try lab.build()
        try lab.configureForTunnel(vxlanMAC: encapsulation == "vxlan" ? Self.vxlanMAC : nil)
        var decapsulators: [IPIPDecapsulator] = []
        defer { for d in decapsulators { d.stop() } }
        if encapsulation == "ipip" {
            for (name, _, _) in lab.backends {
                let decap = try IPIPDecapsulator(
                    tunName: "tipip", networkNamespace: "/var/run/netns/\(lab.prefix)-\(name)")
                try decap.start()
                decapsulators.append(decap)
                try lab.ip(["-n", "\(lab.prefix)-\(name)", "link", "set", "tipip", "up"])
            }
        }
        try lab.startBackends(bindVIP: true)

        let kind: TunnelSettings.Kind =
            encapsulation == "vxlan"
            ? .vxlan(
                Encapsulation.VXLAN(vni: 42, innerDestinationMAC: MACAddress(Self.vxlanMAC)!, innerSourceMAC: .zero))
            : .ipip
        let settings = TunnelSettings(
            frame: FrameServiceSettings(
                service: VirtualServiceAddress(vip: TestPackets.vip, port: 80, proto: IPProtocolNumber.tcp),
                localMAC: .zero),
            kind: kind, localAddress: TestPackets.lb)
        let pool = try TestPackets.pool(port: 80)
        let service = try TunnelVirtualService(
            settings: settings, pool: pool, interface: "eth0", networkNamespace: "/var/run/netns/\(lab.lb)")
        try service.start()
        defer { service.stop() }

        let requests = 30
        let answers = try lab.requestThroughVIP(requests)
        let stats = service.statistics
        print(
            "\(encapsulation) e2e: answers \(answers.sorted { $0.key < $1.key }), flows \(stats.flows), \(stats.forwarding)"
        )
        #expect(answers.values.reduce(0, +) == requests)
        #expect(Set(answers.keys) == ["be1", "be2", "be3"], "every backend answers: \(answers)")
        #expect(stats.flows.created == UInt64(requests) && stats.sendFailures == 0)
        if encapsulation == "ipip" {
            // Every encapsulated packet was decapsulated by a backend (the last ones may still be in flight: bounded wait).
            let all = waitUntil(seconds: 3) {
                decapsulators.map { $0.statistics.decapsulated }.reduce(0, +)
                    == service.statistics.forwarding.packetsIn
            }
            #expect(all, "decapsulated \(decapsulators.map { $0.statistics }), sent \(service.statistics.forwarding)")
        }
    }
}

/// The bridge topology of NETWORK-LAB.md with unique namespace names; everything it creates is removed by
/// `tearDown`, also after a failure.
final class NamespaceLab: @unchecked Sendable {
    // Used from one test thread only.
    let prefix: String
    var namespaces: [String] = []
    var backendProcesses: [Process] = []
    var tempDirectories: [URL] = []

    var client: String { "\(prefix)-cli" }
    var lb: String { "\(prefix)-lb" }
    var switchNamespace: String { "\(prefix)-sw" }
    let backends = [
        ("be1", "10.200.0.11", "02:00:00:00:00:11"), ("be2", "10.200.0.12", "02:00:00:00:00:12"),
        ("be3", "10.200.0.13", "02:00:00:00:00:13"),
    ]

    init(prefix: String) { self.prefix = prefix }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    @discardableResult
    func run(
        _ executable: String, _ arguments: [String], timeout: Double = 10
    ) throws -> (status: Int32, stdout: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(2_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            throw CommandFailed(description: "timed out: \(executable) \(arguments.joined(separator: " "))")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func ip(_ arguments: [String]) throws {
        let result = try run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw CommandFailed(description: "ip \(arguments.joined(separator: " ")) failed (\(result.status))")
        }
    }

    func sysctl(_ namespace: String, _ setting: String) throws {
        let result = try run("/usr/sbin/ip", ["netns", "exec", namespace, "sysctl", "-qw", setting])
        guard result.status == 0 else { throw CommandFailed(description: "sysctl \(setting) in \(namespace)") }
    }

    func build() throws {
        for name in [switchNamespace, client, lb] + backends.map({ "\(prefix)-\($0.0)" }) {
            try ip(["netns", "add", name])
            namespaces.append(name)
            try ip(["-n", name, "link", "set", "lo", "up"])
        }
        try ip(["-n", switchNamespace, "link", "add", "br0", "type", "bridge"])
        try ip(["-n", switchNamespace, "link", "set", "br0", "up"])
        func attach(_ ns: String, _ port: String, _ address: String, _ mac: String) throws {
            try ip(["-n", switchNamespace, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            try ip(["-n", switchNamespace, "link", "set", port, "master", "br0", "up"])
            try ip(["-n", ns, "link", "set", "eth0", "address", mac])
            try ip(["-n", ns, "addr", "add", "\(address)/24", "dev", "eth0"])
            try ip(["-n", ns, "link", "set", "eth0", "up"])
        }
        try attach(client, "p-cli", "10.200.0.10", "02:00:00:00:00:10")
        try sysctl(lb, "net.ipv4.conf.all.rp_filter=0")
        try sysctl(lb, "net.ipv4.conf.default.rp_filter=0")
        try attach(lb, "p-lb", "10.200.0.2", "02:00:00:00:00:02")
        for (name, address, mac) in backends {
            try attach("\(prefix)-\(name)", "p-\(name)", address, mac)
        }
    }

    /// NAT: the balancer routes; the client reaches the VIP and backends reach the SNAT address through it.
    func configureForNAT() throws {
        try sysctl(lb, "net.ipv4.ip_forward=1")
        for (name, _, _) in backends {
            try ip(["-n", "\(prefix)-\(name)", "route", "add", "10.200.0.200/32", "via", "10.200.0.2"])
        }
        try ip(["-n", client, "route", "add", "10.200.0.100/32", "via", "10.200.0.2"])
    }

    /// DSR: each backend owns the VIP on loopback and never answers ARP for it; the balancer does not route.
    func configureForDSR() throws {
        try sysctl(lb, "net.ipv4.ip_forward=0")
        for (name, _, _) in backends {
            let ns = "\(prefix)-\(name)"
            try ip(["-n", ns, "addr", "add", "10.200.0.100/32", "dev", "lo"])
            for interface in ["all", "eth0"] {
                try sysctl(ns, "net.ipv4.conf.\(interface).arp_ignore=1")
                try sysctl(ns, "net.ipv4.conf.\(interface).arp_announce=2")
            }
        }
    }

    /// One `python3 -m http.server` per backend, serving a file `id` with the backend's name.
    func startBackends(bindVIP: Bool = false) throws {
        for (name, realAddress, _) in backends {
            let address = bindVIP ? "10.200.0.100" : realAddress
            let port = bindVIP ? "80" : "8080"
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(name)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            tempDirectories.append(directory)
            try name.write(to: directory.appendingPathComponent("id"), atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = [
                "netns", "exec", "\(prefix)-\(name)", "/usr/bin/python3", "-m", "http.server", port, "--bind",
                address, "--directory", directory.path,
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            backendProcesses.append(process)
        }
        // Ready when each answers locally (bounded: 10 s per backend).
        for (name, realAddress, _) in backends {
            let url = bindVIP ? "http://10.200.0.100:80/id" : "http://\(realAddress):8080/id"
            let deadline = Date().addingTimeInterval(10)
            var ready = false
            while !ready && Date() < deadline {
                let out = try run(
                    "/usr/sbin/ip",
                    [
                        "netns", "exec", "\(prefix)-\(name)", "curl", "-s", "--max-time", "1",
                        url,
                    ],
                    timeout: 3)
                ready = out.stdout == name
                if !ready { usleep(50_000) }
            }
            guard ready else { throw CommandFailed(description: "backend \(name) did not start") }
        }
    }

    /// Tunnel modes: like DSR (VIP on loopback, no ARP for it), and packets for the VIP arrive on a tunnel
    /// device, so reverse-path filtering must not drop them (their source is routed via eth0).
    func configureForTunnel(vxlanMAC: String?) throws {
        try configureForDSR()
        for (name, address, _) in backends {
            let ns = "\(prefix)-\(name)"
            try sysctl(ns, "net.ipv4.conf.all.rp_filter=0")
            try sysctl(ns, "net.ipv4.conf.default.rp_filter=0")
            if let vxlanMAC {
                try ip([
                    "-n", ns, "link", "add", "vxlan0", "type", "vxlan", "id", "42", "dstport", "4789", "local", address,
                    "dev", "eth0", "nolearning",
                ])
                try ip(["-n", ns, "link", "set", "vxlan0", "address", vxlanMAC])
                try ip(["-n", ns, "link", "set", "vxlan0", "up"])
            }
        }
    }

    /// Sends `requests` HTTP requests from the client to the VIP; counts the answers (backend names).
    func requestThroughVIP(_ requests: Int) throws -> [String: Int] {
        var answers: [String: Int] = [:]
        for _ in 0..<requests {
            let out = try run(
                "/usr/sbin/ip", ["netns", "exec", client, "curl", "-s", "--max-time", "3", "http://10.200.0.100/id"],
                timeout: 5)
            answers[out.stdout.trimmingCharacters(in: .whitespacesAndNewlines), default: 0] += 1
        }
        return answers
    }

    func tearDown() {
        for process in backendProcesses where process.isRunning {
            // SIGKILL by the PID we started: children spawned from a test thread inherit libdispatch's blocked
            // signal mask, so a SIGTERM would stay pending forever.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for name in namespaces.reversed() { _ = try? run("/usr/sbin/ip", ["netns", "del", name]) }
        for directory in tempDirectories { try? FileManager.default.removeItem(at: directory) }
    }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass (bounded; for state another thread publishes).
func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}
