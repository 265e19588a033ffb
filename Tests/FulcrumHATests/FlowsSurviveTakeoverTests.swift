import Foundation
import FulcrumTestSupport
import Glibc
import Testing

/// Issue 6 point 5, "flows survive takeover": two `fulcrum run` processes (VRRP + mirror) with a `dsr` virtual
/// service; a client runs long downloads through it; the master is crashed (SIGKILL + link down) mid-transfer
/// and the downloads must complete byte-identical through the new master.
///
/// Topology (HA `NamespaceLab`, one bridge): lb0 10.201.0.2 (priority 200), lb1 10.201.0.3, backends .4–.6,
/// client .7. The VRRP VIP 10.201.0.100 is the *gateway* of the DSR VIP 10.201.0.200 (the client routes
/// 10.201.0.200/32 via it): a DSR host must not own its VIP, and both nodes' DSR workers answer ARP for a DSR
/// VIP that is not a VRRP VIP, so it is reached through the VRRP address that only the master holds (the VIP
/// owned in the packet plane is `DSRVIPOwnershipTests`; see docs/ha.md).
/// The pool is round-robin, so a node without the mirrored flows would send a flow's next packets to
/// another backend (which resets it): the test fails without the mirror (checked by hand with a different key
/// on lb1, so nothing was mirrored: 15/20 byte-identical, 2026-12-01).
@Suite("Flows survive a takeover (root, namespaces)", .serialized)
struct FlowsSurviveTakeoverTests {
    static var binary: URL { Bundle.main.bundleURL.appendingPathComponent("fulcrum") }
    static let gateway = "10.201.0.100"
    static let dsrVIP = "10.201.0.200"
    static let downloads = 20
    static let fileBytes = 8 << 20

    static let snatAddress = "10.201.0.210"

    static func config(lab: NamespaceLab, node: Int, keyFile: String, mode: String) -> String {
        let forwarding =
            mode == "nat"
            ? "forwarding: nat, interface: fnat0, snat: { address: \(snatAddress) }"
            : "forwarding: dsr, interface: eth0"
        return """
            admin: { listen: 127.0.0.1:9900 }
            pools:
              web: { algorithm: round-robin, backends: [\(lab.address(2)):80, \(lab.address(3)):80, \(lab.address(4)):80] }
            virtual_services:
              - { name: web, vip: \(dsrVIP), port: 80, pool: web, \(forwarding) }
            ha:
              vrrp:
                interface: eth0
                virtual_router_id: 52
                priority: \(node == 0 ? 200 : 100)
                advert_interval: 100ms
                vips: [\(gateway)/24]
                preempt: false
              mirror: { listen: \(lab.address(node)):7946, peers: [\(lab.address(1 - node)):7946], key_file: \(keyFile) }
            """
    }

    static func spawn(_ arguments: [String], log: URL?) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
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

    static func status(lab: NamespaceLab, node: Int, _ path: String) async throws -> [String: Any]? {
        let (code, output) = try await command([
            "ip", "netns", "exec", lab.nodes[node], "curl", "-s", "--max-time", "1", "http://127.0.0.1:9900\(path)",
        ])
        guard code == 0, let data = output.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    @Test(
        "dsr: downloads through the pair complete byte-identical after the master crashes",
        .enabled(if: canRunLab, "needs root, iproute2, curl and python3: SKIPPED LOUDLY"))
    func dsr() async throws { try await survive(mode: "dsr") }

    @Test(
        "nat: downloads through the pair complete byte-identical after the master crashes",
        .enabled(if: canRunLab, "needs root, iproute2, curl and python3: SKIPPED LOUDLY"))
    func nat() async throws { try await survive(mode: "nat") }

    static var canRunLab: Bool {
        isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")
    }

    private func survive(mode: String) async throws {
        try await NamespaceLab.withPairLab(
            tag: mode == "nat" ? "fn" : "fs", nodeCount: 6, directoryName: "fulcrum-ha-flows-\(mode)"
        ) {
            lab, directory, started in
            try await exercise(lab: lab, directory: directory, mode: mode, started: started)
        }
    }

    private func exercise(lab: NamespaceLab, directory: URL, mode: String, started: (Process) -> Void) async throws {
        // Balancers: no forwarding by the kernel for DSR, forwarding into and out of the TUN device for NAT;
        // no reverse-path filter.
        for node in 0...1 {
            for setting in ["net.ipv4.ip_forward=\(mode == "nat" ? 1 : 0)", "net.ipv4.conf.all.rp_filter=0"] {
                try await lab.run("ip", "netns", "exec", lab.nodes[node], "sysctl", "-qw", setting)
            }
        }
        // Backends: the DSR VIP on loopback, never answered in ARP; a server on 0.0.0.0:80.
        let file = directory.appendingPathComponent("big")
        try await lab.run("sh", "-c", "head -c \(Self.fileBytes) /dev/urandom > \(file.path)")
        let (_, digestLine) = try await command(["sha256sum", file.path])
        let digest = String(digestLine.prefix(64))
        for node in 2...4 {
            let ns = lab.nodes[node]
            if mode == "nat" {
                // NAT: replies to the SNAT address go to whichever node holds the VRRP address.
                try await lab.run("ip", "-n", ns, "route", "add", "\(Self.snatAddress)/32", "via", Self.gateway)
            }
            if mode == "dsr" { try await lab.run("ip", "-n", ns, "addr", "add", "\(Self.dsrVIP)/32", "dev", "lo") }
            for interface in ["all", "eth0"] where mode == "dsr" {
                try await lab.run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.\(interface).arp_ignore=1")
                try await lab.run(
                    "ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.\(interface).arp_announce=2")
            }
            started(
                try Self.spawn(
                    [
                        "netns", "exec", ns, "/usr/bin/python3", "-m", "http.server", "80", "--bind", "0.0.0.0",
                        "--directory", directory.path,
                    ], log: nil))
        }
        // The client reaches the DSR VIP through the VRRP address. Its receive buffer is small, so a backend
        // cannot push the whole file into it ahead of curl's rate limit: the transfers really span the crash.
        try await lab.run("ip", "-n", lab.nodes[5], "route", "add", "\(Self.dsrVIP)/32", "via", Self.gateway)
        try await lab.run(
            "ip", "netns", "exec", lab.nodes[5], "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 131072")

        let keyFile = directory.appendingPathComponent("mirror.key")
        try "a-shared-key-for-the-flow-test-0123456789".write(to: keyFile, atomically: true, encoding: .utf8)
        var balancers: [Process] = []
        for node in 0...1 {
            let configFile = directory.appendingPathComponent("lb\(node).yaml")
            try Self.config(lab: lab, node: node, keyFile: keyFile.path, mode: mode).write(
                to: configFile, atomically: true, encoding: .utf8)
            let process = try Self.spawn(
                ["netns", "exec", lab.nodes[node], Self.binary.path, "run", "--config", configFile.path],
                log: directory.appendingPathComponent("lb\(node).log"))
            started(process)
            balancers.append(process)
            // lb0 first, until it is master: without preemption a late-starting lb0 would stay backup.
            if node == 0 {
                #expect(try await eventually(within: .seconds(15)) { try await lab.holds(0, Self.gateway) })
            }
        }
        if mode == "nat" {
            // Both nodes route the VIP and the SNAT address into their TUN device (it exists once fulcrum runs).
            for node in 0...1 {
                #expect(
                    try await eventually(within: .seconds(15)) {
                        try await command(["ip", "-n", lab.nodes[node], "link", "show", "fnat0"]).status == 0
                    })
                for address in [Self.dsrVIP, Self.snatAddress] {
                    try await lab.run("ip", "-n", lab.nodes[node], "route", "add", "\(address)/32", "dev", "fnat0")
                }
            }
        }
        #expect(try await eventually(within: .seconds(15)) { try await lab.holds(0, Self.gateway) })
        #expect(
            try await eventually(within: .seconds(10)) {
                let mirror = try await Self.status(lab: lab, node: 1, "/api/v1/ha")?["mirror"] as? [String: Any]
                return mirror?["snapshots_installed_total"] as? Int ?? 0 >= 1
            })
        for node in 2...4 {
            #expect(
                try await eventually(within: .seconds(10)) {
                    let (_, out) = try await command([
                        "ip", "netns", "exec", lab.nodes[node], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "--max-time", "1", "http://\(lab.address(node)):80/big",
                    ])
                    return out == "200"
                })
        }

        // N downloads, rate-limited so that each lasts about 8 s.
        var clients: [Process] = []
        for i in 0..<Self.downloads {
            let process = try Self.spawn(
                [
                    "netns", "exec", lab.nodes[5], "sh", "-c",
                    "curl -s --max-time 60 --limit-rate 1M http://\(Self.dsrVIP)/big | sha256sum > "
                        + directory.appendingPathComponent("download-\(i)").path,
                ], log: nil)
            started(process)
            clients.append(process)
        }
        // Every download's flow is mirrored to the standby before the crash.
        let mirrored = try await eventually(within: .seconds(3)) {
            let mirror = try await Self.status(lab: lab, node: 1, "/api/v1/ha")?["mirror"] as? [String: Any]
            return mirror?["mirrored_flows"] as? Int ?? 0 >= Self.downloads
        }
        #expect(mirrored, "the standby holds every download's flow")
        try await Task.sleep(for: .seconds(1))  // mid-transfer: the downloads run ≈ 8 s; not a wait for state

        kill(balancers[0].processIdentifier, SIGKILL)
        try await lab.setLink(0, up: false)
        #expect(try await eventually(within: .seconds(5)) { try await lab.holds(1, Self.gateway) })

        for client in clients { _ = try await offCooperativePool { client.waitUntilExit() } }
        var identical = 0
        for i in 0..<Self.downloads {
            let out =
                (try? String(contentsOf: directory.appendingPathComponent("download-\(i)"), encoding: .utf8)) ?? ""
            if out.hasPrefix(digest) { identical += 1 }
        }
        let share = Double(identical) / Double(Self.downloads) * 100
        print(
            "Flows survive takeover (\(mode), round-robin pool, SIGKILL + link down): \(identical)/\(Self.downloads) "
                + "downloads byte-identical (\(String(format: "%.1f", share)) %)")
        #expect(share >= 99)
    }
}
